/**
 * A small JSON-over-HTTP(S) client on node:http/https (registration, certificate requests,
 * facts pushes, agent-to-agent migration). Not fetch: undici costs several MB per process,
 * and a fleet process runs thousands of agents that each talk rarely. No keep-alive: these
 * calls are infrequent. `tls` applies to https URLs (agent/tls.ts builds it).
 */
import http from 'node:http';
import https from 'node:https';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body as received (answer signatures are over these bytes). */
  raw: Buffer;
  /** Parsed JSON, or undefined when the body was not JSON. */
  body: unknown;
  text: string;
}

export const MAX_ANSWER_BYTES = 1024 * 1024;

/** The text of a network error: `ECONNREFUSED`, `timed out after 30000 ms`, ... */
export class NetworkError extends Error {}

/** TLS settings of a call: trusted CAs, our client certificate, who the server must be. */
export interface ClientTls {
  ca?: string;
  key?: string;
  cert?: string;
  /** False only in the provisional phase (agent/tls.ts says why that is safe). */
  rejectUnauthorized?: boolean;
  checkServerIdentity?: (host: string, cert: import('node:tls').PeerCertificate) => Error | undefined;
}

export function postJson(url: string, payload: string, headers: Record<string, string>, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  return request('POST', url, payload, headers, timeoutMs, tls);
}

export function getJson(url: string, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  return request('GET', url, undefined, {}, timeoutMs, tls);
}

function request(method: string, url: string, payload: string | undefined, headers: Record<string, string>, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return reject(new NetworkError(`bad URL ${url}`));
    }
    const secure = u.protocol === 'https:';
    const mod = secure ? https : http;
    const req = mod.request(
      u,
      {
        method,
        agent: false,
        headers: payload === undefined ? headers : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)), ...headers },
        ...(secure ? { rejectUnauthorized: true, ...tls } : {}),
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
          const raw = Buffer.concat(chunks);
          const text = raw.toString('utf8');
          let body: unknown;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, body, text });
        });
        res.on('error', (err) => reject(new NetworkError(err.message)));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new NetworkError(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof NetworkError ? err : new NetworkError(tlsWords(err) ?? err.code ?? err.message)));
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

/** A TLS failure in words (the server is not who we pinned), else undefined. */
function tlsWords(err: NodeJS.ErrnoException): string | undefined {
  const c = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL/.test(c) || /certificate/i.test(err.message)) return `TLS: ${err.message} (${c || 'handshake'})`;
  return undefined;
}
