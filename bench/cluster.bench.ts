/**
 * `npm run bench:cluster`: issue 12's multi-controller figures. Three controller processes on
 * one fresh PostgreSQL database (test/store/db.ts createTestDatabase, so
 * HOSTKEEPER_TEST_DATABASE_URL must be set) and BENCH_HOSTS simulated hosts (agent/fleet.ts,
 * BENCH_PER_PROCESS agents per child process, on loopback addresses from BENCH_FIRST_IP)
 * registered with the first controller and shared by the ring (test/cluster/harness.ts).
 *
 * 0. The three controllers with no host, idle for BENCH_BASE_S: CPU and RSS (the intercept).
 * 1. Fleet spawned -> every host Connected, held by exactly one controller, and each
 *    controller's open channels (hostkeeper_channels_open, /metrics) equal to the hosts it
 *    holds ("tracked"): seconds, and the shares.
 * 2. Idle at default intervals (host/ping.interval 60, untouched) for BENCH_IDLE_S: per
 *    controller CPU % of a core (/proc/<pid>/stat utime+stime), RSS (VmRSS), hosts held, CPU
 *    per host per minute; pings in that window per controller (/zstack/internal/pings deltas)
 *    and per host.
 * 3. kill -9 of controller c -> every host Connected and held (and tracked) by exactly one
 *    live controller. 3b: idle again for BENCH_IDLE2_S with the two survivors (a second share
 *    size per controller, for the slopes).
 * 4. SIGSTOP of the smallest fleet child (its agents go silent, sockets open) -> its hosts
 *    noticed: no longer Connected (first and all; a noticed host is Disconnected, or Connecting
 *    during a reconnect attempt); SIGCONT -> all Connected again.
 * 5. c restarted on its data dir -> it holds its share again, all Connected and tracked.
 * Then per-host cost lines extrapolated from the measured slopes.
 *
 * Environment: BENCH_HOSTS (3000), BENCH_PER_PROCESS (2500), BENCH_FIRST_IP (127.20.0.1),
 * BENCH_IDLE_S (60), BENCH_IDLE2_S (60: the idle window with two controllers, 0 skips it), BENCH_BASE_S (15), BENCH_CONNECT_TIMEOUT_S (120 + 0.2 per host),
 * BENCH_STALL_S (120: a wait whose state has not changed for that long is reported as stalled and
 * the run goes on), BENCH_CONTROLLER_LOG_LEVEL (warn).
 * While waiting, a progress line every 15 s also shows the leases by owner, read from the database.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import os from 'node:os';
import tls from 'node:tls';
import { ClusterHarness, type Member } from '../test/cluster/harness.ts';
import { createTestDatabase, TEST_DATABASE_URL, type TestDatabase } from '../test/store/db.ts';
import { tempDir } from '../test/helpers.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';

const HOSTS = intEnv('BENCH_HOSTS', 3000, 10);
const PER_PROCESS = intEnv('BENCH_PER_PROCESS', 2500, 1);
const FIRST_IP = process.env.BENCH_FIRST_IP || '127.20.0.1';
const IDLE_S = intEnv('BENCH_IDLE_S', 60, 5);
const BASE_S = intEnv('BENCH_BASE_S', 15, 1);
const IDLE2_S = intEnv('BENCH_IDLE2_S', 60, 0);
const STALL_S = intEnv('BENCH_STALL_S', 120, 10);
const CONNECT_TIMEOUT_S = intEnv('BENCH_CONNECT_TIMEOUT_S', Math.round(120 + 0.2 * HOSTS), 10);
const PING_INTERVAL_S = 60; // protocol/configs.ts host/ping.interval default: not changed here
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

const t0All = Date.now();
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;

// ---- process figures ----------------------------------------------------------------------

/** utime + stime of a process in seconds. */
function cpuSeconds(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of stat (1-based)
}
function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

// ---- the fleet (own spawn: ClusterHarness.startFleet pages 1,000 hosts at most) -------------

interface Fleet {
  child: ChildProcess;
  out: () => string;
  upMs?: number;
}
let fleet: Fleet | undefined;
let stoppedChild: number | undefined;
let cOutput = '';
let h: ClusterHarness | undefined;
let db: TestDatabase | undefined;
const dirs: string[] = [];

