/**
 * Unambiguous migrations: every in-between state is visible and a VM never runs twice.
 * The source marks the VM outgoing (on disk) before sending, lists it Migrating with
 * migratingTo, resends on a cut connection (the destination answers a resend of its token
 * with success), and when it cannot know the outcome keeps the VM Paused until the
 * controller resolves it. The destination checks the token before reading a (small) body.
 */
import https from 'node:https';
import { FAKE_SELF_SIGNED } from '../fakes/agent.ts';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SIM_FILE } from '../../agent/drivers/simulator.ts';
import { AGENT_PATHS, MIGRATION_TOKEN_HEADER } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { agentAs, DST, later, rawRequest, SRC, until, vmSpec } from './helpers.ts';

const TOKEN = 'c0ffee00'.repeat(4);
const UUID = vmSpec(1).uuid;
const VM = { ...vmSpec(1), state: 'Running' as const };

async function pair(o: { paused?: boolean } = {}) {
  const clock = new FakeClock();
  const src = await agentAs(SRC, clock, { deliveryRetryMs: [0, 0] });
  const dst = await agentAs(DST, clock);
  await src.driver.create(vmSpec(1), true);
  if (o.paused) await src.sim.simulatePause(UUID);
  await dst.call(AGENT_PATHS.vmPrepareMigration, { vm: VM, token: TOKEN });
  return { clock, src, dst };
}

