/**
 * A minimal HTTP client for the benchmark: node's `http` with one keep-alive socket, so
 * requests are sequential over one connection and the figures hold no connect cost. The
 * time of a request runs from `http.request` to the last byte of the body (`end`); the
 * body is parsed by the caller after the clock stops.
 */
import http from 'node:http';

export interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  ms: number;
}

export class Client {
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private readonly headers: Record<string, string> = {};

  constructor(readonly port: number, readonly host = '127.0.0.1') {}

  set session(uuid: string) {
    this.headers.authorization = `OAuth ${uuid}`;
  }

  request(method: string, path: string, body?: unknown, opts: { auth?: boolean; agent?: http.Agent | false; timeoutMs?: number } = {}): Promise<Answer> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = opts.auth === false ? {} : { ...this.headers };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const req = http.request(
        { host: this.host, port: this.port, method, path, headers, agent: opts.agent ?? this.agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const ms = performance.now() - t0;
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers, ms });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error(`timeout after ${opts.timeoutMs} ms`)));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
