/**
 * VMs, the allocator and maintenance end to end on a simulated fleet: a real controller
 * (HTTP, embedded store) and five real agents (simulator hypervisor) on loopback addresses,
 * in this process. 5 hosts x 8 CPUs (80 with the default x10 over-provisioning) x 16 GiB.
 */
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { HostRow, VmRow } from '../../protocol/resources.ts';
import { type RunningController, startController } from '../../controller/server.ts';
import { type RunningAgent, startAgent } from '../../agent/server.ts';
import type { SimulatorDriver } from '../../agent/drivers/simulator.ts';
import { ADMIN_PASSWORD, silentLog, tempDir, until } from '../helpers.ts';

const GiB = 1024 ** 3;
const HOSTS = 5;
let c: RunningController;
let auth: { Authorization: string };
let clusterUuid: string;
const agents: (RunningAgent & { sim: SimulatorDriver; ip: string })[] = [];
const hostUuidOf = new Map<string, string>();

async function job(res: request.Response): Promise<{ status: number; body: any }> {
  if (res.status !== 202) return { status: res.status, body: res.body };
  const path = new URL(res.body.location).pathname;
  for (;;) {
    const r = await request(c.server).get(path).set(auth);
    if (r.status !== 202) return { status: r.status, body: r.body };
    await new Promise((ok) => setTimeout(ok, 10));
  }
}
const api = (method: 'get' | 'post' | 'put' | 'delete', path: string, body?: object) => {
  const r = request(c.server)[method](`/zstack/v1${path}`).set(auth);
  return body ? r.send(body) : r;
};
const call = async (method: 'get' | 'post' | 'put' | 'delete', path: string, body?: object) => job(await api(method, path, body));
const setConfig = async (cat: string, name: string, value: string) => {
  const r = await call('put', `/global-configurations/${cat}/${name}/actions`, { updateGlobalConfig: { value } });
  expect(r.status).toBe(200);
};
const vms = () => c.core.repo.all<VmRow>('vm');
const host = async (uuid: string) => (await c.core.repo.get<HostRow>('host', uuid))!;
const createVm = (name: string, params: Record<string, unknown> = {}) =>
  call('post', '/vm-instances', { params: { name, memorySize: GiB, cpuNum: 1, clusterUuid, ...params } });
const maintain = (uuid: string) => api('put', `/hosts/${uuid}/actions`, { changeHostState: { stateEvent: 'maintain' } });
const setState = (uuid: string, stateEvent: string) => call('put', `/hosts/${uuid}/actions`, { changeHostState: { stateEvent } });

/** Where each VM really is, from the agents' own hypervisors. */
async function onAgents(): Promise<Map<string, string[]>> {
  const where = new Map<string, string[]>();
  for (const a of agents) {
    for (const v of await a.sim.list()) {
      if (v.state === 'Stopped') continue;
      where.set(v.uuid, [...(where.get(v.uuid) ?? []), hostUuidOf.get(a.ip)!]);
    }
  }
  return where;
}

/** Every host within its capacity, in the store and on the agents. */
async function expectWithinCapacity(): Promise<void> {
  for (const h of await c.core.repo.all<HostRow>('host')) {
    expect(h.usedMemory ?? 0).toBeLessThanOrEqual(h.totalMemoryCapacity - 512 * 1024 ** 2);
    expect(h.usedCpu ?? 0).toBeLessThanOrEqual(h.cpuNum * 10);
  }
  for (const a of agents) {
    const held = (await a.sim.list()).filter((v) => v.state !== 'Stopped').reduce((s, v) => s + v.memorySize, 0);
    expect(held).toBeLessThanOrEqual(16 * GiB);
  }
}

