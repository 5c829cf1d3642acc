/**
 * `npx tsx bench/agent-rss.bench.ts`: the agent's idle resident memory (the target is < 60 MB
 * for one agent process), and what one more agent costs inside a fleet process.
 *
 * A real controller runs IN this process (startController on a temp data dir, free ports);
 * the agent is the bundle (`node <tmp>/hostkeeper-agent.mjs`, built first into a temp dir with
 * agent/build.ts: hosts run the bundle, and tsx alone costs ~35 MB), started the way the
 * README shows: `--controller URL --bootstrap-token T --ca-cert-hash H`. So the figure
 * includes what the agent's own calls to the controller load and keep: CA discovery, the
 * registration over TLS, then the controller's connect (facts, capacity, VM list) and its
 * channel with heartbeats.
 *
 * 1. One agent per hypervisor driver. simulator: wait until the controller tracks the host
 *    (Connected, channel open), then restart it on its state dir (secret and certificate:
 *    nothing to ask the controller) and wait until it is tracked again; libvirt: on a machine
 *    without virsh its connect fails, so "registered and its connect tried" is what is waited
 *    for (the libvirt driver and systeminformation are loaded then, which is what makes it the
 *    larger of the two). Each time: IDLE_MS quiet, then SAMPLES readings of VmRSS
 *    (/proc/<pid>/status) SAMPLE_EVERY_MS apart; the median is printed. Before those, the
 *    same bundle with the simulator and an agent.json holding a secret, which nobody talks to
 *    (no registration, no TLS client, no connect).
 * 2. The fleet (`hostkeeper-fleet.mjs --per-process N`: one child holding every agent) with N
 *    and 2N agents, each against a fresh controller, all tracked (a channel open to each),
 *    idle, the child's RSS: (RSS(2N) - RSS(N)) / N is one more agent's cost. On 2 vCPUs the
 *    controller may see half the fleet drop while it connects (its brake logs that and holds
 *    reconnects for a while): the figure is taken once all are tracked anyway.
 *
 * Env: BENCH_BUNDLE_DIR (bundles built elsewhere, e.g. from another commit with
 * `npx tsx agent/build.ts --out DIR`, to compare; default: built now from this tree),
 * BENCH_SAMPLES (5), BENCH_IDLE_MS (3000), BENCH_FLEET (1000; 0 skips the fleet),
 * BENCH_DRIVERS (simulator,libvirt; empty: none), BENCH_FIRST_IP (random 127.150-199.0.1:
 * away from the fleet's default 127.1.0.1, which tests use).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import axios, { type AxiosInstance } from 'axios';
import pino from 'pino';
import { buildAgent } from '../agent/build.ts';
import { type RunningController, startController } from '../controller/server.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';
import { median } from './stats.ts';

const SAMPLES = intEnv('BENCH_SAMPLES', 5, 1);
const IDLE_MS = intEnv('BENCH_IDLE_MS', 3000);
const SAMPLE_EVERY_MS = 500;
const FLEET = intEnv('BENCH_FLEET', 1000);
const DRIVERS = (process.env.BENCH_DRIVERS ?? 'simulator,libvirt').split(',').filter(Boolean) as ('simulator' | 'libvirt')[];
const FIRST_IP = process.env.BENCH_FIRST_IP || `127.${150 + Math.floor(Math.random() * 50)}.0.1`;
const PASSWORD = 'bench-admin-password';

const tmp = mkdtempSync(join(tmpdir(), 'hk-bench-rss-'));
const children = new Set<ChildProcess>();
onExit(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

async function medianRss(pid: number): Promise<{ mb: number; all: number[] }> {
  const all: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    if (i) await sleep(SAMPLE_EVERY_MS);
    all.push(rssKb(pid) / 1024);
  }
  return { mb: median(all), all };
}

async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, what: string, ms: number, child?: ChildProcess): Promise<T> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const v = await fn();
    if (v) return v;
    if (child && child.exitCode !== null) throw new Error(`${what}: the process exited (${child.exitCode})`);
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

interface Setup {
  ctl: RunningController;
  token: string;
  caCertHash: string;
}

/** A controller on a fresh data dir, a zone, a cluster and a bootstrap token (through the REST API, with axios). */
async function controller(name: string): Promise<Setup> {
  const ctl = await startController({ dataDir: join(tmp, `ctl-${name}`), port: 0, host: '127.0.0.1', adminPassword: PASSWORD, log: pino({ level: 'error' }) });
  const api: AxiosInstance = axios.create({ baseURL: `${ctl.url}/zstack/v1`, timeout: 30_000, proxy: false, validateStatus: () => true });
  const login = await api.put('/accounts/login', { logInByAccount: { accountName: 'admin', password: PASSWORD } });
  if (login.status !== 200) throw new Error(`login answered ${login.status}`);
  api.defaults.headers.common.authorization = `OAuth ${login.data.inventory.uuid}`;
  const create = async (path: string, params: object) => {
    const a = await api.post(path, { params });
    if (a.status !== 202) throw new Error(`POST ${path} answered ${a.status}: ${JSON.stringify(a.data)}`);
    const job = new URL(a.data.location).pathname.replace('/zstack/v1', '');
    return until(async () => {
      const j = await api.get(job);
      if (j.status === 200) return j.data.inventory as { uuid: string };
      if (j.status !== 202) throw new Error(`GET ${job} answered ${j.status}: ${JSON.stringify(j.data)}`);
      return undefined;
    }, `job ${job}`, 30_000);
  };
  const zone = await create('/zones', { name: 'rss-zone' });
  const cluster = await create('/clusters', { zoneUuid: zone.uuid, name: 'rss-cluster', hypervisorType: 'KVM' });
  const tk = await api.post('/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.uuid, ttlSeconds: 3600 } });
  if (tk.status !== 200) throw new Error(`bootstrap token answered ${tk.status}: ${JSON.stringify(tk.data)}`);
  return { ctl, token: tk.data.inventory.token, caCertHash: tk.data.inventory.caCertHash };
}

function run(file: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [file, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', (code) => {
    children.delete(child);
    if (code) log(`  ${file.split('/').pop()} exited ${code}: ${out.trim().split('\n').slice(-3).join(' | ')}`);
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

async function oneAgent(bundle: string, driver: 'simulator' | 'libvirt', ip: string): Promise<string> {
  const s = await controller(`one-${driver}`);
  const child = run(bundle, ['--listen', `${ip}:7070`, '--controller', s.ctl.url, '--bootstrap-token', s.token, '--ca-cert-hash', s.caCertHash,
    '--state-dir', join(tmp, `agent-${driver}`), '--hypervisor', driver, '--log-level', 'warn']);
  const t0 = performance.now();
  try {
    if (driver === 'simulator') {
      await until(() => s.ctl.core.agents.trackedCount >= 1, 'the host to be tracked (Connected, channel open)', 60_000, child);
    } else {
      // Registered, and the controller's connect has been tried (without virsh it fails, and the host is Disconnected).
      await until(async () => {
        const [h] = await s.ctl.core.repo.find<{ uuid: string; status?: string }>('host', {});
        return h?.status === 'Disconnected' || h?.status === 'Connected';
      }, 'the host to be registered and its connect tried', 60_000, child);
    }
    const readyMs = performance.now() - t0;
    await sleep(IDLE_MS);
    const r = await medianRss(child.pid!);
    let line = `agent bundled ${driver.padEnd(9)}: ${driver === 'simulator' ? 'tracked' : 'connect tried'} ${Math.round(readyMs)} ms after spawn; idle RSS ${r.mb.toFixed(1)} MB` +
      ` (median of ${SAMPLES}: ${r.all.map((x) => x.toFixed(1)).join(' ')})`;
    if (driver === 'simulator') {
      // The same agent restarted on its state dir (agent.json, its certificate): what a host
      // runs after a reboot or an upgrade. The controller reconnects it by itself.
      await stop(child);
      await until(() => s.ctl.core.agents.trackedCount === 0, 'the controller to notice the agent stopped', 30_000);
      const again = run(bundle, ['--listen', `${ip}:7070`, '--state-dir', join(tmp, `agent-${driver}`), '--hypervisor', driver, '--log-level', 'warn']);
      try {
        await until(() => s.ctl.core.agents.trackedCount >= 1, 'the restarted agent to be tracked again', 60_000, again);
        await sleep(IDLE_MS);
        const r2 = await medianRss(again.pid!);
        line += `\nagent bundled ${driver.padEnd(9)}: restarted on its state dir (secret and certificate), tracked again; idle RSS ${r2.mb.toFixed(1)} MB` +
          ` (median of ${SAMPLES}: ${r2.all.map((x) => x.toFixed(1)).join(' ')})`;
      } finally {
        await stop(again);
      }
    }
    return line;
  } finally {
    await stop(child);
    await s.ctl.close();
  }
}

async function fleet(bundle: string, count: number, firstIp: string): Promise<{ rssMb: number; upMs: number }> {
  const s = await controller(`fleet-${count}`);
  const parent = run(bundle, ['--count', String(count), '--per-process', String(count), '--controller', s.ctl.url, '--bootstrap-token', s.token,
    '--ca-cert-hash', s.caCertHash, '--state-dir', join(tmp, `fleet-${count}`), '--first-ip', firstIp, '--log-level', 'error']);
  const t0 = performance.now();
  try {
    await until(() => s.ctl.core.agents.trackedCount >= count, `${count} hosts tracked`, Math.max(120_000, count * 60), parent);
    const upMs = performance.now() - t0;
    const childPid = Number(readFileSync(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    await sleep(IDLE_MS);
    const r = await medianRss(childPid);
    return { rssMb: r.mb, upMs };
  } finally {
    await stop(parent);
    await s.ctl.close();
  }
}

/** The bundle with a secret in agent.json and nobody talking to it. */
async function standalone(bundle: string, ip: string): Promise<string> {
  const dir = join(tmp, 'agent-standalone');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'agent.json'), JSON.stringify({ hostUuid: 'a'.repeat(32), secret: 's'.repeat(32) }), { mode: 0o600 });
  const child = run(bundle, ['--listen', `${ip}:7070`, '--state-dir', dir, '--hypervisor', 'simulator', '--log-level', 'warn']);
  try {
    await sleep(1000 + IDLE_MS);
    const r = await medianRss(child.pid!);
    return `agent bundled simulator, not registered, nobody talking to it: idle RSS ${r.mb.toFixed(1)} MB (median of ${SAMPLES}: ${r.all.map((x) => x.toFixed(1)).join(' ')})`;
  } finally {
    await stop(child);
  }
}

const bundleDir = process.env.BENCH_BUNDLE_DIR ? resolve(process.env.BENCH_BUNDLE_DIR) : join(tmp, 'dist');
const [bundle, fleetBundle] = process.env.BENCH_BUNDLE_DIR
  ? ['hostkeeper-agent.mjs', 'hostkeeper-fleet.mjs'].map((f) => join(bundleDir, f))
  : await buildAgent(bundleDir);
log(`agent RSS bench: node ${process.version}; bundles in ${bundleDir}; samples ${SAMPLES}, idle ${IDLE_MS} ms, first ip ${FIRST_IP}`);
const base = FIRST_IP.split('.').slice(0, 2).join('.');
let k = 0;
log(await standalone(bundle!, `${base}.250.${++k}`));
for (const d of DRIVERS) log(await oneAgent(bundle!, d, `${base}.250.${++k}`));
if (FLEET > 0) {
  const one = await fleet(fleetBundle!, FLEET, FIRST_IP);
  const two = await fleet(fleetBundle!, 2 * FLEET, FIRST_IP);
  const perKb = ((two.rssMb - one.rssMb) * 1024) / FLEET;
  log(`fleet bundled, one process: ${FLEET} agents tracked in ${(one.upMs / 1000).toFixed(1)} s, child RSS ${one.rssMb.toFixed(0)} MB; ` +
    `${2 * FLEET}: ${(two.upMs / 1000).toFixed(1)} s, ${two.rssMb.toFixed(0)} MB; one more agent (with its channel) ~${perKb.toFixed(1)} KB`);
}
process.exit(0);
