/**
 * Migration between two in-process simulated hosts is a real agent-to-agent HTTP transfer,
 * authorised by a one-time token the controller gave the destination. Any failure leaves
 * the VM on the source.
 */
import { describe, expect, it } from 'vitest';
import { AGENT_PATHS, MIGRATION_TOKEN_HEADER } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { makeAgent, rawRequest, type SignOpts, signedPost, tempDir, until, vmSpec, writeAgentJson } from './helpers.ts';

const SRC = { hostUuid: '5'.repeat(32), secret: 'source-secret-0123456789' };
const DST = { hostUuid: 'd'.repeat(32), secret: 'destination-secret-0123456789' };
const TOKEN = 'f00d'.repeat(8);

async function pair() {
  const clock = new FakeClock();
  const mk = async (creds: typeof SRC) => {
    const dir = await tempDir();
    await writeAgentJson(dir, creds);
    const a = await makeAgent({ stateDir: dir, clock });
    const call = (path: string, body: unknown, o: SignOpts = {}) => signedPost(a, path, body, { clock, ...creds, ...o });
    return Object.assign(a, { call });
  };
  const src = await mk(SRC);
  const dst = await mk(DST);
  const vm = vmSpec(1);
  await src.driver.create(vm, true);
  return { clock, src, dst, vm: { ...vm, state: 'Running' as const } };
}

describe('migration between two agents', () => {
  it('moves a running VM: prepare on the destination, migrate on the source', async () => {
    const { src, dst, vm } = await pair();
    expect((await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN })).body).toEqual({ success: true });
    const r = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: vm.uuid, destinationUrl: dst.url, token: TOKEN });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ success: true, vm });
    expect(await src.driver.list()).toEqual([]);
    expect(await dst.driver.list()).toEqual([vm]);
    // and it persisted on the destination
    await dst.stop();
    const again = await makeAgent({ stateDir: dst.stateDir });
    expect(await again.driver.list()).toEqual([vm]);
  });

  type Case = [name: string, setup: (p: Awaited<ReturnType<typeof pair>>) => Promise<{ token?: string; vmUuid?: string }>, error: RegExp];
  it.each<Case>([
    ['a token the destination never issued', async ({ dst, vm }) => {
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
      return { token: 'bad0'.repeat(8) };
    }, /refused vm\[uuid:00000001.*unauthorized \(HTTP 401\)/],
    ['an expired token (60 s)', async ({ dst, vm, clock }) => {
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
      clock.advance(60_001);
      return {};
    }, /unauthorized \(HTTP 401\)/],
    ['a token already used', async ({ src, dst, vm }) => {
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
      expect((await src.call(AGENT_PATHS.vmMigrate, { vmUuid: vm.uuid, destinationUrl: dst.url, token: TOKEN })).status).toBe(200);
      // The VM comes back to the source by other means; the old token must not move it again.
      await dst.driver.destroy(vm.uuid);
      await src.driver.create(vm, true);
      return {};
    }, /unauthorized \(HTTP 401\)/],
    ['a token issued for another VM', async ({ src, dst, vm }) => {
      await src.driver.create(vmSpec(2), true);
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
      return { vmUuid: vmSpec(2).uuid };
    }, /refused vm\[uuid:00000002.*unauthorized/],
    ['a destination that is not there', async () => ({}), /cannot reach destination agent/],
    ['a destination that fails to receive', async ({ dst, vm }) => {
      await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
      dst.sim.inject({ op: 'receive', fail: 'disk full' });
      return {};
    }, /refused vm\[uuid:00000001.*disk full \(HTTP 500\)/],
  ])('refuses %s and leaves the VM on the source', async (name, setup, error) => {
    const p = await pair();
    const { token, vmUuid } = await setup(p);
    const destinationUrl = name.includes('not there') ? 'http://127.0.0.1:1' : p.dst.url;
    const uuid = vmUuid ?? p.vm.uuid;
    const r = await p.src.call(AGENT_PATHS.vmMigrate, { vmUuid: uuid, destinationUrl, token: token ?? TOKEN });
    expect(r.status).toBe(502);
    expect(r.body).toEqual({ success: false, error: expect.stringMatching(error) });
    expect((await p.src.driver.get(uuid))?.state).toBe('Running');
    expect(await p.dst.driver.get(uuid)).toBeUndefined();
  });

  it('refuses to migrate a stopped VM, and a VM that is not there', async () => {
    const { src, dst, vm } = await pair();
    await src.driver.stop(vm.uuid);
    const r = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: vm.uuid, destinationUrl: dst.url, token: TOKEN });
    expect(r.status).toBe(409);
    expect(r.body.error).toMatch(/is Stopped; only a Running or Paused VM migrates/);
    const missing = await src.call(AGENT_PATHS.vmMigrate, { vmUuid: vmSpec(9).uuid, destinationUrl: dst.url, token: TOKEN });
    expect(missing.status).toBe(404);
  });

  it('prepare refuses a VM the destination already has', async () => {
    const { dst, vm } = await pair();
    await dst.driver.create(vm, false);
    const r = await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
    expect(r.status).toBe(409);
  });

  it('receive without a token, or with the host signature instead, is 401', async () => {
    const { dst, vm } = await pair();
    await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
    const noToken = await rawRequest(dst.url + AGENT_PATHS.vmReceive, 'POST', { 'content-type': 'application/json' }, JSON.stringify({ vm }));
    expect(noToken.status).toBe(401);
    expect((await dst.call(AGENT_PATHS.vmReceive, { vm })).status).toBe(401);
    expect(await dst.driver.list()).toEqual([]);
    // the token is still good after those attempts
    const ok = await rawRequest(dst.url + AGENT_PATHS.vmReceive, 'POST', { [MIGRATION_TOKEN_HEADER]: TOKEN }, JSON.stringify({ vm }));
    expect(ok.status).toBe(200);
  });

  it('a VM being migrated cannot be stopped or destroyed meanwhile', async () => {
    const { clock, src, dst, vm } = await pair();
    await dst.call(AGENT_PATHS.vmPrepareMigration, { vm, token: TOKEN });
    dst.sim.inject({ op: 'receive', delayMs: 1_000 });
    const migrating = src.call(AGENT_PATHS.vmMigrate, { vmUuid: vm.uuid, destinationUrl: dst.url, token: TOKEN });
    // The destination now waits on the (fake) clock inside receive.
    await until(() => clock.pending > 0);
    for (const path of [AGENT_PATHS.vmStop, AGENT_PATHS.vmDestroy]) {
      const r = await src.call(path, { vmUuid: vm.uuid });
      expect(r.status).toBe(409);
      expect(r.body.error).toMatch(/is being migrated/);
    }
    clock.advance(1_000);
    expect((await migrating).status).toBe(200);
    expect(await src.driver.list()).toEqual([]);
    expect(await dst.driver.list()).toEqual([vm]);
  });
});
