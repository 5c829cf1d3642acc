/**
 * `npx tsx bench/agents.bench.ts`: how the controller's command channel holds up with a large
 * fleet of real agents (agent/fleet.ts: simulated hosts, real HTTP servers on 127.x.y.z:7070).
 *
 * The controller runs IN this process (startController on a temp data dir), so
 * `process.cpuUsage()` is the controller's CPU (plus this script's, which is idle while a
 * figure is taken). The fleet runs as `node --import tsx agent/fleet.ts` in its own process
 * group (several children of at most BENCH_PER_PROCESS agents: the open-files limit is
 * 20,000 per process); the detection agents are single `agent/main.ts` processes.
 *
 * 1. Registration: the fleet registers with a bootstrap token; time from spawning it until
 *    all BENCH_HOSTS hosts are tracked (Connected, channel open).
 * 2. Ping sweep: `core.agents.pingAll()` once to warm up, then BENCH_SWEEPS times measured,
 *    ping.parallelismDegree 100.
 *    While sweeping, ping.interval is raised to BENCH_SWEEP_PING_INTERVAL s so the tracker's
 *    own pings do not mix in (the channels' heartbeats still do: the idle CPU rate with
 *    every channel open is measured just before, and the per-ping CPU is also shown net of it).
 *    Then bare HTTP loops from this process to 100 fleet agents, BENCH_BARE_REQUESTS requests
 *    at concurrency 100 over a keep-alive https.Agent (agents speak TLS; the controller's client certificate): POST /host/echo signed (200; the
 *    secrets come from the in-process controller's store) and unsigned (401, which the agent
 *    answers with `connection: close`, so that loop opens a TCP connection per request).
 * 3. Controller restart with every host connected: close(), then startController on the same
 *    data dir and port; time until all BENCH_HOSTS are tracked again; RSS.
 * 4. Detection (fleet still up, ping.interval back at 60): BENCH_TRIALS times start one agent
 *    process on 127.0.8.N, wait until Connected, kill -9 it, time until the store says
 *    Disconnected (5 ms polling). Then BENCH_FREEZE_TRIALS times the same with SIGSTOP
 *    (SIGCONT and kill -9 afterwards).
 *
 * Environment: BENCH_HOSTS (10000), BENCH_TRIALS (20), BENCH_FREEZE_TRIALS (5),
 * BENCH_PER_PROCESS (2500), BENCH_SWEEPS (5), BENCH_BARE_REQUESTS (10000),
 * BENCH_SWEEP_PING_INTERVAL (3600), BENCH_FIRST_IP (127.42.0.1: away from the fleet's default
 * 127.1.0.1, which someone may be using), BENCH_TMP (parent of the temp dir),
 * BENCH_CPU_PROF (a directory: CPU profiles of the sweep and restart phases are written
 * there, taken in-process with node:inspector), BENCH_RESTART_LOAD_PARALLELISM (0: restart
 * with the defaults, load.all = true; N: load.all = false and load.parallelismDegree = N, so
 * the connect flows run N at a time, start to finish, for comparison).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { type RunningController, startController } from '../controller/server.ts';
import type { Core } from '../controller/core.ts';
import { intToIp, ipToInt } from '../agent/fleet-core.ts';
import { AGENT_PATHS, signedHeaders } from '../protocol/agent.ts';
import type { HostRow } from '../protocol/resources.ts';
import { Client } from './http.ts';
import { fmtBytes, fmtMs, summarize, table } from './stats.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';



const HOSTS = intEnv('BENCH_HOSTS', 10_000, 100);
const TRIALS = intEnv('BENCH_TRIALS', 20);
const FREEZE_TRIALS = intEnv('BENCH_FREEZE_TRIALS', 5);
const PER_PROCESS = intEnv('BENCH_PER_PROCESS', 2500, 1);
const SWEEPS = intEnv('BENCH_SWEEPS', 5, 1);
const BARE_REQUESTS = intEnv('BENCH_BARE_REQUESTS', 10_000, 100);
const SWEEP_PING_INTERVAL = intEnv('BENCH_SWEEP_PING_INTERVAL', 3600, 61);
const FIRST_IP = process.env.BENCH_FIRST_IP || '127.42.0.1';
const RESTART_LOAD_PARALLELISM = intEnv('BENCH_RESTART_LOAD_PARALLELISM', 0);
const CPU_PROF = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const CONCURRENCY = 100;
const BARE_AGENTS = 100;
const PING_PARALLELISM = 100;
const ADMIN_PASSWORD = 'bench-admin-password';
const POLL_MS = 5;
/** The detection agents: 127.0.8.1..TRIALS (kill -9), 127.0.8.101.. (SIGSTOP). */
const KILL_NET = '127.0.8.';
const FREEZE_BASE = 100;

