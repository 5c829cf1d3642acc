/**
 * Every request is authenticated before routing: a missing, forged, stale or replayed
 * signature gets the same 401 on every path, existing or not, and does nothing.
 */
import { describe, expect, it } from 'vitest';
import { AGENT_PATHS, AUTH, MAX_SKEW_MS, signedHeaders } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { HOST_UUID, makeAgent, rawRequest, SECRET, type SignOpts, signedPost, vmSpec } from './helpers.ts';

const UNAUTHORIZED = '{"success":false,"error":"unauthorized"}';

type Case = [name: string, opts: (clock: FakeClock) => SignOpts];
const BAD: Case[] = [
  ['no auth headers at all', () => ({ headers: { [AUTH.host]: undefined, [AUTH.ts]: undefined, [AUTH.nonce]: undefined, [AUTH.sig]: undefined } })],
  ['no signature header', () => ({ headers: { [AUTH.sig]: undefined } })],
  ['no host header', () => ({ headers: { [AUTH.host]: undefined } })],
  ['malformed signature', () => ({ headers: { [AUTH.sig]: 'not-hex' } })],
  ['wrong secret', () => ({ secret: 'another-secret-0123456789' })],
  ['tampered body', () => ({ signBody: JSON.stringify({ vm: vmSpec(9) }) })],
  ['tampered path', () => ({ signPath: AGENT_PATHS.echo })],
  ['stale timestamp (past)', (c) => ({ ts: c.now() - MAX_SKEW_MS - 1_000 })],
  ['stale timestamp (future)', (c) => ({ ts: c.now() + MAX_SKEW_MS + 1_000 })],
  ['unknown host uuid', () => ({ hostUuid: 'ffffffffffffffffffffffffffffffff' })],
  ['unknown host uuid, signed with its own secret', () => ({ hostUuid: 'ffffffffffffffffffffffffffffffff', secret: 'whatever-secret-0123456789' })],
];

describe('agent authentication', () => {
  it('accepts a valid signed request', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const r = await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(1) }, { clock });
    expect(r.status).toBe(200);
    expect(r.body.success).toBe(true);
    expect((await a.driver.list()).map((v) => v.uuid)).toEqual([vmSpec(1).uuid]);
  });

  describe.each([
    ['an existing path (vm/create)', AGENT_PATHS.vmCreate],
    ['a path that does not exist', '/no/such/path'],
  ])('on %s', (_where, path) => {
    it.each(BAD)('refuses %s with 401 and does nothing', async (_name, opts) => {
      const clock = new FakeClock();
      const a = await makeAgent({ clock });
      const r = await signedPost(a, path, { vm: vmSpec(1) }, { clock, ...opts(clock) });
      expect(r.status).toBe(401);
      expect(r.text).toBe(UNAUTHORIZED);
      expect(await a.driver.list()).toEqual([]);
    });

    it('refuses a request signed for POST but sent as PUT', async () => {
      const clock = new FakeClock();
      const a = await makeAgent({ clock });
      const body = JSON.stringify({ vm: vmSpec(1) });
      const r = await rawRequest(a.url + path, 'PUT', signedHeaders(SECRET, HOST_UUID, 'POST', path, body, clock.now()), body);
      expect(r.status).toBe(401);
      expect(r.text).toBe(UNAUTHORIZED);
      expect(await a.driver.list()).toEqual([]);
    });

    it('refuses a replayed request (same nonce, within the window) with 401', async () => {
      const clock = new FakeClock();
      const a = await makeAgent({ clock });
      const body = JSON.stringify({ vm: vmSpec(1) });
      const headers = { 'content-type': 'application/json', ...signedHeaders(SECRET, HOST_UUID, 'POST', path, body, clock.now()) };
      const first = await rawRequest(a.url + path, 'POST', headers, body);
      expect(first.status).toBe(path === AGENT_PATHS.vmCreate ? 200 : 404);
      // First destroy the VM, so a replay that got through would visibly create it again.
      await a.driver.list().then((vms) => Promise.all(vms.map((v) => a.driver.destroy(v.uuid))));
      clock.advance(MAX_SKEW_MS - 1_000);
      const second = await rawRequest(a.url + path, 'POST', headers, body);
      expect(second.status).toBe(401);
      expect(second.text).toBe(UNAUTHORIZED);
      expect(await a.driver.list()).toEqual([]);
    });

    it('refuses everything while the agent has no secret yet', async () => {
      const clock = new FakeClock();
      const a = await makeAgent({ clock, withSecret: false });
      const r = await signedPost(a, path, { vm: vmSpec(1) }, { clock });
      expect(r.status).toBe(401);
      expect(r.text).toBe(UNAUTHORIZED);
      expect(await a.driver.list()).toEqual([]);
    });
  });

  it('answers unknown and existing paths with byte-identical 401s (no route revealed)', async () => {
    const a = await makeAgent();
    const paths = [...Object.values(AGENT_PATHS), '/', '/nope', '/host/PING', '/vm/create/'];
    const bodies = new Set<string>();
    for (const p of paths.filter((p) => p !== AGENT_PATHS.vmReceive)) {
      const r = await rawRequest(a.url + p, 'POST', { 'content-type': 'application/json' }, '{}');
      expect(r.status, p).toBe(401);
      bodies.add(r.text);
    }
    for (const method of ['GET', 'DELETE', 'PUT']) {
      const r = await rawRequest(`${a.url}/host/ping`, method, {});
      expect(r.status).toBe(401);
      bodies.add(r.text);
    }
    expect([...bodies]).toEqual([UNAUTHORIZED]);
  });

  it('routes an authenticated unknown path to 404 without parsing its body', async () => {
    const a = await makeAgent();
    const r = await signedPost(a, '/no/such/path', '{not json');
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ success: false, error: 'no such path: POST /no/such/path' });
    // ...while a known route does parse, and says so.
    const bad = await signedPost(a, AGENT_PATHS.vmCreate, '{not json');
    expect(bad.status).toBe(400);
    expect(bad.body).toEqual({ success: false, error: 'body is not valid JSON' });
  });

  it('refuses a body over the cap with 413, and an unsigned one of any size with 401 unread', async () => {
    const a = await makeAgent({ bodyLimitBytes: 1024 });
    const big = JSON.stringify({ pad: 'x'.repeat(4096) });
    expect((await signedPost(a, AGENT_PATHS.echo, big)).status).toBe(413);
    expect((await rawRequest(a.url + AGENT_PATHS.echo, 'POST', {}, big)).status).toBe(401);
    expect((await signedPost(a, AGENT_PATHS.echo, {})).status).toBe(200);
  });

  it('binds the signature to the query string too', async () => {
    const a = await makeAgent();
    expect((await signedPost(a, `${AGENT_PATHS.echo}?x=1`, {}, { signPath: AGENT_PATHS.echo })).status).toBe(401);
    expect((await signedPost(a, `${AGENT_PATHS.echo}?x=1`, {})).status).toBe(200);
  });

  it('checks the secret from agent.json against the x-hk-host it was issued for', async () => {
    const a = await makeAgent();
    expect(a.config()).toMatchObject({ hostUuid: HOST_UUID, secret: SECRET });
  });
});