beforeAll(async () => {
  c = await startController({
    dataDir: await tempDir(), port: 0, host: '127.0.0.1', adminPassword: ADMIN_PASSWORD, log: silentLog(),
    vms: { settlePollMs: 50, graceStopMs: 300 },
  });
  const login = await request(c.server).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
  auth = { Authorization: `OAuth ${login.body.inventory.uuid}` };
  const zone = await call('post', '/zones', { params: { name: 'z' } });
  const cl = await call('post', '/clusters', { params: { zoneUuid: zone.body.inventory.uuid, name: 'c', hypervisorType: 'KVM' } });
  clusterUuid = cl.body.inventory.uuid;
  const tk = await api('post', '/hosts/bootstrap-tokens', { params: { clusterUuid, ttlSeconds: 3600 } });
  for (let i = 1; i <= HOSTS; i++) {
    const ip = `127.4.0.${i}`;
    const a = await startAgent({
      stateDir: await tempDir(), listen: { host: ip, port: 0 }, hypervisor: 'simulator', controllerUrl: c.url, bootstrapToken: tk.body.inventory.token,
      simulator: { hardware: { cpuNum: 8, memoryBytes: 16 * GiB } }, refresher: null, log: silentLog(),
    });
    agents.push(Object.assign(a, { sim: a.driver as SimulatorDriver, ip }));
  }
  await until(async () => (await c.core.repo.all<HostRow>('host')).filter((h) => h.status === 'Connected').length === HOSTS, 'all hosts Connected', 20_000);
  for (const h of await c.core.repo.all<HostRow>('host')) hostUuidOf.set(h.managementIp, h.uuid);
}, 60_000);

afterAll(async () => {
  for (const a of agents) a.kill();
  await c?.close();
});

beforeEach(async () => {
  for (const a of agents) a.sim.clearInjections();
  // Every host back to Enabled, every VM gone: each test starts from the same fleet.
  for (const h of await c.core.repo.all<HostRow>('host')) if (h.state !== 'Enabled') await setState(h.uuid, 'enable');
  await until(async () => (await c.core.repo.all<HostRow>('host')).every((h) => h.status === 'Connected'), 'hosts reconnected', 20_000);
  await Promise.all((await vms()).map((v) => call('delete', `/vm-instances/${v.uuid}`)));
  await setConfig('kvm', 'vm.migrationQuantity', '2');
  await setConfig('host', 'maintenanceMode.ignoreError', 'false');
});

describe('VMs', () => {
  it('creates, stops, starts, reboots, migrates and destroys through the agents', async () => {
    const cr = await createVm('vm-a', { vmNics: [{ ip: '10.9.0.1' }] });
    expect(cr.status).toBe(200);
    const vm = cr.body.inventory;
    expect(vm).toMatchObject({ name: 'vm-a', state: 'Running', memorySize: GiB, cpuNum: 1, clusterUuid });
    expect(cr.body.schema.inventory).toBe('org.zstack.header.vm.VmInstanceInventory');
    expect((await onAgents()).get(vm.uuid)).toEqual([vm.hostUuid]);
    expect((await call('put', `/vm-instances/${vm.uuid}/actions`, { stopVmInstance: { type: 'cold' } })).body.inventory.state).toBe('Stopped');
    expect((await call('put', `/vm-instances/${vm.uuid}/actions`, { startVmInstance: {} })).body.inventory.state).toBe('Running');
    expect((await call('put', `/vm-instances/${vm.uuid}/actions`, { rebootVmInstance: {} })).body.inventory.state).toBe('Running');
    const cand = await api('get', `/vm-instances/${vm.uuid}/migration-target-hosts`);
    expect(cand.status).toBe(200);
    expect(cand.body.inventories).toHaveLength(HOSTS - 1);
    expect(cand.body.dropped).toEqual([expect.objectContaining({ hostUuid: vm.hostUuid, reason: 'source-host' })]);
    const target = cand.body.inventories[0].uuid;
    const mig = await call('put', `/vm-instances/${vm.uuid}/actions`, { migrateVm: { hostUuid: target } });
    expect(mig.status).toBe(200);
    expect(mig.body.inventory).toMatchObject({ hostUuid: target, lastHostUuid: vm.hostUuid, state: 'Running' });
    expect((await onAgents()).get(vm.uuid)).toEqual([target]);
    expect(await c.core.repo.all('migration')).toEqual([]);
    const q = await api('get', `/vm-instances?q=vmNics.ip=10.9.0.1`);
    expect(q.body.inventories.map((v: any) => v.uuid)).toEqual([vm.uuid]);
    expect((await call('delete', `/vm-instances/${vm.uuid}`)).status).toBe(200);
    expect((await onAgents()).has(vm.uuid)).toBe(false);
    expect(await c.core.repo.get('vm', vm.uuid)).toBeUndefined();
  });

  it('refuses by rule, naming the rule and the resources', async () => {
    const [h1] = [...hostUuidOf.values()];
    await setState(h1!, 'disable');
    const r = await createVm('x', { hostUuid: h1 });
    expect(r.status).toBe(503);
    expect(r.body.error.details).toMatch(/only an Enabled and Connected host takes a new, started or migrated-in VM/);
    const big = await createVm('huge', { memorySize: 64 * GiB });
    expect(big.body.error.code).toBe('HOST_ALLOCATION.1000');
    expect(big.body.error.details).toMatch(/has not enough free memory/);
    expect(big.body.error.details).toMatch(/is not Enabled \(state:Disabled\)/);
    const bad = await job(await api('post', '/vm-instances', { params: { name: 'n', memorySize: 'lots', cpuNum: 1 } }));
    expect(bad.status).toBe(503);
    expect(bad.body.error.details).toMatch(/params.memorySize/);
  });

  it('a VM that crashes on its host shows Stopped within 2 s (pushed over the channel)', async () => {
    const vm = (await createVm('crashy')).body.inventory;
    const a = agents.find((x) => hostUuidOf.get(x.ip) === vm.hostUuid)!;
    const t0 = Date.now();
    await a.sim.simulateCrash(vm.uuid);
    await until(async () => (await c.core.repo.get<VmRow>('vm', vm.uuid))?.state === 'Stopped', 'Stopped', 2000, 10);
    expect(Date.now() - t0).toBeLessThan(2000);
    await a.sim.simulateCrash(vm.uuid).catch(() => undefined);
  });

  it('200 concurrent creates into a nearly full cluster: every host within capacity, the refused say why', async () => {
    // 5 hosts x (16 GiB - 512 MiB reserved) = 77.5 GiB: 75 VMs of 1 GiB fit, 125 do not.
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => createVm(`burst-${i}`)));
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status !== 200);
    expect(ok.length).toBe(75);
    for (const r of refused) {
      expect(r.body.error.code).toBe('HOST_ALLOCATION.1000');
      expect(r.body.error.details).toMatch(/has not enough free memory/);
    }
    await expectWithinCapacity();
  }, 60_000);
});