if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(FIRST_IP)) throw new Error(`BENCH_FIRST_IP[${FIRST_IP}] must be a 127.x.y.z address`);
if (TRIALS > FREEZE_BASE || FREEZE_TRIALS > 154) throw new Error(`BENCH_TRIALS <= ${FREEZE_BASE} and BENCH_FREEZE_TRIALS <= 154 (they live in ${KILL_NET}0/24)`);

// ---- cleanup: the fleet's process group, the agents and the temp dir go on every exit path ----

let tempDir: string | undefined;
let fleet: Fleet | undefined;
const agentProcs = new Set<ChildProcess>();

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

function cleanupSync(): void {
  for (const c of agentProcs) {
    if (!alive(c)) continue;
    try {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  agentProcs.clear();
  if (fleet && alive(fleet.child) && fleet.child.pid) {
    try {
      process.kill(-fleet.child.pid, 'SIGKILL'); // its own group: the fleet parent and its children
    } catch {
      // already gone
    }
  }
  fleet = undefined;
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  tempDir = undefined;
}
onExit(cleanupSync);

// ---- small tools ---------------------------------------------------------------------------



const fmtUs = (us: number) => (Number.isFinite(us) ? `${us.toFixed(1)} µs` : '-');
const fmtS = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** CPU of this process (µs, user + system) since `from`. */
function cpuSince(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return d.user + d.system;
}

/** Polls `fn` every `everyMs` until it is truthy; throws naming `what` after `deadlineMs`. */
async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, what: string, deadlineMs: number, everyMs = POLL_MS, abort?: () => string | undefined): Promise<T> {
  const end = performance.now() + deadlineMs;
  while (performance.now() < end) {
    const v = await fn();
    if (v) return v;
    const why = abort?.();
    if (why) throw new Error(`${what}: ${why}`);
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${fmtMs(deadlineMs)} waiting for ${what}`);
}

/** CPU (ms) of every live process of a process group, from /proc (10 ms ticks). */
function groupCpuMs(pgid: number | undefined): number {
  if (!pgid) return NaN;
  const tick = 1000 / 100; // CLK_TCK is 100 on Linux
  let total = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid) total += (Number(f[11]) + Number(f[12])) * tick;
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}


/** Controller logs (warn and up) are kept, not printed: the last lines and a count by level. */
class LogTap {
  lines: string[] = [];
  /** Every error (and fatal) line, up to 20: a brake or a failed start-up shows here. */
  errors: string[] = [];
  counts = new Map<string, number>();
  write(s: string): void {
    let level = '?';
    try {
      level = pino.levels.labels[(JSON.parse(s) as { level: number }).level] ?? '?';
    } catch {
      // not JSON
    }
    this.counts.set(level, (this.counts.get(level) ?? 0) + 1);
    this.lines.push(s.trimEnd());
    if ((level === 'error' || level === 'fatal') && this.errors.length < 20) this.errors.push(s.trimEnd());
    if (this.lines.length > 40) this.lines.shift();
  }
  summary(): string {
    return [...this.counts].map(([l, n]) => `${n} ${l}`).join(', ') || 'none';
  }
}

/** In-process CPU profile of one phase (BENCH_CPU_PROF). */
async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!CPU_PROF) return fn();
  const s = new Session();
  s.connect();
  await s.post('Profiler.enable');
  await s.post('Profiler.setSamplingInterval', { interval: 200 });
  await s.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await s.post('Profiler.stop');
    mkdirSync(CPU_PROF, { recursive: true });
    const file = join(CPU_PROF, `agents-bench-${name}-${process.pid}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    s.disconnect();
    log(`  CPU profile of ${name}: ${file}`);
  }
}

// ---- the admin API (zone, cluster, bootstrap token) -----------------------------------------

async function login(client: Client): Promise<void> {
  const a = await client.request('PUT', '/zstack/v1/accounts/login', { logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } }, { auth: false });
  if (a.status !== 200) throw new Error(`login answered ${a.status}: ${a.body}`);
  client.session = JSON.parse(a.body).inventory.uuid as string;
}

