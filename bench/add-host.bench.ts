/**
 * `npm run bench:add-host`: AddKVMHost end to end on this machine, against real test hosts
 * (network + mount namespaces with a real sshd each, test/hosts; Node already present, as
 * the figure asks), through the REST API: SSH login with the password, key
 * installation, the bundled playbook with ansible-playbook, the agent started under its
 * supervisor, the connect flow.
 *
 * Prints: one host added alone (RUNS times, median), then BATCH hosts added at once (the same
 * hosts, deleted and re-added, so every run is a first install), the ratio of the two, and
 * the time per step (SSH, playbook, connect) from the deployer's own timings. Needs root,
 * ansible-core, openssh-server (npm test provisions them).
 * Env: BENCH_RUNS (3), BENCH_BATCH (10).
 */
import http from 'node:http';
import { Writable } from 'node:stream';
import axios, { type AxiosInstance } from 'axios';
import pino from 'pino';
import { startController } from '../controller/server.ts';
import { backoffDelay } from '../protocol/backoff.ts';
import { createTestHosts, type TestHost, testHostsSupport } from '../test/hosts/testhosts.ts';
import { intEnv, log, onExit } from './common.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median } from './stats.ts';

/** CPU seconds the whole machine spent (all processes: controller, ansible, sshd, the hosts' side). */
function machineCpuSeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
  return busy / 100;
}

const RUNS = intEnv('BENCH_RUNS', 3, 1);
const BATCH = intEnv('BENCH_BATCH', 10, 2);
const PASSWORD = 'bench-admin-password';

const support = await testHostsSupport();
if (!support.ok) {
  log(`cannot run: ${support.why}`);
  process.exit(1);
}

const dataDir = mkdtempSync(join(tmpdir(), 'hk-bench-add-'));
let hosts: TestHost[] = [];
let keepAlive: http.Agent | undefined;
onExit(() => rmSync(dataDir, { recursive: true, force: true }));

interface StepTimes { ssh: number; playbook: number; connect: number }
const timings = new Map<string, StepTimes>();
const sink = new Writable({
  write(chunk, _e, cb) {
    for (const line of String(chunk).split('\n').filter(Boolean)) {
      const l = JSON.parse(line);
      if (l.msg === 'host added and connected') timings.set(l.host, l.seconds);
    }
    cb();
  },
});

