/**
 * A small JSON-over-HTTP client on node:http (registration, facts pushes, agent-to-agent
 * migration). Not fetch: undici costs several MB per process, and a fleet process runs
 * thousands of agents that each talk rarely. No keep-alive: these calls are infrequent.
 */
import http from 'node:http';
import https from 'node:https';

export interface HttpAnswer {
  status: number;
  /** Parsed JSON, or undefined when the body was not JSON. */
  body: unknown;
  text: string;
}

export const MAX_ANSWER_BYTES = 1024 * 1024;

/** The text of a network error: `ECONNREFUSED`, `timed out after 30000 ms`, ... */
export class NetworkError extends Error {}

export function postJson(url: string, payload: string, headers: Record<string, string>, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return reject(new NetworkError(`bad URL ${url}`));
    }
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      u,
      {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER_BYTES) req.destroy(new NetworkError(`answer larger than ${MAX_ANSWER_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body, text });
        });
        res.on('error', (err) => reject(new NetworkError(err.message)));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new NetworkError(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof NetworkError ? err : new NetworkError(err.code ?? err.message)));
    req.end(payload);
  });
}

/** `error` of an agent/controller answer, or its status line. */
export function answerError(a: HttpAnswer): string {
  const b = a.body as { error?: unknown } | undefined;
  if (b && typeof b.error === 'string' && b.error) return b.error;
  if (b && typeof b.error === 'object' && b.error) {
    const e = b.error as { description?: unknown; details?: unknown };
    return [e.description, e.details].filter((x) => typeof x === 'string' && x).join(': ') || JSON.stringify(b.error);
  }
  return a.text.slice(0, 200) || `HTTP ${a.status}`;
}

/** `base` + `path` with one slash between. */
export function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, '') + path;
}