/** POST that answers 202 + a job location: follows it until the inventory is there. */
async function create(client: Client, path: string, params: Record<string, unknown>): Promise<{ uuid: string }> {
  const a = await client.request('POST', path, { params });
  if (a.status !== 202) throw new Error(`POST ${path} answered ${a.status}: ${a.body.slice(0, 300)}`);
  const loc = new URL(JSON.parse(a.body).location as string).pathname;
  return until(async () => {
    const j = await client.request('GET', loc);
    if (j.status === 200) return JSON.parse(j.body).inventory as { uuid: string };
    if (j.status !== 202) throw new Error(`GET ${loc} answered ${j.status}: ${j.body.slice(0, 300)}`);
    return undefined;
  }, `job ${loc}`, 30_000, 20);
}

async function setHostConfig(core: Core, name: string, value: string): Promise<void> {
  const row = await core.repo.transaction((tx) => core.configs.prepareUpdate(tx, 'host', name, value));
  core.configs.applied(row);
}

// ---- processes -------------------------------------------------------------------------------

interface Fleet {
  child: ChildProcess;
  output: () => string;
  /** Milliseconds from spawn to the fleet's "agents up" line (all registered), once seen. */
  upMs?: number;
  exitedWith?: string;
}

function spawnFleet(controllerUrl: string, token: string, stateDir: string): Fleet {
  const t0 = performance.now();
  const args = ['--import', 'tsx', 'agent/fleet.ts', '--count', String(HOSTS), '--controller', controllerUrl, '--bootstrap-token', token,
    '--state-dir', stateDir, '--first-ip', FIRST_IP, '--per-process', String(PER_PROCESS), '--log-level', 'error'];
  // Own process group, so cleanup reaches the fleet's children even if its parent is gone.
  const child = spawn(process.execPath, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const f: Fleet = { child, output: () => out };
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString('utf8')).slice(-8000);
    if (f.upMs === undefined && /agents up on/.test(out)) f.upMs = performance.now() - t0;
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', (code, signal) => (f.exitedWith = signal ?? `code ${code}`));
  return f;
}

interface AgentProc {
  child: ChildProcess;
  ip: string;
  output: () => string;
  exited: Promise<void>;
}

function spawnAgent(ip: string, controllerUrl: string, token: string, stateDir: string): AgentProc {
  const child = spawn(process.execPath, ['--import', 'tsx', 'agent/main.ts', '--listen', `${ip}:7070`, '--controller', controllerUrl,
    '--bootstrap-token', token, '--state-dir', stateDir, '--hypervisor', 'simulator', '--log-level', 'warn'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
  });
  agentProcs.add(child);
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => {
    agentProcs.delete(child);
    r();
  }));
  return { child, ip, output: () => out, exited };
}

// ---- the bare HTTP loop ------------------------------------------------------------------------

interface BareTarget {
  ip: string;
  uuid: string;
  secret: string;
}

/**
 * `requests` POSTs of /host/echo at `CONCURRENCY`: worker w talks to targets[w % n] one
 * request after another over a keep-alive agent. Returns wall ms, CPU µs and the statuses.
 */
