/**
 * The long-lived channel: a signed streaming POST; pongs answer pings, heartbeats keep
 * coming, a new channel ends the old one, and its timers go when it goes.
 */
import http from 'node:http';
import https from 'node:https';
import { describe, expect, it } from 'vitest';
import { AGENT_PATHS, HEARTBEAT_MS, signedHeaders } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { HOST_UUID, later, makeAgent, SECRET, until } from './helpers.ts';

interface Client {
  status: Promise<number>;
  /** Every line received so far ('' = heartbeat). */
  lines: string[];
  /** Arrival times (real ms) of heartbeats. */
  beats: number[];
  ended: Promise<void>;
  send(frame: unknown): void;
  close(): void;
}

function openChannel(url: string, now: number, secret = SECRET): Client {
  const lines: string[] = [];
  const beats: number[] = [];
  let buf = '';
  const secure = url.startsWith('https:');
  const req = (secure ? https : http).request(url + AGENT_PATHS.channel, {
    method: 'POST',
    agent: false,
    // The agent has no certificate from a CA here (none pinned): nothing to check, as the controller does then.
    ...(secure ? { rejectUnauthorized: false } : {}),
    headers: { 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked', ...signedHeaders(secret, HOST_UUID, 'POST', AGENT_PATHS.channel, '', now) },
  });
  let endedResolve!: () => void;
  const ended = new Promise<void>((r) => (endedResolve = r));
  const status = new Promise<number>((resolve, reject) => {
    req.on('response', (res) => {
      resolve(res.statusCode ?? 0);
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          lines.push(line);
          if (line === '') beats.push(performance.now());
        }
      });
      res.on('end', () => {
        if (buf) lines.push(buf);
        endedResolve();
      });
      res.on('close', endedResolve);
    });
    req.on('error', (e) => {
      reject(e);
      endedResolve();
    });
  });
  req.flushHeaders();
  later(async () => void req.destroy());
  return { status, lines, beats, ended, send: (f) => req.write(`${JSON.stringify(f)}\n`), close: () => req.destroy() };
}

describe('the channel', () => {
  it('answers each ping with a pong carrying the identity', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    expect(await c.status).toBe(200);
    c.send({ t: 'ping', id: 1 });
    c.send({ t: 'ping', id: 2 });
    await until(() => c.lines.filter(Boolean).length === 2);
    const frames = c.lines.filter(Boolean).map((l) => JSON.parse(l));
    expect(frames).toEqual([1, 2].map((id) => ({ t: 'pong', id, hostUuid: null, agentVersion: expect.any(String), bootId: a.identity().bootId, instanceId: a.instanceId })));
  });

  it('ignores frames it does not understand', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    await c.status;
    c.send('garbage');
    c.send({ t: 'what' });
    c.send({ t: 'ping', id: 7 });
    await until(() => c.lines.some(Boolean));
    expect(c.lines.filter(Boolean).map((l) => JSON.parse(l).id)).toEqual([7]);
  });

  it('takes the heartbeat period the controller sets with an hb frame, and ignores bad ones', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    await c.status;
    await until(() => clock.pending === 1);
    for (const bad of [{ t: 'hb', ms: 50 }, { t: 'hb', ms: 'x' }, { t: 'hb', ms: 10 ** 9 }, { t: 'hb', ms: 1500.5 }]) c.send(bad);
    c.send({ t: 'hb', ms: 2900 });
    c.send({ t: 'ping', id: 1 });
    await until(() => c.lines.some(Boolean));
    clock.advance(HEARTBEAT_MS);
    await new Promise((r) => setTimeout(r, 20));
    expect(c.beats.length).toBe(0);
    clock.advance(2900 - HEARTBEAT_MS);
    await until(() => c.beats.length === 1);
  });

  it('writes a heartbeat every HEARTBEAT_MS (injected clock: one per period)', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    await c.status;
    await until(() => clock.pending === 1);
    for (let i = 1; i <= 3; i++) {
      clock.advance(HEARTBEAT_MS);
      await until(() => c.beats.length === i);
    }
    clock.advance(HEARTBEAT_MS - 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(c.beats.length).toBe(3);
  });

  it('heartbeats arrive about every HEARTBEAT_MS on the real clock', async () => {
    const a = await makeAgent();
    const c = openChannel(a.url, Date.now());
    await c.status;
    const t0 = performance.now();
    await until(() => c.beats.length >= 3, 5_000);
    const gaps = [c.beats[0]! - t0, c.beats[1]! - c.beats[0]!, c.beats[2]! - c.beats[1]!];
    for (const g of gaps.slice(1)) {
      expect(g).toBeGreaterThan(HEARTBEAT_MS * 0.7);
      expect(g).toBeLessThan(HEARTBEAT_MS * 1.5);
    }
  });

  it('a second channel ends the first', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const first = openChannel(a.url, clock.now());
    await first.status;
    const second = openChannel(a.url, clock.now());
    expect(await second.status).toBe(200);
    await first.ended;
    second.send({ t: 'ping', id: 1 });
    await until(() => second.lines.some(Boolean));
    // only the live channel's heartbeat timer is left
    await until(() => clock.pending === 1);
  });

  it('drops its heartbeat timer when the controller closes the channel', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    await c.status;
    await until(() => clock.pending === 1);
    c.close();
    await until(() => clock.pending === 0);
  });

  it('refuses an unsigned or wrongly signed channel with 401', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now(), 'not-the-secret-0123456789');
    expect(await c.status).toBe(401);
    await c.ended;
    expect(c.lines.join('\n')).toBe('{"success":false,"error":"unauthorized"}');
    expect(clock.pending).toBe(0);
  });

  it('stopping the agent ends the channel', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const c = openChannel(a.url, clock.now());
    await c.status;
    await a.stop();
    await c.ended;
  });
});