function killFleetSync(): void {
  if (stoppedChild) {
    try {
      process.kill(stoppedChild, 'SIGCONT');
    } catch {
      // gone
    }
  }
  if (fleet?.child.pid && fleet.child.exitCode === null && fleet.child.signalCode === null) {
    try {
      process.kill(-fleet.child.pid, 'SIGKILL'); // its own group: the fleet parent and its children
    } catch {
      // gone
    }
  }
}
onExit(() => {
  killFleetSync();
  for (const m of h?.members ?? []) {
    try {
      m.proc?.child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

async function startFleet(via: Member, fleetDir: string): Promise<Fleet> {
  const H = h!;
  const zone = await H.ok(via, 'POST', '/zones', { params: { name: 'z' } });
  const cluster = await H.ok(via, 'POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: 'c', hypervisorType: 'KVM' } });
  const tk = await H.api(via, 'POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.inventory.uuid, ttlSeconds: 7200 } });
  const inv = tk.body.inventory;
  const args = ['--import', 'tsx', 'agent/fleet.ts', '--count', String(HOSTS), '--controller', H.url(via), '--bootstrap-token', inv.token,
    '--state-dir', fleetDir, '--first-ip', FIRST_IP, '--per-process', String(PER_PROCESS), '--log-level', 'error',
    ...(inv.caCertHash ? ['--ca-cert-hash', inv.caCertHash] : [])];
  const t0 = Date.now();
  const child = spawn(process.execPath, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const f: Fleet = { child, out: () => out };
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-6000);
    if (f.upMs === undefined && /agents up on/.test(out)) f.upMs = Date.now() - t0;
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return f;
}

// ---- what the controllers say ---------------------------------------------------------------

async function count(q: string): Promise<number> {
  const H = h!;
  const m = H.live()[0]!;
  const r = await H.api(m, 'GET', `/hosts?${q}&count=true`);
  if (r.status !== 200) throw new Error(`count ${q}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  return r.body.total ?? 0;
}

async function metric(m: Member, name: string): Promise<number> {
  const r = await fetch(`${h!.url(m)}/metrics`, { headers: { authorization: `OAuth ${m.session}` }, signal: AbortSignal.timeout(20_000) });
  const text = await r.text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

async function fillHostIps(): Promise<void> {
  const H = h!;
  const r = await H.api(H.live()[0]!, 'GET', `/hosts?limit=10000&fields=uuid,managementIp`);
  for (const x of r.body.inventories ?? []) H.hostIps.set(x.uuid, x.managementIp);
}

interface Settled {
  ok: boolean;
  connected: number;
  wrong: string[];
  shares: Record<string, number>;
  channels: Record<string, number>;
  why: string;
}

/** Every host Connected, held by exactly one live controller, and each holder's channels = its holds. */
async function settled(extra?: (s: Settled) => string | undefined): Promise<Settled> {
  const H = h!;
  if (H.hostIps.size < HOSTS) await fillHostIps();
  const connected = await count('q=status=Connected');
  const o = await H.ownership();
  const channels: Record<string, number> = {};
  for (const m of H.live()) channels[m.name] = await metric(m, 'hostkeeper_channels_open');
  const s: Settled = { ok: false, connected, wrong: o.wrong, shares: o.shares, channels, why: '' };
  const mism = H.live().filter((m) => channels[m.name] !== o.shares[m.name]).map((m) => `${m.name}: ${channels[m.name]} channels for ${o.shares[m.name]} held`);
  s.why = [
    H.hostIps.size < HOSTS ? `${H.hostIps.size}/${HOSTS} hosts registered` : '',
    connected < HOSTS ? `${connected}/${HOSTS} Connected` : '',
    o.wrong.length ? `${o.wrong.length} hosts not held by exactly one (e.g. ${o.wrong[0]})` : '',
    mism.join('; '),
    extra?.(s) ?? '',
  ].filter(Boolean).join('; ');
  s.ok = s.why === '';
  return s;
}

/** Leases by owner as the database has them (member names; "none" = released), and hosts with no lease. */
async function leases(): Promise<string> {
  const names = new Map<string, string>();
  for (const m of h!.members) names.set(readFileSync(join(m.dataDir, 'controller-uuid'), 'utf8').trim(), m.name);
  const c = new pg.Client({ connectionString: db!.url });
  await c.connect();
  try {
    const r = await c.query<{ owner: string | null; n: string }>(`SELECT data->>'owner' AS owner, count(*) AS n FROM hk_row WHERE kind = 'hostLease' GROUP BY 1 ORDER BY 1`);
    const hosts = await c.query<{ n: string }>(`SELECT count(*) AS n FROM hk_row h WHERE h.kind = 'host' AND NOT EXISTS (SELECT 1 FROM hk_row l WHERE l.kind = 'hostLease' AND l.uuid = h.uuid)`);
    return `${r.rows.map((x) => `${x.owner ? (names.get(x.owner) ?? x.owner.slice(0, 8)) : 'none'} ${x.n}`).join(', ')}; hosts without a lease ${hosts.rows[0]!.n}`;
  } finally {
    await c.end();
  }
}

/** What a stalled wait looks like: hosts a controller holds but has not pinged, with their status. */
async function diagnose(): Promise<void> {
  const H = h!;
  for (const m of H.live()) {
    const v = await H.pings(m).catch(() => undefined);
    if (!v) continue;
    const unpinged = v.holds.filter((x) => !v.pings[x]);
    const stale = v.holds.filter((x) => v.pings[x] && Date.now() - v.pings[x]!.last > 2 * PING_INTERVAL_S * 1000);
    let ex = '';
    if (unpinged.length) {
      const r = await H.api(m, 'GET', `/hosts?q=uuid?=${unpinged.slice(0, 3).join(',')}&fields=uuid,managementIp,status,lastOpDate`).catch(() => ({ body: {} as any }));
      ex = (r.body.inventories ?? []).map((x: any) => `${x.uuid.slice(0, 8)} ${x.managementIp} ${x.status} since ${x.lastOpDate}`).join('; ');
    }
    log(`  diagnosis ${m.name}: holds ${v.holds.length}; never pinged by it ${unpinged.length}; not pinged for over ${2 * PING_INTERVAL_S} s ${stale.length}${ex ? `; e.g. ${ex}` : ''}`);
  }
  const st = await Promise.all(['Connected', 'Connecting', 'Disconnected'].map((x) => count(`q=status=${x}`).catch(() => -1)));
  log(`  diagnosis: statuses Connected ${st[0]}, Connecting ${st[1]}, Disconnected ${st[2]}; leases: ${await leases().catch((e) => (e as Error).message)}`);
  stalls++;
}
let stalls = 0;

async function waitSettled(label: string, timeoutS: number, extra?: (s: Settled) => string | undefined): Promise<{ ms: number; s: Settled; ok: boolean }> {
  const t0 = Date.now();
  let last: Settled | undefined;
  let lastPrint = t0;
  let sameSince = t0;
  let lastWhy = '';
  for (;;) {
    checkAlive();
    try {
      last = await settled(extra);
      if (last.ok) return { ms: Date.now() - t0, s: last, ok: true };
    } catch (err) {
      if (last) last.why = `poll failed: ${(err as Error).message}`;
    }
    if (Date.now() - lastPrint > 15_000) {
      lastPrint = Date.now();
      log(`  ... ${label}: ${secs(Date.now() - t0)}: ${last?.why ?? 'no answer yet'}; leases in the database: ${await leases().catch((e) => (e as Error).message)}`);
    }
    if (last && last.why !== lastWhy) {
      lastWhy = last.why;
      sameSince = Date.now();
    }
    if (Date.now() - sameSince > STALL_S * 1000) {
      log(`  ... ${label}: STALLED: nothing changed for ${STALL_S} s: ${lastWhy}`);
      await diagnose();
      return { ms: Date.now() - t0, s: last!, ok: false };
    }
    if (Date.now() - t0 > timeoutS * 1000) {
      await diagnose();
      return { ms: Date.now() - t0, s: last!, ok: false };
    }
    await sleep(500);
  }
}

const expectedDead = new Set<Member>();
function checkAlive(): void {
  for (const m of h!.members) {
    if (m.proc && (m.proc.child.exitCode !== null || m.proc.child.signalCode !== null) && !expectedDead.has(m)) {
      throw new Error(`controller ${m.name} exited (code ${m.proc.child.exitCode}, signal ${m.proc.child.signalCode}); its output: ${m.proc.output().slice(-3000)}`);
    }
  }
}

const fmtShares = (o: Record<string, number>) => Object.entries(o).sort().map(([k, v]) => `${k} ${v}`).join(', ');

/** The controllers' log lines (warn and up) counted by message, with one example each. */
function logSummary(): void {
  const outs: [string, string][] = [...(cOutput ? [['c (before kill -9)', cOutput] as [string, string]] : []), ...(h?.members ?? []).map((m): [string, string] => [m.name, m.proc?.output() ?? ''])];
  for (const [name, out] of outs) {
    const by = new Map<string, { n: number; ex: string }>();
    for (const line of out.split('\n')) {
      if (!line.trim()) continue;
      let key = line.slice(0, 80);
      try {
        const j = JSON.parse(line) as { level?: number; msg?: string };
        key = `level ${j.level}: ${j.msg}`;
      } catch {
        // not JSON
      }
      const e = by.get(key) ?? { n: 0, ex: line.slice(0, 400) };
      e.n++;
      by.set(key, e);
    }
    log(`controller ${name} log (level ${process.env.BENCH_CONTROLLER_LOG_LEVEL || 'warn'} and up): ${by.size === 0 ? 'nothing' : ''}`);
    for (const [k, v] of [...by].sort((x, y) => y[1].n - x[1].n).slice(0, 12)) log(`    ${v.n} x ${k}; e.g. ${v.ex}`);
  }
}

function tailOutputs(): void {
  if (cOutput) log(`--- controller c output before its kill -9 (last 2500 chars of ${cOutput.length}) ---\n${cOutput.slice(-2500)}`);
  for (const m of h?.members ?? []) {
    const out = m.proc?.output() ?? '';
    log(`--- controller ${m.name} output (last 2500 chars of ${out.length}) ---`);
    log(out.slice(-2500) || '(none)');
  }
  log(`--- fleet output (last 1500 chars) ---`);
  log(fleet?.out().slice(-1500) || '(none)');
}

/** Does the agent at ip:7070 speak TLS? (It does by default; the fleet runs without --plain-http.) */
function agentSpeaksTls(ip: string): Promise<string> {
  return new Promise((res) => {
    const s = tls.connect({ host: ip, port: 7070, rejectUnauthorized: false }, () => {
      const p = s.getProtocol();
      s.destroy();
      res(`yes (${p} handshake with the agent at ${ip}:7070; fleet started without --plain-http)`);
    });
    s.setTimeout(5000, () => {
      s.destroy();
      res('unknown (timeout)');
    });
    s.on('error', (e) => res(`no TLS handshake: ${e.message}`));
  });
}

// ---- the run ----------------------------------------------------------------------------------

interface Sample {
  m: Member;
  pid: number;
  cpu: number;
}

interface Idle {
  cpuPct: number;
  rssKb: number;
  held: number;
  usPerHostMin: number;
  pings: number;
}

/** CPU, RSS, holds and pings of every live controller over `seconds` of idling. */
async function idleWindow(label: string, seconds: number, fleetKids: number[]): Promise<Map<string, Idle>> {
  const H = h!;
  const live = H.live();
  const idle = new Map<string, Idle>();
  const before = await Promise.all(live.map((m) => H.pings(m)));
  const s0: Sample[] = live.map((m) => ({ m, pid: m.proc!.child.pid!, cpu: cpuSeconds(m.proc!.child.pid!) }));
  const fleetCpu0 = fleetKids.reduce((x, p) => x + cpuSeconds(p), 0);
  const t = Date.now();
  const rssPeak = new Map<string, number>();
  while (Date.now() - t < seconds * 1000) {
    await sleep(Math.min(5000, seconds * 1000 - (Date.now() - t)));
    for (const s of s0) rssPeak.set(s.m.name, Math.max(rssPeak.get(s.m.name) ?? 0, rssKb(s.pid)));
  }
  const cpu1 = s0.map((s) => cpuSeconds(s.pid));
  const fleetCpu1 = fleetKids.reduce((x, p) => x + cpuSeconds(p), 0);
  const dt = (Date.now() - t) / 1000;
  checkAlive();
  const after = await Promise.all(live.map((m) => H.pings(m)));
  log(`${label} idle ${dt.toFixed(1)} s with ${live.length} controllers at default intervals (ping every ${PING_INTERVAL_S} s; channel heartbeats between), load average ${load()}:`);
  const perHost = new Map<string, { by: string[]; n: number }>();
  s0.forEach((s, i) => {
    const v0 = before[i]!;
    const v1 = after[i]!;
    let pings = 0;
    for (const [host, p] of Object.entries(v1.pings)) {
      const d = p.count - (v0.pings[host]?.count ?? 0);
      if (d <= 0) continue;
      pings += d;
      const e = perHost.get(host) ?? { by: [], n: 0 };
      e.by.push(s.m.name);
      e.n += d;
      perHost.set(host, e);
    }
    const cpuS = cpu1[i]! - s.cpu;
    const held = v1.holds.length;
    const cpuPct = (cpuS / dt) * 100;
    const usPerHostMin = held ? (cpuS * 1e6) / held / (dt / 60) : 0;
    const rss = rssKb(s.pid);
    idle.set(s.m.name, { cpuPct, rssKb: rss, held, usPerHostMin, pings });
    log(`    controller ${s.m.name}: holds ${held} hosts; CPU ${cpuPct.toFixed(2)}% of a core; RSS ${mb(rss)} (peak sampled ${mb(rssPeak.get(s.m.name) ?? 0)}); ` +
      `CPU per host per minute ${usPerHostMin.toFixed(0)} µs; pings in the window ${pings} = ${(held ? pings / held / (dt / PING_INTERVAL_S) : 0).toFixed(2)} per held host per interval`);
  });
  const hist = [0, 0, 0, 0];
  let two = 0;
  for (const host of H.hostIps.keys()) {
    const e = perHost.get(host);
    hist[Math.min(3, e?.n ?? 0)]!++;
    if (e && e.by.length > 1) two++;
  }
  log(`    pings per host in the window: 0: ${hist[0]}, 1: ${hist[1]}, 2: ${hist[2]}, 3+: ${hist[3]} hosts; hosts pinged by more than one controller in the window: ${two}`);
  log(`    fleet (${fleetKids.length} agent processes) CPU ${(((fleetCpu1 - fleetCpu0) / dt) * 100).toFixed(1)}% of a core in the same window`);
  return idle;
}

async function main(): Promise<void> {
  if (!TEST_DATABASE_URL) throw new Error('HOSTKEEPER_TEST_DATABASE_URL is unset (postgres://hostkeeper_test:hostkeeper_test@127.0.0.1:5432/postgres)');
  log(`cluster bench: ${HOSTS} hosts, 3 controllers on one PostgreSQL database, fleet on ${FIRST_IP}.. (${PER_PROCESS} agents per process)`);
  log(`machine: ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, open-files limit ${execFileSync('sh', ['-c', 'ulimit -n']).toString().trim()}; load average at start ${load()}`);
  log(`intervals: host/ping.interval ${PING_INTERVAL_S} s (default, not changed), host/ping.timeout default; clock ticks ${CLK_TCK}/s`);

  db = await createTestDatabase('hk_bench');
  const fleetDir = await tempDir('hk-bench-fleet-');
  dirs.push(fleetDir);
  h = new ClusterHarness({ databaseUrl: db.url, fleetDir, firstIp: FIRST_IP, env: { HOSTKEEPER_LOG_LEVEL: process.env.BENCH_CONTROLLER_LOG_LEVEL || 'warn' } });
  const tStart = Date.now();
  const a = await h.add('a');
  const b = await h.add('b');
  const c = await h.add('c');
  for (const m of h.members) dirs.push(m.dataDir);
  log(`controllers up: a, b, c in ${secs(Date.now() - tStart)} (pids ${h.members.map((m) => m.proc!.child.pid).join(', ')})`);
  const cfg = await h.api(a, 'GET', '/global-configurations?q=category=host&q=name?=ping.interval,ping.timeout');
  log(`configs as stored: ${(cfg.body.inventories ?? []).map((x: any) => `${x.category}/${x.name}=${x.value}`).join(', ')}`);

  // 0. no hosts: the intercept
  const base = new Map<string, { cpuPct: number; rssKb: number }>();
  {
    await sleep(2000);
    const s0 = h.members.map((m) => ({ m, pid: m.proc!.child.pid!, cpu: cpuSeconds(m.proc!.child.pid!) }));
    const t = Date.now();
    await sleep(BASE_S * 1000);
    const dt = (Date.now() - t) / 1000;
    for (const s of s0) base.set(s.m.name, { cpuPct: ((cpuSeconds(s.pid) - s.cpu) / dt) * 100, rssKb: rssKb(s.pid) });
    log(`[0] no hosts, idle ${dt.toFixed(1)} s: ${[...base].map(([n, v]) => `${n} CPU ${v.cpuPct.toFixed(2)}% RSS ${mb(v.rssKb)}`).join('; ')}`);
  }

  // 1. the fleet
  const tFleet = Date.now();
  fleet = await startFleet(a, fleetDir);
  const up = await waitSettled('fleet connect', CONNECT_TIMEOUT_S);
  log(`[1] fleet of ${HOSTS} registered with a: all Connected, each held by exactly one controller and tracked (channel open) ${up.ok ? 'after' : 'NOT within'} ${secs(up.ms)} from fleet spawn` +
    `${fleet.upMs !== undefined ? ` (fleet reported all agents up after ${secs(fleet.upMs)})` : ''}`);
  log(`    shares: ${fmtShares(up.s.shares)}; channels open: ${fmtShares(up.s.channels)}`);
  if (!up.ok) log(`    NOT SETTLED (going on with the other phases): ${up.s.why}`);
  void tFleet;
  const fleetKids = childrenOf(fleet.child.pid!);
  log(`    agent channel TLS: ${await agentSpeaksTls(FIRST_IP)}`);

  // 2. idle at default intervals
  await sleep(5000);
  const idle = await idleWindow('[2]', IDLE_S, fleetKids);
  // 3. kill -9 of c
  const cHeld = (await h.pings(c)).holds.length;
  expectedDead.add(c);
  const tKill = Date.now();
  cOutput = c.proc!.output();
  await h.kill9(c);
  const tk = await waitSettled('takeover', 180);
  log(`[3] kill -9 of c (held ${cHeld}): all ${HOSTS} Connected and held by exactly one live controller, tracked, ${tk.ok ? 'after' : 'NOT within'} ${secs(tk.ms)} (${secs(Date.now() - tKill)} incl. the kill)`);
  log(`    shares after: ${fmtShares(tk.s.shares)}; channels: ${fmtShares(tk.s.channels)}${tk.ok ? '' : `; NOT SETTLED: ${tk.s.why}`}`);
  log(`    RSS just after takeover: ${h.live().map((m) => `${m.name} ${mb(rssKb(m.proc!.child.pid!))} holding ${tk.s.shares[m.name] ?? 0}`).join('; ')}`);

  // 3b. idle again with two controllers: the second fleet size per controller
  let idle2: Map<string, Idle> | undefined;
  if (IDLE2_S > 0 && tk.ok) {
    await sleep(10_000);
    idle2 = await idleWindow('[3b]', IDLE2_S, fleetKids);
  }

  // 4. silent hosts: SIGSTOP the smallest fleet child
  {
    const kids = childrenOf(fleet.child.pid!).sort((x, y) => x - y); // fork order: chunk k is the k-th child
    const sizes = kids.map((_, k) => Math.min(PER_PROCESS, HOSTS - k * PER_PROCESS));
    let k = sizes.length - 1;
    for (let i = 0; i < sizes.length; i++) if (sizes[i]! < sizes[k]!) k = i;
    const pid = kids[k]!;
    const n = sizes[k]!;
    // Noticed = no longer Connected: a noticed host goes Disconnected, then Connecting and back
    // to Disconnected at each failed reconnect, so the Disconnected count alone goes up and down.
    const before = HOSTS - (await count('q=status=Connected'));
    stoppedChild = pid;
    const t = Date.now();
    process.kill(pid, 'SIGSTOP');
    let first: number | undefined;
    let all: number | undefined;
    let last = 0;
    let lastLog = t;
    while (Date.now() - t < 120_000) {
      last = HOSTS - (await count('q=status=Connected').catch(() => HOSTS - last - before)) - before;
      if (first === undefined && last > 0) first = Date.now() - t;
      if (last >= n) {
        all = Date.now() - t;
        break;
      }
      if (Date.now() - lastLog >= 5_000) {
        lastLog = Date.now();
        log(`  ... after SIGSTOP: ${secs(Date.now() - t)}: ${last}/${n} no longer Connected (${await count('q=status=Disconnected').catch(() => -1)} Disconnected now)`);
      }
      await sleep(100);
    }
    log(`[4] SIGSTOP of fleet child ${k + 1}/${kids.length} (${n} agents, silent, sockets open; ${before} hosts not Connected before): first host no longer Connected after ${first !== undefined ? secs(first) : 'never (120 s)'}, ` +
      `all ${n} after ${all !== undefined ? secs(all) : `never (120 s; ${last} seen)`}`);
    const tc = Date.now();
    process.kill(pid, 'SIGCONT');
    stoppedChild = undefined;
    const back = await waitSettled('after SIGCONT', 300);
    log(`    SIGCONT after ${secs(tc - t)} stopped: all ${HOSTS} Connected and tracked again ${back.ok ? 'after' : 'NOT within'} ${secs(back.ms)}${back.ok ? '' : `: ${back.s.why}`}`);
  }

  // 5. restart c on its data dir
  {
    const t = Date.now();
    expectedDead.delete(c);
    await h.start(c);
    const startMs = Date.now() - t;
    const back = await waitSettled('restart', 300, (s) => ((s.shares.c ?? 0) > HOSTS / 6 ? undefined : `c holds ${s.shares.c ?? 0}`));
    log(`[5] c restarted (same data dir; process ready and logged in after ${secs(startMs)}): holds its share again, all ${HOSTS} Connected, each held once and tracked, ` +
      `${back.ok ? 'after' : 'NOT within'} ${secs(back.ms + startMs)} from the restart`);
    log(`    shares after: ${fmtShares(back.s.shares)}; channels: ${fmtShares(back.s.channels)}${back.ok ? '' : `; NOT SETTLED: ${back.s.why}`}`);
  }

  // per-host cost
  {
    const ms = [...idle.entries()].filter(([, v]) => v.held > 0);
    const heldSum = ms.reduce((x, [, v]) => x + v.held, 0);
    const cpuSum = ms.reduce((x, [, v]) => x + v.cpuPct, 0);
    const baseCpu = ms.reduce((x, [n]) => x + base.get(n)!.cpuPct, 0) / ms.length;
    const baseRss = ms.reduce((x, [n]) => x + base.get(n)!.rssKb, 0) / ms.length;
    const usPerHostMin = ((cpuSum / 100) * 60e6) / heldSum; // all in (each controller's fixed cost included)
    const cpuSlope0 = (cpuSum - baseCpu * ms.length) / heldSum; // % of a core per host, from the no-host point
    const rssSlope0 = ms.reduce((x, [n, v]) => x + (v.rssKb - base.get(n)!.rssKb), 0) / heldSum;
    log(`per-host cost (MEASURED, idle at default intervals):`);
    log(`    3 controllers, ${(heldSum / ms.length).toFixed(0)} hosts each: ${usPerHostMin.toFixed(0)} µs CPU per host per minute all in; ` +
      `from the no-host point (${baseCpu.toFixed(2)}% of a core, ${mb(baseRss)} each): ${(cpuSlope0 * 1000).toFixed(3)}% of a core and ${(rssSlope0 * 1000 / 1024).toFixed(1)} MB RSS per 1,000 hosts ` +
      `(${((cpuSlope0 / 100) * 60e6).toFixed(0)} µs per host per minute, ${rssSlope0.toFixed(1)} KB per host)`);
    // Marginal slope between the two measured share sizes (same controllers a and b, 3 vs 2 controllers).
    let cpuSlope = cpuSlope0;
    let rssSlope = rssSlope0;
    let from = { held: 0, cpu: baseCpu, rss: baseRss };
    let slopeSource = 'no hosts -> the 3-controller share';
    if (idle2) {
      const both = [...idle2.keys()].filter((n) => idle.has(n) && idle2!.get(n)!.held > idle.get(n)!.held);
      if (both.length) {
        const d = (f: (v: Idle) => number) => both.reduce((x, n) => x + f(idle2!.get(n)!) - f(idle.get(n)!), 0);
        const dHeld = d((v) => v.held);
        cpuSlope = d((v) => v.cpuPct) / dHeld;
        rssSlope = d((v) => v.rssKb) / dHeld;
        const avg = (f: (v: Idle) => number) => both.reduce((x, n) => x + f(idle2!.get(n)!), 0) / both.length;
        from = { held: avg((v) => v.held), cpu: avg((v) => v.cpuPct), rss: avg((v) => v.rssKb) };
        slopeSource = `the 3-controller share -> the 2-controller share of ${both.join(', ')}`;
        log(`    2 controllers, ${from.held.toFixed(0)} hosts each: ${((from.cpu / 100) * 60e6 / from.held).toFixed(0)} µs CPU per host per minute all in, ${from.cpu.toFixed(2)}% of a core, RSS ${mb(from.rss)}; ` +
          `marginal slope between the two sizes: ${(cpuSlope * 1000).toFixed(3)}% of a core and ${(rssSlope * 1000 / 1024).toFixed(1)} MB RSS per 1,000 hosts ` +
          `(${((cpuSlope / 100) * 60e6).toFixed(0)} µs per host per minute, ${rssSlope.toFixed(1)} KB per host)`);
        if (!(cpuSlope > 0)) {
          cpuSlope = cpuSlope0;
          from = { held: 0, cpu: baseCpu, rss: baseRss };
          slopeSource = 'no hosts -> the 3-controller share (the marginal slope was not positive: noise)';
        }
      }
    }
    // RSS moves with garbage collection: a least-squares line through every measured point (no hosts, both shares).
    const pts: [number, number][] = [...[...base.values()].map((v): [number, number] => [0, v.rssKb]), ...[...idle.values(), ...(idle2?.values() ?? [])].map((v): [number, number] => [v.held, v.rssKb])];
    const mx = pts.reduce((x, p) => x + p[0], 0) / pts.length;
    const my = pts.reduce((x, p) => x + p[1], 0) / pts.length;
    const rssFit = pts.reduce((x, p) => x + (p[0] - mx) * (p[1] - my), 0) / pts.reduce((x, p) => x + (p[0] - mx) ** 2, 0);
    const rssIcpt = my - rssFit * mx;
    log(`    RSS, least-squares line through all ${pts.length} measured points (no hosts and both shares): ${mb(rssIcpt)} + ${rssFit.toFixed(1)} KB per host (${(rssFit * 1000 / 1024).toFixed(1)} MB per 1,000 hosts)`);
    void rssSlope;
    const cpuAt = (n: number) => from.cpu + cpuSlope * (n - from.held);
    const rssAt = (n: number) => rssIcpt + rssFit * n;
    log(`100,000 hosts over N controllers: EXTRAPOLATED (not measured) linearly: CPU from the slope ${slopeSource}, RSS from the least-squares line; the open-files limit (20,000 per process) caps a real fleet per controller here:`);
    for (const n of [1, 3, 5, 10, 20]) {
      const per = 100_000 / n;
      log(`    N=${n}: ${per.toFixed(0)} hosts each: CPU ~${cpuAt(per).toFixed(1)}% of a core each (${((cpuAt(per) * n) / 100).toFixed(2)} cores in all), ` +
        `RSS ~${(rssAt(per) / 1024).toFixed(0)} MB each (${((rssAt(per) * n) / 1024 / 1024).toFixed(1)} GB in all)`);
    }
    const maxHosts = cpuSlope > 0 ? Math.floor(from.held + (25 - from.cpu) / cpuSlope) : Infinity;
    const measured = [...idle.entries(), ...(idle2 ? [...idle2.entries()].map(([n, v]) => [`${n} (2 controllers)`, v] as const) : [])];
    const under = measured.filter(([, v]) => v.cpuPct < 25).sort((x, y) => y[1].held - x[1].held)[0];
    log(`largest fleet one controller holds under 25% of a core at default intervals: MEASURED ${under ? `${under[1].held} hosts (${under[0]}: ${under[1].cpuPct.toFixed(2)}%, RSS ${mb(under[1].rssKb)})` : 'none of the measured shares'}; ` +
      `EXTRAPOLATED from the CPU slope above: ~${maxHosts.toLocaleString('en-US')} hosts, RSS ~${(rssAt(maxHosts) / 1024).toFixed(0)} MB`);
    log(`    measured points: ${measured.map(([n, v]) => `${n} ${v.held} hosts ${v.cpuPct.toFixed(2)}% ${mb(v.rssKb)}`).join('; ')}`);
    log(`note: channel heartbeats are capped at 3,500/s per controller (protocol/agent.ts heartbeatPeriodFor): beyond ~2,100 hosts per controller they cost no more CPU, but a silent host is noticed later (about 2.5 x hosts/3,500 s)`);
  }
  log(`load average at end ${load()}; total run ${secs(Date.now() - t0All)}`);
  logSummary();
  if (stalls > 0) {
    log(`${stalls} wait(s) did not settle: the controllers' output (log level ${process.env.BENCH_CONTROLLER_LOG_LEVEL || 'warn'}) follows`);
    tailOutputs();
  }
}

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  log(`FAILED: ${(err as Error).stack ?? err}`);
  tailOutputs();
} finally {
  killFleetSync();
  await h?.stop().catch(() => undefined);
  await db?.drop().catch((e) => log(`could not drop ${db?.name}: ${(e as Error).message}`));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