async function bareLoop(targets: BareTarget[], requests: number, signed: boolean, tls: Core['pki']): Promise<{ ms: number; cpuUs: number; statuses: Map<number, number>; errors: number }> {
  // Agents speak TLS: keep-alive HTTPS with the controller's client certificate, as the controller calls them.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 4, key: tls.key(), cert: tls.cert(), ca: tls.caBundle, checkServerIdentity: () => undefined });
  const statuses = new Map<number, number>();
  let errors = 0;
  const body = '{}';
  const one = (t: BareTarget) => new Promise<void>((res) => {
    const path = AGENT_PATHS.echo;
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': '2' };
    if (signed) Object.assign(headers, signedHeaders(t.secret, t.uuid, 'POST', path, body, Date.now()));
    const req = https.request({ host: t.ip, port: 7070, path, method: 'POST', agent, headers }, (r) => {
      statuses.set(r.statusCode ?? 0, (statuses.get(r.statusCode ?? 0) ?? 0) + 1);
      r.resume();
      r.on('end', () => res());
      r.on('error', () => {
        errors++;
        res();
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', () => {
      errors++;
      res();
    });
    req.end(body);
  });
  const run = async (total: number) => {
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async (_, w) => {
      for (let i = next++; i < total; i = next++) await one(targets[w % targets.length]!);
    }));
  };
  await run(CONCURRENCY); // warm-up: sockets opened, code hot
  statuses.clear();
  errors = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await run(requests);
  const ms = performance.now() - t0;
  const cpuUs = cpuSince(c0);
  agent.destroy();
  return { ms, cpuUs, statuses, errors };
}

// ---- the run ---------------------------------------------------------------------------------

async function hostByIp(core: Core, ip: string): Promise<HostRow | undefined> {
  return (await core.repo.find<HostRow>('host', { managementIp: ip }))[0];
}

interface Rows {
  [k: string]: string[];
}

