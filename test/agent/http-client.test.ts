/**
 * agent/http-client.ts, the agent's one HTTP client (axios): no proxy from the environment
 * (a bootstrap token must never reach one), exact bytes both ways (answer signatures are over
 * them), bounded answers, timeouts and network errors in the words delivery.ts classifies.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import axios from 'axios';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { getJson, MAX_ANSWER_BYTES, NetworkError, postJson } from '../../agent/http-client.ts';
import { controllerIdentity } from '../../agent/tls.ts';
import { testCa } from '../fakes/pki.ts';
import { fakeController, later, makeAgent } from './helpers.ts';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

type Handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void;

function collect(seen: Seen[], handler: Handler) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, body, res);
    });
  };
}

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  later(() => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  }));
  return (server.address() as AddressInfo).port;
}

async function plainServer(handler: Handler): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const port = await listen(http.createServer(collect(seen, handler)));
  return { url: `http://127.0.0.1:${port}`, seen };
}

/** A proxy that answers every request (and CONNECT) 502 and remembers it. */
async function proxy(): Promise<{ url: string; seen: string[] }> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${JSON.stringify(req.headers)}`);
    res.writeHead(502).end('proxied');
  });
  server.on('connect', (req, socket) => {
    seen.push(`CONNECT ${req.url}`);
    socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n');
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, seen };
}

const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'];

describe('agent HTTP client', () => {
  const saved: Record<string, string | undefined> = {};
  beforeEach(() => {
    for (const k of PROXY_VARS) saved[k] = process.env[k];
  });
  afterEach(() => {
    for (const k of PROXY_VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  const useProxy = (url: string) => {
    for (const k of PROXY_VARS) delete process.env[k];
    for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'ALL_PROXY']) process.env[k] = url;
  };

  it('ignores HTTP(S)_PROXY, over HTTP and HTTPS (where plain axios would use the proxy)', async () => {
    const p = await proxy();
    const target = await plainServer((_req, _b, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    const ca = await testCa();
    const tlsSeen: Seen[] = [];
    const tlsPort = await listen(https.createServer({ ...ca.controller }, collect(tlsSeen, (_q, _b, res) => res.writeHead(200).end('{"ok":"tls"}'))));
    useProxy(p.url);

    // The environment is live: axios without proxy: false sends the request to the proxy.
    const direct = await axios.post(`${target.url}/zstack/agent/v1/facts`, 'x', { validateStatus: () => true });
    expect([direct.status, p.seen.length]).toEqual([502, 1]);
    p.seen.length = 0;

    const a = await postJson(`${target.url}/zstack/agent/v1/register`, '{"token":"secret-token"}', {}, 5_000);
    expect([a.status, a.body]).toEqual([200, { ok: true }]);
    const b = await postJson(`https://127.0.0.1:${tlsPort}/zstack/agent/v1/register`, '{"token":"secret-token"}', {}, 5_000, { ca: ca.caCert, checkServerIdentity: controllerIdentity });
    expect([b.status, b.body]).toEqual([200, { ok: 'tls' }]);
    expect(p.seen).toEqual([]);
    expect([target.seen.length, tlsSeen.length]).toEqual([1, 1]);
  });

  it('registration with a bootstrap token never goes through a proxy from the environment', async () => {
    const p = await proxy();
    const fc = await fakeController('good-token');
    useProxy(p.url);
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', registerBackoff: { initialMs: 5, maxMs: 20 } });
    await a.registered;
    expect(fc.registrations.map((r) => r.token)).toEqual(['good-token']);
    expect(p.seen).toEqual([]);
  });

  it('sends and keeps the exact bytes: no trimming, no decompression; no keep-alive, no redirects', async () => {
    const answer = Buffer.from(' {"a": 1}\n\n', 'utf8');
    const s = await plainServer((req, _b, res) => {
      if (req.url === '/moved') return res.writeHead(302, { location: '/elsewhere' }).end();
      res.writeHead(200, { 'content-type': 'application/json', 'x-hk-answer-sig': 'sig' }).end(answer);
    });
    const payload = ' {"facts": {"x": "\u00e9"}} ';
    const a = await postJson(`${s.url}/zstack/agent/v1/facts?x=1`, payload, { 'x-hk-host': 'h' }, 5_000);
    expect(a.raw.equals(answer)).toBe(true);
    expect([a.text, a.body, a.headers['x-hk-answer-sig']]).toEqual([answer.toString(), { a: 1 }, 'sig']);
    const got = s.seen[0]!;
    expect([got.method, got.url, got.body.toString('utf8')]).toEqual(['POST', '/zstack/agent/v1/facts?x=1', payload]);
    expect(got.headers).toMatchObject({ 'content-type': 'application/json', 'x-hk-host': 'h', connection: 'close', 'accept-encoding': 'identity', 'content-length': String(Buffer.byteLength(payload)) });
    expect(got.headers['user-agent']).toMatch(/^hostkeeper-agent\//);
    const moved = await getJson(`${s.url}/moved`, 5_000);
    expect([moved.status, s.seen.length]).toEqual([302, 2]);
  });

  it.each([
    ['an answer over the limit', (res: http.ServerResponse) => res.writeHead(200).end(Buffer.alloc(MAX_ANSWER_BYTES + 1, 0x20)), /^answer larger than 1048576 bytes$/],
    ['no answer within the timeout', () => undefined, /^timed out after 200 ms$/],
  ])('fails with a NetworkError on %s', async (_n, answer, why) => {
    const s = await plainServer((_req, _b, res) => answer(res));
    const err = await getJson(`${s.url}/x`, 200).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect((err as Error).message).toMatch(why);
  });

  it('names refused connections, bad URLs and TLS failures as delivery.ts expects', async () => {
    const refused = http.createServer();
    const freePort = await listen(refused);
    await new Promise<void>((r) => refused.close(() => r()));
    await expect(getJson(`http://127.0.0.1:${freePort}/`, 2_000)).rejects.toThrow(/^ECONNREFUSED$/);
    await expect(getJson('not a url', 2_000)).rejects.toThrow(/^bad URL not a url$/);
    await expect(getJson('ftp://127.0.0.1/x', 2_000)).rejects.toThrow(/^bad URL/);
    // An HTTPS server whose certificate is from another CA.
    const ours = await testCa('ours');
    const theirs = await testCa('theirs');
    const tlsPort = await listen(https.createServer({ ...theirs.controller }, (_q, res) => res.end('{}')));
    await expect(getJson(`https://127.0.0.1:${tlsPort}/`, 2_000, { ca: ours.caCert, checkServerIdentity: controllerIdentity })).rejects.toThrow(/^TLS: /);
  });
});
