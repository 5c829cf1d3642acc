/**
 * A fake controller for the CLI tests: a real HTTP server on 127.0.0.1:0 that records every
 * request and answers from a script. A route's replies are used in order; the last one
 * repeats. Replies answer at once (no sleeps); a reply may be a function of the server's
 * base URL, for absolute job `location`s.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  /** Path and query string as sent, e.g. `/zstack/v1/hosts?q=...`. */
  url: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** Parsed JSON body, or undefined for none. */
  body: unknown;
}

export interface Reply {
  status: number;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as is (text/html), for non-ZStack answers. */
  text?: string;
}

export type Script = Record<string, Array<Reply | ((base: string) => Reply)>>;

export interface FakeController {
  base: string;
  requests: Recorded[];
  close(): Promise<void>;
}

/** `script` keys are `METHOD /path` without the query string, e.g. `POST /zstack/v1/hosts/kvm`. */
export async function startFakeController(script: Script): Promise<FakeController> {
  const requests: Recorded[] = [];
  const used = new Map<string, number>();
  let base = '';
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const path = (req.url ?? '').split('?')[0]!;
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        path,
        headers: req.headers,
        body: text ? JSON.parse(text) : undefined,
      });
      const key = `${req.method} ${path}`;
      const replies = script[key];
      if (!replies || replies.length === 0) {
        res.writeHead(404, { 'Content-Type': 'text/html' }).end(`<pre>Cannot ${req.method} ${path}</pre>`);
        return;
      }
      const n = used.get(key) ?? 0;
      used.set(key, n + 1);
      const r = replies[Math.min(n, replies.length - 1)]!;
      const reply = typeof r === 'function' ? r(base) : r;
      if (reply.text !== undefined) {
        res.writeHead(reply.status, { 'Content-Type': 'text/html' }).end(reply.text);
      } else if (reply.json !== undefined) {
        res.writeHead(reply.status, { 'Content-Type': 'application/json' }).end(JSON.stringify(reply.json));
      } else {
        res.writeHead(reply.status).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