/** A proxy to the destination that cuts the connection after the destination answered, `cuts` times. */
async function cuttingProxy(target: string, cuts: number): Promise<{ url: string; seen: number }> {
  const state = { url: '', seen: 0 };
  let left = cuts;
  // Agent ports speak TLS: so does the proxy (with a certificate nobody pinned, as agents without a CA accept).
  const server = https.createServer(FAKE_SELF_SIGNED, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      state.seen++;
      const up = https.request(target + (req.url ?? ''), { method: 'POST', headers: req.headers, agent: false, rejectUnauthorized: false }, (ur) => {
        const out: Buffer[] = [];
        ur.on('data', (c) => out.push(c));
        ur.on('end', () => {
          if (left > 0) {
            left--;
            req.socket.destroy(); // the answer never reaches the source
            return;
          }
          res.writeHead(ur.statusCode ?? 502, ur.headers).end(Buffer.concat(out));
        });
      });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  later(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return state;
}

const simFile = async (dir: string) => JSON.parse(await readFile(join(dir, SIM_FILE), 'utf8'));

describe('unambiguous migrations', () => {
  it('a Paused VM migrates and arrives Paused', async () => {
    const { src, dst } = await pair({ paused: true });
    const r = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: dst.url, token: TOKEN });
    expect(r.body).toEqual({ success: true, vm: { ...vmSpec(1), state: 'Paused' } });
    expect(await dst.driver.list()).toEqual([{ ...vmSpec(1), state: 'Paused' }]);
    expect(await src.driver.list()).toEqual([]);
  });

  it('while sending, the source lists it Migrating with migratingTo, the marker on disk; the destination lists it arriving', async () => {
    const { clock, src, dst } = await pair();
    src.sim.inject({ op: 'migrate', delayMs: 200 });
    dst.sim.inject({ op: 'receive', delayMs: 50 });
    const migrating = src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: dst.url, token: TOKEN });
    await until(() => clock.pending > 0);
    expect((await src.call(AGENT_PATHS.vmList, {})).body.vms).toEqual([{ ...vmSpec(1), state: 'Migrating', migratingTo: dst.url }]);
    expect((await simFile(src.stateDir)).outgoing).toEqual({ [UUID]: { to: dst.url, resume: 'Running' } });
    clock.advance(200);
    await until(async () => (await dst.driver.get(UUID)) !== undefined);
    expect((await dst.call(AGENT_PATHS.vmList, {})).body.vms).toEqual([{ ...vmSpec(1), state: 'Migrating' }]);
    clock.advance(50);
    expect((await migrating).status).toBe(200);
    expect((await simFile(src.stateDir)).outgoing).toEqual({});
    expect(await dst.driver.list()).toEqual([VM]);
  });

  it('many migrations from one host run at once (no serialisation in the agent)', async () => {
    const clock = new FakeClock();
    const src = await agentAs(SRC, clock);
    const dst = await agentAs(DST, clock);
    const n = 20;
    const specs = Array.from({ length: n }, (_, i) => vmSpec(i + 1));
    for (const s of specs) {
      await src.driver.create(s, true);
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm: { ...s, state: 'Running' }, token: `${TOKEN}${s.uuid.slice(0, 8)}` });
    }
    src.sim.inject({ op: 'migrate', delayMs: 200 });
    const calls = specs.map((s) => src.call(AGENT_PATHS.vmMigrate, { vmUuid: s.uuid, destinationUrl: dst.url, token: `${TOKEN}${s.uuid.slice(0, 8)}` }));
    // all n are in their 200 ms transfer at the same time
    await until(async () => (await src.driver.list()).filter((v) => v.state === 'Migrating').length === n && clock.pending >= n);
    clock.advance(200);
    expect((await Promise.all(calls)).map((r) => r.status)).toEqual(specs.map(() => 200));
    expect((await dst.driver.list()).length).toBe(n);
    expect(await src.driver.list()).toEqual([]);
  });

  it('a delivery whose answer was cut is resent with the same token: the destination answers success, the VM is there once', async () => {
    const { src, dst } = await pair();
    const proxy = await cuttingProxy(dst.url, 1);
    const r = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: proxy.url, token: TOKEN });
    expect(r.status).toBe(200);
    expect(proxy.seen).toBe(2);
    expect(await src.driver.list()).toEqual([]);
    expect(await dst.driver.list()).toEqual([VM]);
  });

  it('every answer cut: MIGRATION_UNKNOWN, the VM Paused with migratingTo and frozen; resolve(completed) destroys the copy', async () => {
    const { src, dst } = await pair();
    const proxy = await cuttingProxy(dst.url, 99);
    const r = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: proxy.url, token: TOKEN });
    expect(r.status).toBe(502);
    expect(r.body).toEqual({ success: false, code: 'MIGRATION_UNKNOWN', error: expect.stringMatching(/outcome is unknown.*stays Paused/) });
    expect(proxy.seen).toBe(3);
    expect(await src.driver.list()).toEqual([{ ...vmSpec(1), state: 'Paused', migratingTo: proxy.url }]);
    for (const path of [AGENT_PATHS.vmStart, AGENT_PATHS.vmStop, AGENT_PATHS.vmDestroy, AGENT_PATHS.vmReboot]) {
      const x = await src.call(path, { vmUuid: UUID });
      expect(x.status, path).toBe(409);
      expect(x.body.error).toMatch(/awaits the outcome of its migration/);
    }
    // The controller sees it on the destination: completed.
    expect((await dst.call(AGENT_PATHS.vmList, {})).body.vms).toEqual([VM]);
    const res = await src.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, completed: true });
    expect(res.body).toEqual({ success: true, vm: null });
    expect(await src.driver.list()).toEqual([]);
    expect((await simFile(src.stateDir)).outgoing).toEqual({});
    // idempotent
    expect((await src.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, completed: true })).body).toEqual({ success: true, vm: null });
  });

  it.each([
    ['Running', false],
    ['Paused', true],
  ])('an agent restarted mid-migration (a %s VM): Paused with migratingTo, never resumed; resolve(not completed) puts it back', async (was, paused) => {
    const { clock, src, dst } = await pair({ paused });
    src.sim.inject({ op: 'migrate', delayMs: 60_000 });
    const migrating = src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: dst.url, token: TOKEN }).catch(() => undefined);
    await until(async () => (await simFile(src.stateDir)).outgoing?.[UUID] !== undefined && clock.pending > 0);
    src.kill(); // like kill -9: the delivery never happens (the fake clock is not moved)
    await migrating;
    clock.advance(1); // a restart takes time
    const again = await agentAs(SRC, clock, { stateDir: src.stateDir });
    expect(await again.driver.list()).toEqual([{ ...vmSpec(1), state: 'Paused', migratingTo: dst.url }]);
    expect((await again.call(AGENT_PATHS.vmStart, { vmUuid: UUID })).status).toBe(409);
    // The destination does not have it: not completed.
    expect((await dst.call(AGENT_PATHS.vmList, {})).body.vms).toEqual([]);
    const res = await again.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, completed: false });
    expect(res.body).toEqual({ success: true, vm: { ...vmSpec(1), state: was } });
    expect((await simFile(again.stateDir)).outgoing).toEqual({});
    // idempotent, and it stays resolved across another restart
    expect((await again.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, completed: false })).body.vm.state).toBe(was);
    await again.stop();
    const third = await agentAs(SRC, clock, { stateDir: src.stateDir });
    expect(await third.driver.list()).toEqual([{ ...vmSpec(1), state: was }]);
  });

  it.each([
    ['completed, for a VM here that is not migrating (it would destroy it)', { completed: true }, 409, /not migrating away from this host/],
    ['not completed, for a VM not here', { completed: false, vmUuid: vmSpec(9).uuid }, 404, /not on this host/],
    ['a body without completed', { completed: 'yes' }, 400, /body\.completed must be true or false/],
  ])('resolve refuses %s', async (_n, body, status, error) => {
    const { src } = await pair();
    const r = await src.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, ...body });
    expect(r.status).toBe(status);
    expect(r.body.error).toMatch(error);
    expect((await src.driver.get(UUID))?.state).toBe('Running');
  });

  it('resolve refuses a VM still being sent', async () => {
    const { clock, src, dst } = await pair();
    src.sim.inject({ op: 'migrate', delayMs: 200 });
    const migrating = src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: dst.url, token: TOKEN });
    await until(() => clock.pending > 0);
    const r = await src.call(AGENT_PATHS.vmResolveMigration, { vmUuid: UUID, completed: false });
    expect(r.status).toBe(409);
    expect(r.body.error).toMatch(/being migrated right now/);
    clock.advance(200);
    expect((await migrating).status).toBe(200);
  });
});