const c = await startController({
  dataDir, port: 0, host: '0.0.0.0', adminPassword: PASSWORD, log: pino({ level: 'info' }, sink), sync: true,
  deploy: { hypervisor: 'simulator' },
});
try {
  hosts = await createTestHosts(Math.max(BATCH, 1), { prefix: 'hkb', first: 60 });
  // axios with one keep-alive connection: the bench's own requests stay cheap, since they
  // count in the machine CPU figure. No proxy from the environment (the controller is local),
  // a timeout per request (a job's work is polled, not waited for), every status answered,
  // job polls retried with the one backoff policy.
  keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const client: AxiosInstance = axios.create({
    baseURL: `http://127.0.0.1:${c.port}`, httpAgent: keepAlive, proxy: false, timeout: 60_000, maxRedirects: 0, validateStatus: () => true,
  });
  const login = await client.put('/zstack/v1/accounts/login', { logInByAccount: { accountName: 'admin', password: PASSWORD } });
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${JSON.stringify(login.data)}`);
  client.defaults.headers.common.authorization = `OAuth ${login.data.inventory.uuid}`;
  /** A job poll dropped by the network is asked again (protocol/backoff.ts); a write is not: it may have started a job. */
  const poll = async (job: string) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await client.get(job);
      } catch (err) {
        if (attempt >= 3) throw err;
        await new Promise((ok) => setTimeout(ok, backoffDelay({ initialMs: 200, maxMs: 2_000 }, attempt)));
      }
    }
  };
  /** Calls the API and follows the job (polled every 250 ms) to its answer. */
  const api = async (method: string, path: string, body?: unknown): Promise<any> => {
    let a = await client.request({ method, url: `/zstack/v1${path}`, data: body });
    if (a.status === 202) {
      const job = new URL(a.data.location).pathname;
      do {
        await new Promise((ok) => setTimeout(ok, 250));
        a = await poll(job);
      } while (a.status === 202);
    }
    return a.data === '' ? {} : a.data;
  };
  const zone = await api('POST', '/zones', { params: { name: 'z' } });
  const cl = await api('POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: 'c', hypervisorType: 'KVM' } });
  const clusterUuid = cl.inventory.uuid;
  await c.core.deployer.agentBundle();

  const addOne = async (h: TestHost): Promise<{ ms: number; uuid: string }> => {
    const t0 = performance.now();
    const r = await api('POST', '/hosts/kvm', { params: { name: h.name, managementIp: h.ip, clusterUuid, username: 'root', password: h.rootPassword } });
    if (r.inventory?.status !== 'Connected') throw new Error(`adding ${h.ip} failed: ${JSON.stringify(r)}`);
    return { ms: performance.now() - t0, uuid: r.inventory.uuid };
  };
  /** Deletes the host and wipes what the playbook installed, so the next add is a first install. */
  const reset = async (h: TestHost, uuid: string) => {
    await api('DELETE', `/hosts/${uuid}`);
    for (let i = 0; i < 100 && (await h.exec('/opt/hostkeeper/bin/hostkeeper-agentctl status')).code === 0; i++) await new Promise((ok) => setTimeout(ok, 100));
    await h.exec('rm -rf /opt/hostkeeper /etc/hostkeeper/* /var/lib/hostkeeper-agent/* /root/.ssh');
  };

  const singles: number[] = [];
  const singleCpu: number[] = [];
  const steps: StepTimes[] = [];
  for (let i = 0; i < RUNS; i++) {
    const cpu0 = machineCpuSeconds();
    const { ms, uuid } = await addOne(hosts[0]!);
    singleCpu.push(machineCpuSeconds() - cpu0);
    singles.push(ms);
    steps.push(timings.get(uuid)!);
    await reset(hosts[0]!, uuid);
  }
  // Nothing to change: the playbook again on a deployed host, and ReconnectHost (SSH drift
  // check, no playbook, connect).
  const { uuid: kept } = await addOne(hosts[0]!);
  const row = (await c.core.repo.get<any>('host', kept))!;
  const again: number[] = [];
  const againCpu: number[] = [];
  const reconnects: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const cpu1 = machineCpuSeconds();
    const t1 = performance.now();
    const o = await c.core.hosts.queue.run(kept, () => c.core.deployer.playbook(row));
    again.push(performance.now() - t1);
    againCpu.push(machineCpuSeconds() - cpu1);
    if (!o.ok || o.changed !== 0) throw new Error(`a run with nothing to change changed ${o.changed}: ${o.message ?? ''}`);
    const t2 = performance.now();
    const r = await api('PUT', `/hosts/${kept}/actions`, { reconnectHost: {} });
    if (r.inventory?.status !== 'Connected') throw new Error(`reconnect failed: ${JSON.stringify(r)}`);
    reconnects.push(performance.now() - t2);
  }
  await reset(hosts[0]!, kept);

  const batch = hosts.slice(0, BATCH);
  const t0 = performance.now();
  const cpu0 = machineCpuSeconds();
  const added = await Promise.all(batch.map((h) => addOne(h)));
  const batchMs = performance.now() - t0;
  const batchCpu = machineCpuSeconds() - cpu0;
  const batchSteps = added.map((a) => timings.get(a.uuid)!);

  const one = median(singles);
  const f = (s: number) => `${(s / 1000).toFixed(1)} s`;
  const step = (xs: StepTimes[], k: keyof StepTimes) => `${median(xs.map((x) => x[k])).toFixed(1)} s`;
  log(`AddKVMHost, one host, Node present (median of ${RUNS}): ${f(one)}   (runs: ${singles.map(f).join(', ')})   target < 30 s`);
  log(`  machine CPU for one add (all processes, both sides of SSH): ${median(singleCpu).toFixed(1)} s`);
  log(`  per step (median): ssh ${step(steps, 'ssh')}, playbook ${step(steps, 'playbook')}, connect ${step(steps, 'connect')}`);
  log(`playbook again with nothing to change (median of ${RUNS}): ${f(median(again))}, changed=0, machine CPU ${median(againCpu).toFixed(1)} s`);
  log(`ReconnectHost with nothing to change (SSH check, no playbook, connect; median of ${RUNS}): ${f(median(reconnects))}`);
  log(`AddKVMHost, ${BATCH} hosts at once: ${f(batchMs)} = ${(batchMs / one).toFixed(2)}x one host   target < 2x`);
  log(`  machine CPU for the ${BATCH}: ${batchCpu.toFixed(1)} s = ${(batchCpu / BATCH).toFixed(1)} s per host (2 cores: ${(batchCpu / 2).toFixed(1)} s is the floor of the wall time)`);
  log(`  per step (median over the ${BATCH}): ssh ${step(batchSteps, 'ssh')}, playbook ${step(batchSteps, 'playbook')}, connect ${step(batchSteps, 'connect')}`);
} finally {
  keepAlive?.destroy();
  await c.close();
  await Promise.all(hosts.map((h) => h.destroy()));
}
