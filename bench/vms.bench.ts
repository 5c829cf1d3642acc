/**
 * `npm run bench:vms`: the VM and maintenance figures.
 *
 * 1. Evacuation: a real controller (this process, embedded store with fdatasync) and a
 *    simulated fleet in a child process (so the agents have the other core), every
 *    migration delayed by the simulator. One source host with BENCH_EVAC_VMS (100) VMs is
 *    put into maintenance with vm.migrationQuantity 1, 2, 4, 8 (200 ms migrations), then
 *    one host with BENCH_BIG_VMS (1,000) VMs with quantity 16 (50 ms migrations). Each is
 *    timed from the 202 to the job's 200 and printed beside its ideal,
 *    ceil(VMs / quantity) x migration time, and the ratio.
 * 2. Allocation at scale: a store seeded with BENCH_HOSTS (10,000) hosts and BENCH_VMS_PER_HOST
 *    (10) VMs each; one placement decision (snapshot of every host + the allocator) timed
 *    BENCH_SAMPLES times, beside a cluster-scoped one; then CreateVmInstance end to end (202,
 *    then the job's 200; simulator agents) into a live cluster of that same store.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { startFleet, type ChildFleet } from '../agent/fleet-core.ts';
import { pickBest } from '../controller/allocator/allocator.ts';
import { openCore } from '../controller/core.ts';
import { type RunningController, startController } from '../controller/server.ts';
import { recompute, snapshotFor } from '../controller/services/capacity.ts';
import type { HostRow } from '../protocol/resources.ts';
import pino from 'pino';
import { Client } from './http.ts';
import { seedStore } from './seed.ts';
import { fmtMs, summarize, table } from './stats.ts';
import { intEnv, log, onExit } from './common.ts';

const EVAC_VMS = intEnv('BENCH_EVAC_VMS', 100, 1);
const BIG_VMS = intEnv('BENCH_BIG_VMS', 1000, 1);
const HOSTS = intEnv('BENCH_HOSTS', 10_000, 1);
const VMS_PER_HOST = intEnv('BENCH_VMS_PER_HOST', 10);
const SAMPLES = intEnv('BENCH_SAMPLES', 500, 1);
const PASSWORD = 'bench-admin-password';
const MiB = 1024 ** 2;
const silent = pino({ level: 'silent' });

const dirs: string[] = [];
const tmp = (p: string) => {
  const d = mkdtempSync(join(process.env.BENCH_TMP ?? os.tmpdir(), p));
  dirs.push(d);
  return d;
};
const fleets: ChildFleet[] = [];
onExit(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** One admin client over keep-alive HTTP: calls, and follows jobs to their end. */
class Admin {
  readonly http: Client;
  constructor(port: number) {
    this.http = new Client(port);
  }
  async login(): Promise<void> {
    const r = await this.http.request('PUT', '/zstack/v1/accounts/login', { logInByAccount: { accountName: 'admin', password: PASSWORD } }, { auth: false });
    this.http.session = JSON.parse(r.body).inventory.uuid;
  }
  async job(method: string, path: string, body?: unknown, pollMs = 5): Promise<{ status: number; body: any; ms: number }> {
    const t0 = performance.now();
    const r = await this.http.request(method, `/zstack/v1${path}`, body);
    if (r.status !== 202) return { status: r.status, body: JSON.parse(r.body), ms: performance.now() - t0 };
    const loc = new URL(JSON.parse(r.body).location).pathname;
    for (;;) {
      const j = await this.http.request('GET', loc);
      if (j.status !== 202) return { status: j.status, body: JSON.parse(j.body), ms: performance.now() - t0 };
      if (pollMs > 0) await new Promise((ok) => setTimeout(ok, pollMs));
    }
  }
  async ok(method: string, path: string, body?: unknown): Promise<any> {
    const r = await this.job(method, path, body);
    if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
  config(cat: string, name: string, value: string) {
    return this.ok('PUT', `/global-configurations/${cat}/${name}/actions`, { updateGlobalConfig: { value } });
  }
}

async function cluster(admin: Admin, zoneName: string): Promise<string> {
  const zone = await admin.ok('POST', '/zones', { params: { name: zoneName } });
  return (await admin.ok('POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: `${zoneName}-c`, hypervisorType: 'KVM' } })).inventory.uuid;
}

/** A fleet child of `count` simulated hosts registered into `clusterUuid`, every migration delayed by `migrateMs`. */
async function fleet(c: RunningController, admin: Admin, clusterUuid: string, count: number, firstIp: string, migrateMs: number): Promise<HostRow[]> {
  const tk = await admin.http.request('POST', '/zstack/v1/hosts/bootstrap-tokens', { params: { clusterUuid, ttlSeconds: 3600 } });
  process.env.HK_SIM_INJECT = JSON.stringify([{ op: 'migrate', delayMs: migrateMs }]);
  const inv = JSON.parse(tk.body).inventory;
  const f = await startFleet({ count, controllerUrl: c.url, token: inv.token, caCertHash: inv.caCertHash, stateDir: tmp('hk-bench-fleet-'), firstIp, logLevel: 'error' });
  delete process.env.HK_SIM_INJECT;
  fleets.push(f);
  for (const end = Date.now() + 120_000; ;) {
    const hosts = (await c.core.repo.find<HostRow>('host', { clusterUuid })).filter((h) => h.status === 'Connected');
    if (hosts.length === count) return hosts.sort((a, b) => a.managementIp.localeCompare(b.managementIp, 'en', { numeric: true }));
    if (Date.now() > end) throw new Error(`only ${hosts.length} of ${count} simulated hosts connected within 2 minutes`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** Creates `n` VMs on `hostUuid`, 32 at a time. */
async function fill(admin: Admin, hostUuid: string, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i += 32) {
    await Promise.all(Array.from({ length: Math.min(32, n - i) }, (_, k) =>
      admin.ok('POST', '/vm-instances', { params: { name: `${tag}-${i + k}`, memorySize: 64 * MiB, cpuNum: 1, hostUuid } })));
  }
}

async function evacuate(admin: Admin, source: string, quantity: number): Promise<{ ms: number; migrated: number }> {
  await admin.config('kvm', 'vm.migrationQuantity', String(quantity));
  const r = await admin.job('PUT', `/hosts/${source}/actions`, { changeHostState: { stateEvent: 'maintain' } }, 2);
  if (r.status !== 200) throw new Error(`maintenance failed: ${JSON.stringify(r.body)}`);
  await admin.ok('PUT', `/hosts/${source}/actions`, { changeHostState: { stateEvent: 'enable' } });
  return { ms: r.ms, migrated: r.body.evacuation.migrated.length };
}

async function destroyAll(c: RunningController, admin: Admin): Promise<void> {
  const all = await c.core.repo.all<{ uuid: string }>('vm');
  for (let i = 0; i < all.length; i += 32) await Promise.all(all.slice(i, i + 32).map((v) => admin.ok('DELETE', `/vm-instances/${v.uuid}`)));
}

async function evacuationFigures(): Promise<void> {
  log('== Evacuation (maintenance of one host; simulated migrations) ==');
  const c = await startController({ dataDir: tmp('hk-bench-vms-'), port: 0, host: '127.0.0.1', adminPassword: PASSWORD, log: silent });
  const admin = new Admin(c.port);
  await admin.login();
  // 1,000 one-CPU VMs on one 32-CPU simulated host need more than the default x10.
  await admin.config('host', 'cpu.overProvisioning.ratio', '40');
  const rows: string[][] = [];
  const clA = await cluster(admin, 'evac');
  const a = await fleet(c, admin, clA, 5, '127.5.0.1', 200);
  for (const q of [1, 2, 4, 8]) {
    await fill(admin, a[0]!.uuid, EVAC_VMS, `q${q}`);
    const r = await evacuate(admin, a[0]!.uuid, q);
    const ideal = Math.ceil(EVAC_VMS / q) * 200;
    rows.push([`${EVAC_VMS} VMs, 200 ms each`, String(q), String(r.migrated), fmtMs(ideal), fmtMs(r.ms), `${(r.ms / ideal).toFixed(2)}x`]);
    await destroyAll(c, admin);
  }
  const clB = await cluster(admin, 'big');
  const b = await fleet(c, admin, clB, 9, '127.6.0.1', 50);
  await fill(admin, b[0]!.uuid, BIG_VMS, 'big');
  const r = await evacuate(admin, b[0]!.uuid, 16);
  const ideal = Math.ceil(BIG_VMS / 16) * 50;
  rows.push([`${BIG_VMS} VMs, 50 ms each`, '16', String(r.migrated), fmtMs(ideal), fmtMs(r.ms), `${(r.ms / ideal).toFixed(2)}x`]);
  log(table(['host in maintenance', 'quantity', 'migrated', 'ideal', 'measured', 'ratio'], rows));
  log('(ideal = ceil(VMs / quantity) x migration time; targets: <= 1.2x for 100 VMs, <= 1.3x for 1,000)');
  for (const f of fleets.splice(0)) await f.stop();
  await c.close();
}

async function allocationFigures(): Promise<void> {
  log('');
  log(`== Allocation at ${HOSTS.toLocaleString('en')} hosts, ${(HOSTS * VMS_PER_HOST).toLocaleString('en')} VMs ==`);
  const dir = tmp('hk-bench-alloc-');
  const seeded = await seedStore(dir, { hosts: HOSTS, vmsPerHost: VMS_PER_HOST, clusters: 50, seed: 1 });
  // The seeded rows carry no used/available figures yet: compute them as the controller does.
  {
    const core = await openCore({ dataDir: dir, adminPassword: PASSWORD, log: silent });
    for (let i = 0; i < seeded.hosts.length; i += 500) {
      await core.repo.transaction(async (tx) => { for (const h of seeded.hosts.slice(i, i + 500)) await recompute(tx, h.uuid, core.configs); });
    }
    await core.close();
  }
  const c = await startController({ dataDir: dir, port: 0, host: '127.0.0.1', adminPassword: PASSWORD, log: silent, loadHosts: false });
  const { repo, configs } = c.core;
  const req = { memorySize: 2 * 1024 ** 3, cpuNum: 2 };
  const time = (fn: () => Promise<unknown>) => async () => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  const whole = time(async () => pickBest(await snapshotFor(repo, configs, await c.core.reservations.resolver(), req), req));
  const scoped = time(async () => pickBest(await snapshotFor(repo, configs, await c.core.reservations.resolver(), { ...req, clusterUuid: seeded.clusterUuids[0] }), { ...req, clusterUuid: seeded.clusterUuids[0] }));
  const ws: number[] = [];
  const ss: number[] = [];
  for (let i = 0; i < 20; i++) await whole();
  for (let i = 0; i < SAMPLES; i++) {
    ws.push(await whole());
    ss.push(await scoped());
  }
  // CreateVmInstance into a live cluster of this big store.
  const admin = new Admin(c.port);
  await admin.login();
  const live = await cluster(admin, 'live');
  await fleet(c, admin, live, 4, '127.7.0.1', 0);
  const creates: number[] = [];
  for (let i = 0; i < Math.min(SAMPLES, 300); i++) {
    const r = await admin.job('POST', '/vm-instances', { params: { name: `c-${i}`, memorySize: 64 * MiB, cpuNum: 1, clusterUuid: live } }, 0);
    if (r.status !== 200) throw new Error(`create failed: ${JSON.stringify(r.body)}`);
    if (i >= 10) creates.push(r.ms);
  }
  const baseline: number[] = [];
  for (let i = 0; i < 200; i++) baseline.push((await admin.http.request('GET', '/zstack/v1/zones?limit=1')).ms);
  const row = (name: string, s: number[], target: string) => {
    const x = summarize(s);
    return [name, fmtMs(x.median), fmtMs(x.p95), target];
  };
  log(table(['measure', 'median', 'p95', 'target'], [
    row(`placement decision, all ${HOSTS.toLocaleString('en')} hosts in scope`, ws, '< 2 ms'),
    row('placement decision, one cluster in scope', ss, ''),
    row('CreateVmInstance end to end (202, job 200; simulator)', creates, '< 20 ms'),
    row('baseline: authed GET /zones?limit=1, same run', baseline, ''),
  ]));
  for (const f of fleets.splice(0)) await f.stop();
  await c.close();
}

await evacuationFigures();
await allocationFigures();
process.exit(0);