describe('vmReceive on the destination', () => {
  const receive = (url: string, token: string, body: unknown = { vm: VM }) =>
    rawRequest(url + AGENT_PATHS.vmReceive, 'POST', { [MIGRATION_TOKEN_HEADER]: token, 'content-type': 'application/json' }, JSON.stringify(body));

  it('a resend of the same token for the same VM answers success (the VM is there once); for another VM, 401', async () => {
    const { dst } = await pair();
    expect((await receive(dst.url, TOKEN)).body).toEqual({ success: true, vm: VM });
    expect((await receive(dst.url, TOKEN)).body).toEqual({ success: true, vm: VM });
    expect(await dst.driver.list()).toEqual([VM]);
    expect((await receive(dst.url, TOKEN, { vm: { ...vmSpec(2), state: 'Running' } })).status).toBe(401);
  });

  it('the resend memory is bounded in time', async () => {
    const { clock, dst } = await pair();
    expect((await receive(dst.url, TOKEN)).status).toBe(200);
    clock.advance(10 * 60_000 + 1);
    expect((await receive(dst.url, TOKEN)).status).toBe(401);
  });

  it('an unknown token is refused before the body is read; a known one reads at most 64 KB', async () => {
    const { dst } = await pair();
    // Declares 1 MB, sends 1 KB and waits: the 401 comes without the rest.
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request(dst.url + AGENT_PATHS.vmReceive, {
        method: 'POST', agent: false, rejectUnauthorized: false, headers: { [MIGRATION_TOKEN_HEADER]: 'not-a-token-0123456789', 'content-length': String(1024 * 1024) },
      }, (res) => {
        resolve(res.statusCode ?? 0);
        res.resume();
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1024, 0x20));
    });
    expect(status).toBe(401);
    const big = await receive(dst.url, TOKEN, { vm: VM, pad: 'x'.repeat(100 * 1024) });
    expect(big.status).toBe(413);
    // the token survived: the refusal was before it was taken
    expect((await receive(dst.url, TOKEN)).status).toBe(200);
  });
});
