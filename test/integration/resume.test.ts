/**
 * Maintenance survives kill -9 of the controller: a real controller process, killed at
 * several points of an evacuation (right after the 202, mid-way, late), started again on the
 * same data dir; the job ends 200 with the host in Maintenance, and the simulated hosts' own
 * files show every VM running on exactly one host, where the controller says it is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers.ts';
import { CrashHarness } from './crash-harness.ts';

let h: CrashHarness;
let hosts: string[];

beforeAll(async () => {
  h = new CrashHarness({ dataDir: await tempDir(), fleetDir: await tempDir(), hosts: 4, firstIp: '127.8.0.1', migrateMs: 150 });
  await h.startController();
  hosts = await h.startFleet();
  await h.ok('PUT', '/global-configurations/kvm/vm.migrationQuantity/actions', { updateGlobalConfig: { value: '2' } });
}, 90_000);

afterAll(async () => h?.stop());

const movedOff = async (host: string, of: Set<string>) =>
  ((await h.api('GET', `/vm-instances?limit=1000`)).body.inventories ?? []).filter((v: any) => of.has(v.uuid) && v.hostUuid !== host).length;

describe('kill -9 of the controller during maintenance', () => {
  let created = 0;
  it.each([
    ['right after the 202', 0],
    ['mid-way', 3],
    ['late', 6],
  ])('%s: resumed on start, every VM on exactly one host', async (_when, killAfter) => {
    const round = created / 8;
    const host = hosts[round % hosts.length]!;
    await h.createVms(host, 8, `r${round}`);
    created += 8;
    const mine = new Set<string>(((await h.api('GET', `/vm-instances?q=hostUuid=${host}&limit=1000`)).body.inventories ?? []).map((v: any) => v.uuid));
    const first = await h.api('PUT', `/hosts/${host}/actions`, { changeHostState: { stateEvent: 'maintain' } });
    expect(first.status).toBe(202);
    for (const end = Date.now() + 20_000; (await movedOff(host, mine)) < killAfter;) {
      if (Date.now() > end) throw new Error('migrations did not start');
      await new Promise((ok) => setTimeout(ok, 10));
    }
    await h.kill9();
    await h.startController();
    const done = await h.job(first.body.location);
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body.inventory.state).toBe('Maintenance');
    expect(await movedOff(host, mine)).toBe(mine.size);
    const audit = await h.audit(created);
    expect(audit).toEqual({ lost: [], doubled: [], disagree: [], vms: created });
    // Ready for the next round: this host takes work again.
    await h.ok('PUT', `/hosts/${host}/actions`, { changeHostState: { stateEvent: 'enable' } });
    for (const end = Date.now() + 20_000; (await h.api('GET', `/hosts/${host}`)).body.inventories?.[0]?.status !== 'Connected';) {
      if (Date.now() > end) throw new Error('host did not reconnect after maintenance');
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }, 90_000);
});