async function main(): Promise<void> {
  const parent = process.env.BENCH_TMP ? resolve(process.env.BENCH_TMP) : os.tmpdir();
  tempDir = mkdtempSync(join(parent, 'hk-agents-bench-'));
  const dataDir = join(tempDir, 'controller');
  const fleetDir = join(tempDir, 'fleet');
  const agentsDir = join(tempDir, 'agents');
  const first = ipToInt(FIRST_IP);
  const lastIp = intToIp(first + HOSTS - 1);
  log(`hostkeeper agents bench: node ${process.version}, ${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  log(`hosts ${HOSTS} on ${FIRST_IP}-${lastIp}:7070 (${Math.ceil(HOSTS / PER_PROCESS)} fleet processes of <= ${PER_PROCESS}), sweeps ${SWEEPS}, ` +
    `bare requests ${BARE_REQUESTS} x2, kill trials ${TRIALS}, freeze trials ${FREEZE_TRIALS}, temp ${tempDir}`);

  const tap = new LogTap();
  const logger = pino({ level: 'warn', base: { svc: 'controller' } }, tap);
  let ctl: RunningController = await startController({ dataDir, port: 0, host: '127.0.0.1', adminPassword: ADMIN_PASSWORD, log: logger });
  const port = ctl.port;
  let core = ctl.core;
  const client = new Client(port);
  await login(client);
  const zone = await create(client, '/zstack/v1/zones', { name: 'bench-zone' });
  const cluster = await create(client, '/zstack/v1/clusters', { zoneUuid: zone.uuid, name: 'bench-cluster', hypervisorType: 'KVM' });
  const tk = await client.request('POST', '/zstack/v1/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.uuid, ttlSeconds: 6 * 3600 } });
  if (tk.status !== 200) throw new Error(`bootstrap token answered ${tk.status}: ${tk.body}`);
  const token = JSON.parse(tk.body).inventory.token as string;
  client.close();
  await setHostConfig(core, 'ping.parallelismDegree', String(PING_PARALLELISM));
  log(`controller in-process on ${ctl.url}; data dir ${dataDir}; ping.parallelismDegree ${core.configs.get('host', 'ping.parallelismDegree')}, ` +
    `ping.interval ${core.configs.get('host', 'ping.interval')} s, ping.timeout ${core.configs.get('host', 'ping.timeout')} s`);

  // 1. the fleet registers and gets connected
  const fleetCpu0 = process.cpuUsage();
  const tFleet = performance.now();
  fleet = spawnFleet(ctl.url, token, fleetDir);
  const f = fleet;
  let lastReport = performance.now();
  await until(() => {
    if (performance.now() - lastReport > 10_000) {
      lastReport = performance.now();
      log(`  ... ${core.agents.trackedCount}/${HOSTS} connected after ${fmtS(lastReport - tFleet)} (fds ${openFds()})`);
    }
    return core.agents.trackedCount >= HOSTS;
  }, `${HOSTS} hosts Connected`, Math.max(180_000, HOSTS * 60), 50, () => (f.exitedWith ? `the fleet exited (${f.exitedWith}):\n${f.output()}` : undefined));
  const connectMs = performance.now() - tFleet;
  const connectCpuUs = cpuSince(fleetCpu0);
  await until(() => f.upMs !== undefined, 'the fleet to report all agents up', 60_000, 50, () => (f.exitedWith ? `the fleet exited (${f.exitedWith})` : undefined));
  const fleetLine = /fleet: \d+ agents up.*/.exec(f.output())?.[0] ?? '';
  log(`registration + connect: ${HOSTS} hosts Connected ${fmtS(connectMs)} after spawning the fleet (its own line: "${fleetLine}" at ${fmtS(f.upMs!)}); ` +
    `controller CPU meanwhile ${fmtS(connectCpuUs / 1000)}; RSS ${fmtBytes(process.memoryUsage().rss)}, fds ${openFds()}`);

  // 2. ping sweeps
  await setHostConfig(core, 'ping.interval', String(SWEEP_PING_INTERVAL));
  await sleep(1000);
  const idleMs = 3000;
  const i0 = process.cpuUsage();
  const fi0 = groupCpuMs(f.child.pid);
  const ti0 = performance.now();
  await sleep(idleMs);
  const idleWall = performance.now() - ti0;
  const idleCpuPerMs = cpuSince(i0) / idleWall; // µs of CPU per ms of wall
  const fleetIdlePerMs = (groupCpuMs(f.child.pid) - fi0) / idleWall;
  log(`idle with ${core.agents.trackedCount} channels open (ping.interval ${SWEEP_PING_INTERVAL} s): controller ${(idleCpuPerMs / 10).toFixed(1)}% of a core, ` +
    `fleet processes ${(fleetIdlePerMs * 100).toFixed(1)}% of a core; controller fds ${openFds()}`);

  const sweeps: { ms: number; cpuUs: number; sysUs: number; n: number; fleetMs: number }[] = [];
  let cold: { ms: number; cpuUs: number; n: number } | undefined;
  await profiled('sweep', async () => {
    // Sweep 0 is the warm-up (cold code paths, first timers): printed, not in the figures.
    for (let s = 0; s <= SWEEPS; s++) {
      const before = core.agents.trackedCount;
      const fc0 = groupCpuMs(f.child.pid);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const n = await core.agents.pingAll();
      const ms = performance.now() - t0;
      const cpuUs = cpuSince(c0);
      // Kernel time in this process: on loopback a send also runs the receiving side's TCP
      // processing in the sender's context.
      const sysUs = process.cpuUsage(c0).system;
      const fleetMs = groupCpuMs(f.child.pid) - fc0;
      if (s === 0) cold = { ms, cpuUs, n };
      else sweeps.push({ ms, cpuUs, sysUs, n, fleetMs });
      const after = core.agents.trackedCount;
      log(`  sweep ${s === 0 ? '0 (warm-up)' : s}: ${n} pings in ${fmtMs(ms)}, controller CPU ${fmtMs(cpuUs / 1000)} = ${fmtUs(cpuUs / n)}/ping, ` +
        `fleet CPU ${fmtMs(fleetMs)}; tracked ${before} -> ${after}`);
      await sleep(500);
    }
  });

  // bare HTTP loops to 100 agents spread over the fleet's processes
  const targets: BareTarget[] = [];
  for (let k = 0; k < BARE_AGENTS; k++) {
    const ip = intToIp(first + Math.floor((k * HOSTS) / BARE_AGENTS));
    const h = await hostByIp(core, ip);
    if (!h?.agentSecret) throw new Error(`no host row with a secret for fleet agent ${ip}`);
    targets.push({ ip, uuid: h.uuid, secret: h.agentSecret });
  }
  const signedLoop = await bareLoop(targets, BARE_REQUESTS, true, core.pki);
  log(`  bare loop, signed echo (keep-alive): ${BARE_REQUESTS} in ${fmtMs(signedLoop.ms)}, CPU ${fmtUs(signedLoop.cpuUs / BARE_REQUESTS)}/request, ` +
    `statuses ${JSON.stringify(Object.fromEntries(signedLoop.statuses))}, errors ${signedLoop.errors}`);
  await sleep(500);
  const unsignedLoop = await bareLoop(targets, BARE_REQUESTS, false, core.pki);
  log(`  bare loop, unsigned echo (401 + connection: close): ${BARE_REQUESTS} in ${fmtMs(unsignedLoop.ms)}, CPU ${fmtUs(unsignedLoop.cpuUs / BARE_REQUESTS)}/request, ` +
    `statuses ${JSON.stringify(Object.fromEntries(unsignedLoop.statuses))}, errors ${unsignedLoop.errors}`);

  // 3. restart with every host connected (ping.interval back to its default first)
  await setHostConfig(core, 'ping.interval', '60');
  if (RESTART_LOAD_PARALLELISM > 0) {
    await setHostConfig(core, 'load.all', 'false');
    await setHostConfig(core, 'load.parallelismDegree', String(RESTART_LOAD_PARALLELISM));
  }
  log(`restart with load.all ${core.configs.get('host', 'load.all')}, load.parallelismDegree ${core.configs.get('host', 'load.parallelismDegree')}`);
  const tClose = performance.now();
  await ctl.close();
  const closeMs = performance.now() - tClose;
  const tRestart = performance.now();
  const rc0 = process.cpuUsage();
  let firstMs: number | undefined;
  let halfMs: number | undefined;
  const restarted = await profiled('restart', async () => {
    ctl = await startController({ dataDir, port, host: '127.0.0.1', log: logger });
    const listenMs = performance.now() - tRestart;
    core = ctl.core;
    let last = performance.now();
    await until(() => {
      const n = core.agents.trackedCount;
      if (n > 0 && firstMs === undefined) firstMs = performance.now() - tRestart;
      if (n >= HOSTS / 2 && halfMs === undefined) halfMs = performance.now() - tRestart;
      if (performance.now() - last > 10_000) {
        last = performance.now();
        log(`  ... ${core.agents.trackedCount}/${HOSTS} connected ${fmtS(last - tRestart)} after the restart (fds ${openFds()})`);
      }
      return core.agents.trackedCount >= HOSTS;
    }, `${HOSTS} hosts Connected after the restart`, 300_000, 20, () => (f.exitedWith ? `the fleet exited (${f.exitedWith})` : undefined));
    return { listenMs, ms: performance.now() - tRestart };
  });
  const restartCpuUs = cpuSince(rc0);
  log(`restart: first host Connected after ${fmtS(firstMs ?? NaN)}, half after ${fmtS(halfMs ?? NaN)}`);
  const mem = process.memoryUsage();
  const maxRss = process.resourceUsage().maxRSS * 1024;
  log(`restart: close() ${fmtMs(closeMs)}; startController listening after ${fmtMs(restarted.listenMs)}; all ${HOSTS} Connected after ${fmtS(restarted.ms)}; ` +
    `CPU ${fmtS(restartCpuUs / 1000)}; RSS ${fmtBytes(mem.rss)} (heap ${fmtBytes(mem.heapUsed)}), peak RSS ${fmtBytes(maxRss)}, fds ${openFds()}`);

  // 4. detection, with the fleet up
  const kills: number[] = [];
  for (let i = 1; i <= TRIALS; i++) {
    const ip = `${KILL_NET}${i}`;
    const a = spawnAgent(ip, ctl.url, token, join(agentsDir, ip));
    const tc = performance.now();
    await until(async () => (await hostByIp(core, ip))?.status === 'Connected', `agent ${ip} Connected`, 60_000, 20,
      () => (alive(a.child) ? undefined : `agent ${ip} exited: ${a.output()}`));
    const upMs = performance.now() - tc;
    await sleep(200); // let its channel settle into heartbeats
    const t0 = performance.now();
    a.child.kill('SIGKILL');
    await until(async () => (await hostByIp(core, ip))?.status === 'Disconnected', `host ${ip} Disconnected after kill -9`, 30_000);
    const ms = performance.now() - t0;
    kills.push(ms);
    await a.exited;
    const h = await hostByIp(core, ip);
    log(`  kill -9 trial ${i}: ${ip} Connected ${fmtMs(upMs)} after spawn; Disconnected ${fmtMs(ms)} after kill -9 (${h?.statusReason ?? ''})`.slice(0, 240));
  }
  const freezes: number[] = [];
  for (let i = 1; i <= FREEZE_TRIALS; i++) {
    const ip = `${KILL_NET}${FREEZE_BASE + i}`;
    const a = spawnAgent(ip, ctl.url, token, join(agentsDir, ip));
    await until(async () => (await hostByIp(core, ip))?.status === 'Connected', `agent ${ip} Connected`, 60_000, 20,
      () => (alive(a.child) ? undefined : `agent ${ip} exited: ${a.output()}`));
    await sleep(200);
    const t0 = performance.now();
    a.child.kill('SIGSTOP');
    try {
      await until(async () => (await hostByIp(core, ip))?.status === 'Disconnected', `host ${ip} Disconnected after SIGSTOP`, 90_000);
      freezes.push(performance.now() - t0);
    } finally {
      a.child.kill('SIGCONT');
      a.child.kill('SIGKILL');
    }
    await a.exited;
    const h = await hostByIp(core, ip);
    log(`  SIGSTOP trial ${i}: ${ip} Disconnected ${fmtMs(freezes[freezes.length - 1]!)} after SIGSTOP (${h?.statusReason ?? ''})`.slice(0, 240));
  }
  const fleetStillConnected = await core.repo.count('host', { status: 'Connected' });
  log(`after the trials: ${fleetStillConnected} hosts Connected (fleet ${HOSTS}), tracked ${core.agents.trackedCount}, brake held: ${core.agents.brakeHeld}, fds ${openFds()}`);

  // teardown: controller first (so no disconnect storm), then the fleet
  await ctl.close();
  if (alive(f.child)) {
    f.child.kill('SIGTERM');
    try {
      await until(() => !alive(f.child), 'the fleet to stop on SIGTERM', 60_000, 50);
    } catch (err) {
      log(`  ${(err as Error).message}: killing its process group`);
    }
  }
  if (f.child.pid && alive(f.child)) process.kill(-f.child.pid, 'SIGKILL');

  // the table
  const sw = summarize(sweeps.map((s) => s.ms));
  const perPing = summarize(sweeps.map((s) => s.cpuUs / s.n));
  const perPingNet = summarize(sweeps.map((s) => (s.cpuUs - idleCpuPerMs * s.ms) / s.n));
  const perPingSys = summarize(sweeps.map((s) => s.sysUs / s.n));
  const fleetPerPing = summarize(sweeps.map((s) => (s.fleetMs * 1000) / s.n));
  const sweepRate = sweeps.reduce((a, s) => a + s.n, 0) / (sweeps.reduce((a, s) => a + s.ms, 0) / 1000);
  const sRate = BARE_REQUESTS / (signedLoop.ms / 1000);
  const uRate = BARE_REQUESTS / (unsignedLoop.ms / 1000);
  const k = summarize(kills);
  const z = summarize(freezes);
  const freezeTarget = (Number(core.configs.get('host', 'ping.interval')) + Number(core.configs.get('host', 'ping.timeout')) + 1) * 1000;
  const ok = (b: boolean) => (b ? 'ok' : 'MISS');
  const rows: Rows = {
    reg: [`registration + connect of ${HOSTS} hosts (spawn -> all Connected)`, '1', fmtS(connectMs), '', '', '', ''],
    sweep: [`ping sweep of ${HOSTS} hosts, parallelism ${PING_PARALLELISM}: wall`, String(sw.n), fmtMs(sw.median), fmtMs(sw.p99), fmtMs(sw.max), '< 2 s', ok(sw.max < 2000)],
    cold: ['  warm-up sweep (not counted): wall | controller CPU per ping', '1', fmtMs(cold!.ms), fmtUs(cold!.cpuUs / cold!.n), '', '', ''],
    cpu: ['  controller CPU per ping', String(perPing.n), fmtUs(perPing.median), fmtUs(perPing.p99), fmtUs(perPing.max), '< 60 µs', ok(perPing.median < 60)],
    cpuSys: ['  of which kernel (system) time', String(perPingSys.n), fmtUs(perPingSys.median), fmtUs(perPingSys.p99), fmtUs(perPingSys.max), '', ''],
    cpuNet: ['  controller CPU per ping, net of idle heartbeat load', String(perPingNet.n), fmtUs(perPingNet.median), fmtUs(perPingNet.p99), fmtUs(perPingNet.max), '', ''],
    fleetCpu: ['  fleet processes CPU per ping (all children)', String(fleetPerPing.n), fmtUs(fleetPerPing.median), fmtUs(fleetPerPing.p99), fmtUs(fleetPerPing.max), '', ''],
    signed: [`bare keep-alive loop: ${BARE_REQUESTS} signed /host/echo (200), conc. ${CONCURRENCY}: wall`, '1', fmtMs(signedLoop.ms), '', '', '', ''],
    signedCpu: ['  CPU per request (this process)', '1', fmtUs(signedLoop.cpuUs / BARE_REQUESTS), '', '', '', ''],
    unsigned: [`bare loop: ${BARE_REQUESTS} unsigned /host/echo (401, conn. close): wall`, '1', fmtMs(unsignedLoop.ms), '', '', '', ''],
    unsignedCpu: ['  CPU per request (this process)', '1', fmtUs(unsignedLoop.cpuUs / BARE_REQUESTS), '', '', '', ''],
    ratio: [`sweep throughput ${Math.round(sweepRate)}/s vs bare signed ${Math.round(sRate)}/s | unsigned ${Math.round(uRate)}/s`, '',
      `${(sweepRate / sRate).toFixed(2)}x`, `${(sweepRate / uRate).toFixed(2)}x`, '', '', ''],
    idle: [`controller idle CPU with ${HOSTS} channels (heartbeats)`, '1', `${(idleCpuPerMs / 10).toFixed(1)} %`, '', '', '', ''],
    kill: [`detection, kill -9 -> Disconnected (fleet up)`, String(k.n), fmtMs(k.median), fmtMs(k.p99), fmtMs(k.max), 'p99 < 2 s', ok(k.n > 0 && k.p99 < 2000)],
    freeze: [`detection, SIGSTOP -> Disconnected (fleet up)`, String(z.n), fmtMs(z.median), fmtMs(z.p99), fmtMs(z.max), `< ${fmtS(freezeTarget)}`, ok(z.n > 0 && z.max < freezeTarget)],
    restart: [`controller restart -> all ${HOSTS} Connected again`, '1', fmtS(restarted.ms), '', '', '< 30 s', ok(restarted.ms < 30_000)],
    rss: ['  controller RSS after the restart (peak)', '1', fmtBytes(mem.rss), '', fmtBytes(maxRss), '', ''],
  };
  log('');
  log(table(['figure', 'n', 'median', 'p99', 'max', 'target', 'ok'], Object.values(rows)));
  log(`ratio row: sweep pings/s divided by bare requests/s (signed | unsigned). CPU figures are process.cpuUsage() of this process, which hosts the controller.`);
  log(`controller logs (warn+): ${tap.summary()}${tap.lines.length ? `; last: ${tap.lines[tap.lines.length - 1]!.slice(0, 300)}` : ''}`);
  for (const e of tap.errors) log(`  controller ${e.slice(0, 400)}`);
  log(`load at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

main().then(
  () => {
    cleanupSync();
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
    if (fleet) process.stderr.write(`fleet output (last lines):\n${fleet.output().slice(-2000)}\n`);
    cleanupSync();
    process.exit(1);
  },
);