describe('maintenance', () => {
  async function fill(n: number, on?: string) {
    const out = [];
    for (let i = 0; i < n; i++) out.push((await createVm(`m-${i}`, on ? { hostUuid: on } : {})).body.inventory);
    return out;
  }

  it('moves every VM elsewhere, never onto a host without room, then enters Maintenance', async () => {
    await fill(60);
    const target = [...hostUuidOf.values()][0]!;
    const plan = await api('get', `/hosts/${target}/maintenance-plan`);
    expect(plan.status).toBe(200);
    const mine = (await vms()).filter((v) => v.hostUuid === target);
    expect(plan.body.inventories).toHaveLength(mine.length);
    expect(plan.body.inventories.every((p: any) => p.action === 'migrate' && p.targetHostUuid !== target)).toBe(true);
    const r = await job(await maintain(target));
    expect(r.status).toBe(200);
    expect(r.body.inventory.state).toBe('Maintenance');
    expect(r.body.evacuation, JSON.stringify(r.body.evacuation)).toMatchObject({ stopped: [], left: [] });
    expect(r.body.evacuation.migrated).toHaveLength(mine.length);
    expect((await vms()).filter((v) => v.hostUuid === target)).toEqual([]);
    const where = await onAgents();
    for (const v of await vms()) expect(where.get(v.uuid)).toEqual([v.hostUuid]);
    await expectWithinCapacity();
  }, 60_000);

  it('a VM whose migration fails is stopped; with ignoreError false a VM that can be neither fails the job and the host returns', async () => {
    const [h1] = [...hostUuidOf.values()];
    const mine = await fill(3, h1);
    const a = agents.find((x) => hostUuidOf.get(x.ip) === h1)!;
    a.sim.inject({ op: 'migrate', fail: 'injected migration failure', vmUuid: mine[0].uuid });
    a.sim.inject({ op: 'migrate', fail: 'injected migration failure', vmUuid: mine[1].uuid });
    a.sim.inject({ op: 'stop', fail: 'injected stop failure', vmUuid: mine[1].uuid });
    const r = await job(await maintain(h1!));
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('HOST.1001');
    expect(r.body.error.details).toContain(mine[1].uuid);
    expect(r.body.error.details).toMatch(/injected stop failure/);
    expect((await host(h1!)).state).toBe('Enabled');
    const rows = new Map((await vms()).map((v) => [v.uuid, v]));
    expect(rows.get(mine[0].uuid)!.state).toBe('Stopped');
    expect(rows.get(mine[2].uuid)!.hostUuid).not.toBe(h1);
  }, 30_000);

  it('ignoreError true: the host enters Maintenance anyway and the job lists what was left', async () => {
    await setConfig('host', 'maintenanceMode.ignoreError', 'true');
    const [, h2] = [...hostUuidOf.values()];
    const mine = await fill(2, h2);
    const a = agents.find((x) => hostUuidOf.get(x.ip) === h2)!;
    a.sim.inject({ op: 'migrate', fail: 'no', vmUuid: mine[0].uuid });
    a.sim.inject({ op: 'stop', fail: 'still no', vmUuid: mine[0].uuid });
    const r = await job(await maintain(h2!));
    expect(r.status).toBe(200);
    expect(r.body.inventory.state).toBe('Maintenance');
    expect(r.body.evacuation.left).toEqual([expect.objectContaining({ uuid: mine[0].uuid })]);
    expect(r.body.evacuation.migrated.map((m: any) => m.uuid)).toEqual([mine[1].uuid]);
  }, 30_000);

  it('enable while PreMaintenance cancels cleanly: moved VMs stay, the host takes the asked state', async () => {
    await setConfig('kvm', 'vm.migrationQuantity', '1');
    const [h1] = [...hostUuidOf.values()];
    const mine = await fill(6, h1);
    const a = agents.find((x) => hostUuidOf.get(x.ip) === h1)!;
    a.sim.inject({ op: 'migrate', delayMs: 200 });
    const started = await maintain(h1!);
    await until(async () => (await vms()).some((v) => mine.some((m) => m.uuid === v.uuid) && v.hostUuid !== h1), 'one VM moved', 10_000, 10);
    await setState(h1!, 'enable');
    const r = await job(started);
    expect(r.status).toBe(503);
    expect(r.body.error.details).toMatch(/cancelled/);
    expect((await host(h1!)).state).toBe('Enabled');
    const moved = (await vms()).filter((v) => mine.some((m) => m.uuid === v.uuid) && v.hostUuid !== h1);
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.length).toBeLessThan(6);
    const where = await onAgents();
    for (const v of await vms()) expect(where.get(v.uuid)).toEqual([v.hostUuid]);
  }, 30_000);

  it('two hosts of one cluster maintained at once never overcommit the rest', async () => {
    // 3 remaining hosts can hold 3 x 15.5 = 46 VMs; 40 VMs on the two hosts to evacuate.
    const [h1, h2] = [...hostUuidOf.values()];
    await fill(20, h1);
    await fill(20, h2);
    const [r1, r2] = await Promise.all([job(await maintain(h1!)), job(await maintain(h2!))]);
    expect([r1.status, r2.status]).toEqual([200, 200]);
    await expectWithinCapacity();
    const where = await onAgents();
    for (const v of await vms()) if (v.state === 'Running') expect(where.get(v.uuid)).toEqual([v.hostUuid]);
  }, 60_000);

  it('DeleteHost: Permissive refuses while VMs run (naming them); Enforcing stops them, then deletes', async () => {
    const hs = [...hostUuidOf.values()];
    const h5 = hs[hs.length - 1]!;
    const mine = await fill(2, h5);
    const p = await job(await api('delete', `/hosts/${h5}?deleteMode=Permissive`));
    expect(p.status).toBe(503);
    expect(p.body.error.code).toBe('SYS.1004');
    expect(p.body.error.details).toContain(mine[0].uuid);
    const e = await job(await api('delete', `/hosts/${h5}?deleteMode=Enforcing`));
    expect(e.status).toBe(200);
    for (const m of mine) expect((await c.core.repo.get<VmRow>('vm', m.uuid))).toMatchObject({ state: 'Stopped', lastHostUuid: h5 });
    const a = agents.find((x) => hostUuidOf.get(x.ip) === h5)!;
    expect((await a.sim.list()).every((v) => v.state === 'Stopped')).toBe(true);
  }, 30_000);
});
