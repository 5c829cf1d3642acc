/**
 * `npm run bench:memory`: what one connected host costs the controller in memory, measured at
 * two fleet sizes so that the slope shows.
 *
 * One controller PROCESS (`node --import tsx controller/main.ts`, embedded store, its own temp
 * data dir, listening on 127.0.0.1) with the inspector open on loopback, so that this script
 * can force a full GC and read `process.memoryUsage()` inside it, and take a heap snapshot.
 * The channel to every agent is TLS (the controller's default: https with its client
 * certificate; agents pinned to its CA by the bootstrap token's caCertHash); the heap snapshot
 * counts the TLSSocket objects to show it.
 *
 * 1. Zone, cluster, bootstrap token through the REST API.
 * 2. BENCH_N1 simulated hosts (agent/fleet.ts, on 127.30.0.1 and up) register, each with
 *    BENCH_VMS VMs seeded in its simulator state (simulated-host.json, Running): the
 *    controller adopts them at connect (sync-vms), so the store holds N x VMS VM rows.
 *    Waits until all are Connected and their VMs in the store, then BENCH_SETTLE_MS idle.
 * 3. RSS: BENCH_SAMPLES readings of VmRSS (/proc/<pid>/status) over BENCH_SAMPLE_MS, the
 *    median (no GC forced). Then a full GC through the inspector and process.memoryUsage()
 *    in the controller: RSS, heap used, heap total, external (buffers, TLS sockets' JS side).
 * 4. A second fleet of BENCH_N2 - BENCH_N1 hosts (the following addresses), same steps.
 * 5. The slope per host of each figure: (X(N2) - X(N1)) / (N2 - N1), and what 100,000 hosts
 *    would take at that slope (an extrapolation: this machine's open-files limit, 20,000,
 *    caps a real fleet per controller process).
 * 6. A heap snapshot of the controller at N2 (after the figures), summarised by constructor:
 *    count per host and bytes per host (shallow sizes), the biggest first. Native memory
 *    (OpenSSL's per-connection buffers, the kernel's socket buffers are not even in RSS) is not
 *    in the JS heap: RSS - heap total - external tells how much there is.
 *
 * Env: BENCH_N1 (2000), BENCH_N2 (6000), BENCH_VMS (10), BENCH_PER_PROCESS (2500),
 * BENCH_FIRST_IP (127.30.0.1), BENCH_SETTLE_MS (15000), BENCH_SAMPLES (7),
 * BENCH_SAMPLE_MS (30000), BENCH_SNAPSHOT (1; 0 skips it), BENCH_SNAPSHOT_N1 (0; 1: one at N1
 * too, and the summary is the difference per added host), BENCH_TOP (30), BENCH_TMP,
 * BENCH_CONTROLLER_PRELOAD (a malloc library for the controller process only, as LD_PRELOAD:
 * tells how much of the native part is glibc malloc's fragmentation).
 * Needs WebSocket (Node 20: --experimental-websocket, which the npm script sets).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { intToIp, ipToInt } from '../agent/fleet-core.ts';
import { freePort, login } from '../test/integration/proc.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';
import { median, table } from './stats.ts';

const N1 = intEnv('BENCH_N1', 2000, 1);
const N2 = intEnv('BENCH_N2', 6000, 2);
const VMS = intEnv('BENCH_VMS', 10);
const PER_PROCESS = intEnv('BENCH_PER_PROCESS', 2500, 1);
const FIRST_IP = process.env.BENCH_FIRST_IP || '127.30.0.1';
const SETTLE_MS = intEnv('BENCH_SETTLE_MS', 15_000);
const SAMPLES = intEnv('BENCH_SAMPLES', 7, 1);
const SAMPLE_MS = intEnv('BENCH_SAMPLE_MS', 30_000);
const SNAPSHOT = intEnv('BENCH_SNAPSHOT', 1) > 0;
const SNAPSHOT_N1 = intEnv('BENCH_SNAPSHOT_N1', 0) > 0;
const TOP = intEnv('BENCH_TOP', 30, 1);
/** An allocator for the controller only (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2): is native memory the allocator's? */
const PRELOAD = process.env.BENCH_CONTROLLER_PRELOAD || '';
const PASSWORD = 'bench-memory-password';
const MiB = 1024 ** 2;

if (N2 <= N1) throw new Error(`BENCH_N2[${N2}] must be larger than BENCH_N1[${N1}]`);
if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(FIRST_IP)) throw new Error(`BENCH_FIRST_IP[${FIRST_IP}] must be a 127.x.y.z address`);
if (typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function') {
  throw new Error('no WebSocket in this Node: run it with NODE_OPTIONS=--experimental-websocket (npm run bench:memory does)');
}

// ---- cleanup ---------------------------------------------------------------------------------

const tmp = mkdtempSync(join(process.env.BENCH_TMP || os.tmpdir(), 'hk-bench-memory-'));
const procs = new Set<ChildProcess>();
const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
onExit(() => {
  for (const c of procs) {
    if (!alive(c) || !c.pid) continue;
    try {
      process.kill(-c.pid, 'SIGKILL'); // its own process group: a fleet's children too
    } catch {
      // gone
    }
  }
  rmSync(tmp, { recursive: true, force: true });
});

function spawnGroup(args: string[], env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const childEnv = { ...process.env, ...env };
  delete childEnv.NODE_OPTIONS; // the WebSocket flag is this script's only
  const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(child);
  let out = '';
  const keep = (b: Buffer) => (out = (out + b.toString('utf8')).slice(-8000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', () => procs.delete(child));
  return { child, output: () => out };
}

async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, what: string, ms: number, abort?: () => string | undefined, everyMs = 250): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v) return v;
    const why = abort?.();
    if (why) throw new Error(`${what}: ${why}`);
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

// ---- the inspector (Chrome DevTools protocol over WebSocket) -----------------------------------

class Inspector {
  private nextId = 1;
  private readonly pending = new Map<number, { res: (v: any) => void; rej: (e: Error) => void }>();
  onEvent: (method: string, params: any) => void = () => {};
  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (e) => {
      const m = JSON.parse(String(e.data));
      if (m.id !== undefined) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) p?.rej(new Error(`${m.error.message}`));
        else p?.res(m.result);
      } else {
        this.onEvent(m.method, m.params);
      }
    });
  }

  static async connect(port: number): Promise<Inspector> {
    const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
    const ws = new WebSocket(list[0]!.webSocketDebuggerUrl);
    await new Promise<void>((res, rej) => {
      ws.addEventListener('open', () => res(), { once: true });
      ws.addEventListener('error', () => rej(new Error('inspector websocket failed')), { once: true });
    });
    return new Inspector(ws);
  }

  send(method: string, params: object = {}): Promise<any> {
    const id = this.nextId++;
    return new Promise((res, rej) => {
      this.pending.set(id, { res, rej });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  async memoryUsage(gc: boolean): Promise<NodeJS.MemoryUsage> {
    if (gc) {
      // Twice: the first may leave weakly-held objects that the second frees.
      await this.send('HeapProfiler.collectGarbage');
      await this.send('HeapProfiler.collectGarbage');
    }
    const r = await this.send('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
    return JSON.parse(r.result.value);
  }

  async heapSnapshot(file: string): Promise<void> {
    const fd = openSync(file, 'w');
    this.onEvent = (method, params) => {
      if (method === 'HeapProfiler.addHeapSnapshotChunk') writeSync(fd, params.chunk);
    };
    try {
      await this.send('HeapProfiler.takeHeapSnapshot', { reportProgress: false, captureNumericValue: false });
    } finally {
      this.onEvent = () => {};
      closeSync(fd);
    }
  }

  close(): void {
    this.ws.close();
  }
}

// ---- heap snapshot summary ---------------------------------------------------------------------

interface Bucket {
  count: number;
  bytes: number;
}

/**
 * Shallow size and count per (node type, constructor/name), read from a .heapsnapshot file
 * without parsing it as one JSON string (hundreds of MB): the header and the strings are JSON,
 * the nodes array is scanned as digits. Edges are skipped.
 */
function summariseSnapshot(file: string): { buckets: Map<string, Bucket>; total: number; nodes: number } {
  const buf = readFileSync(file);
  const find = (s: string, from = 0) => {
    const i = buf.indexOf(s, from, 'latin1');
    if (i < 0) throw new Error(`${file}: no ${s}`);
    return i;
  };
  const nodesAt = find('"nodes":[');
  const header = JSON.parse(`${buf.subarray(0, nodesAt).toString('utf8').replace(/,\s*$/, '')}}`) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] }; node_count: number };
  };
  const fields = header.snapshot.meta.node_fields;
  const F = fields.length;
  const types = header.snapshot.meta.node_types[0];
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const count = header.snapshot.node_count;
  const nodes = new Float64Array(count * F);
  let k = 0;
  let v = 0;
  let inNum = false;
  let p = nodesAt + '"nodes":['.length;
  for (; k < nodes.length; p++) {
    const c = buf[p]!;
    if (c >= 48 && c <= 57) {
      v = v * 10 + (c - 48);
      inNum = true;
    } else if (inNum) {
      nodes[k++] = v;
      v = 0;
      inNum = false;
      if (c === 93) break; // ]
    } else if (c === 93) break;
  }
  const stringsAt = find('"strings":[', p);
  const end = buf.lastIndexOf(']');
  const strings = JSON.parse(buf.subarray(stringsAt + '"strings":'.length, end + 1).toString('utf8')) as string[];
  const buckets = new Map<string, Bucket>();
  let total = 0;
  for (let n = 0; n < count; n++) {
    const type = types[nodes[n * F + iType]!] ?? '?';
    const size = nodes[n * F + iSize]!;
    total += size;
    let name = strings[nodes[n * F + iName]!] ?? '?';
    // Like DevTools' summary: objects and closures by name, the rest by type (a string's name is its text).
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '(string)';
    else if (type === 'number' || type === 'bigint') name = `(${type})`;
    else if (type === 'array') name = `(array) ${name.slice(0, 40)}`;
    else if (type === 'code') name = '(compiled code)';
    else if (type === 'hidden' || type === 'object shape') name = `(${type}) ${name.slice(0, 40)}`;
    else name = name.slice(0, 60) || '(anonymous)';
    const key = `${type === 'object' ? '' : `${type}: `}${name}`;
    const b = buckets.get(key);
    if (b) {
      b.count++;
      b.bytes += size;
    } else {
      buckets.set(key, { count: 1, bytes: size });
    }
  }
  return { buckets, total, nodes: count };
}

// ---- the admin API -----------------------------------------------------------------------------

class Api {
  session = '';
  constructor(readonly url: string) {}
  async call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const r = await fetch(`${this.url}/zstack/v1${path}`, {
      method, headers: { authorization: `OAuth ${this.session}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(60_000),
    });
    return { status: r.status, body: await r.json().catch(() => ({})) };
  }
  async create(path: string, params: object): Promise<{ uuid: string }> {
    const a = await this.call('POST', path, { params });
    if (a.status !== 202) throw new Error(`POST ${path} answered ${a.status}: ${JSON.stringify(a.body)}`);
    const job = new URL(a.body.location).pathname.replace(/^\/zstack\/v1/, '');
    return until(async () => {
      const j = await this.call('GET', job);
      if (j.status === 200) return j.body.inventory as { uuid: string };
      if (j.status !== 202) throw new Error(`GET ${job} answered ${j.status}: ${JSON.stringify(j.body)}`);
      return undefined;
    }, `job ${job}`, 30_000);
  }
  async count(resource: string, q?: string): Promise<number> {
    const r = await this.call('GET', `/${resource}?count=true${q ? `&q=${encodeURIComponent(q)}` : ''}`);
    if (r.status !== 200) throw new Error(`count ${resource} answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.total as number;
  }
}

// ---- fleets ------------------------------------------------------------------------------------

/** Each host's simulator state with VMS Running VMs: the controller adopts them at connect. */
function seedVms(fleetDir: string, firstIp: string, count: number, hostBase: number): void {
  const first = ipToInt(firstIp);
  for (let i = 0; i < count; i++) {
    const ip = intToIp(first + i);
    const dir = join(fleetDir, ip);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const h = hostBase + i;
    const vms = Array.from({ length: VMS }, (_, k) => {
      const n = h * VMS + k; // a unique 10.x.y.z per VM
      return {
        uuid: randomUUID().replaceAll('-', ''), name: `bench-vm-${h}-${k}`, state: 'Running', memorySize: 1024 * MiB, cpuNum: 1,
        vmNics: [{ ip: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, mac: `fa:16:3e:${((n >> 16) & 255).toString(16).padStart(2, '0')}:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}` }],
      };
    });
    writeFileSync(join(dir, 'simulated-host.json'), JSON.stringify({ bootId: randomUUID(), vms }), { mode: 0o600 });
  }
}

function rssKb(pid: number): { rss: number; anon: number; file: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

interface Point {
  hosts: number;
  vms: number;
  rssMedianKb: number;
  rssSamplesKb: number[];
  anonKb: number;
  gc: NodeJS.MemoryUsage;
  fds: number;
  connectS: number;
}

async function main(): Promise<void> {
  const port = await freePort();
  const agentPort = await freePort();
  const inspectPort = await freePort();
  const dataDir = join(tmp, 'data');
  const fleetDir = join(tmp, 'fleet');
  mkdirSync(fleetDir, { recursive: true, mode: 0o700 });
  log(`memory bench: N1 ${N1}, N2 ${N2} hosts, ${VMS} VMs each, fleet from ${FIRST_IP}, ${SAMPLES} RSS samples over ${SAMPLE_MS / 1000} s after ${SETTLE_MS / 1000} s idle; ` +
    `node ${process.version}, ${os.cpus().length} CPUs, temp ${tmp}${PRELOAD ? `; controller allocator LD_PRELOAD=${PRELOAD}` : ''}`);

  const ctl = spawnGroup(['--inspect=127.0.0.1:' + inspectPort, '--import', 'tsx', 'controller/main.ts'], {
    HOSTKEEPER_PORT: String(port), HOSTKEEPER_AGENT_PORT: String(agentPort), HOSTKEEPER_DATA_DIR: dataDir, HOSTKEEPER_LISTEN: '127.0.0.1',
    HOSTKEEPER_ADMIN_PASSWORD: PASSWORD, HOSTKEEPER_LOG_LEVEL: 'error', ...(PRELOAD ? { LD_PRELOAD: PRELOAD } : {}),
  });
  const pid = ctl.child.pid!;
  const ctlDied = () => (alive(ctl.child) ? undefined : `the controller exited: ${ctl.output()}`);
  const api = new Api(`http://127.0.0.1:${port}`);
  await until(async () => {
    try {
      await fetch(`${api.url}/zstack/v1/zones`, { signal: AbortSignal.timeout(500) });
      return true;
    } catch {
      return false;
    }
  }, 'the controller to answer', 60_000, ctlDied, 100);
  api.session = await login(api.url, PASSWORD);
  const insp = await Inspector.connect(inspectPort);
  const zone = await api.create('/zones', { name: 'mem-zone' });
  const cluster = await api.create('/clusters', { zoneUuid: zone.uuid, name: 'mem-cluster', hypervisorType: 'KVM' });
  const tk = await api.call('POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.uuid, ttlSeconds: 6 * 3600 } });
  if (tk.status !== 200) throw new Error(`bootstrap token answered ${tk.status}: ${JSON.stringify(tk.body)}`);
  const { token, caCertHash } = tk.body.inventory as { token: string; caCertHash?: string };
  const base = await insp.memoryUsage(true);
  log(`controller pid ${pid} on ${api.url} (agents: https://127.0.0.1:${agentPort}), embedded store in ${dataDir}; ` +
    `empty: RSS ${(base.rss / MiB).toFixed(1)} MB, heap used ${(base.heapUsed / MiB).toFixed(1)} MB after GC`);

  const first = ipToInt(FIRST_IP);
  const points: Point[] = [];
  for (const [from, to] of [[0, N1], [N1, N2]] as const) {
    const count = to - from;
    const ip0 = intToIp(first + from);
    seedVms(fleetDir, ip0, count, from);
    const t0 = Date.now();
    const fleet = spawnGroup(['--import', 'tsx', 'agent/fleet.ts', '--count', String(count), '--controller', api.url, '--bootstrap-token', token,
      ...(caCertHash ? ['--ca-cert-hash', caCertHash] : []), '--state-dir', fleetDir, '--first-ip', ip0, '--per-process', String(PER_PROCESS), '--log-level', 'error'], {});
    let last = Date.now();
    await until(async () => {
      const n = await api.count('hosts', 'status=Connected');
      if (Date.now() - last > 15_000) {
        last = Date.now();
        log(`  ... ${n}/${to} Connected after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      }
      return n >= to;
    }, `${to} hosts Connected`, Math.max(300_000, count * 120), () => ctlDied() ?? (alive(fleet.child) ? undefined : `the fleet exited: ${fleet.output()}`), 1000);
    const vms = await until(async () => {
      const n = await api.count('vm-instances');
      return n >= to * VMS ? n : undefined;
    }, `${to * VMS} VMs in the store`, 120_000, ctlDied, 1000);
    const connectS = (Date.now() - t0) / 1000;
    log(`${to} hosts Connected (${vms} VMs) ${connectS.toFixed(1)} s after spawning the fleet of ${count}; idle ${SETTLE_MS / 1000} s`);
    await sleep(SETTLE_MS);
    const samples: number[] = [];
    const anon: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      if (i) await sleep(SAMPLE_MS / Math.max(1, SAMPLES - 1));
      const r = rssKb(pid);
      samples.push(r.rss);
      anon.push(r.anon);
    }
    const gc = await insp.memoryUsage(true);
    const connected = await api.count('hosts', 'status=Connected');
    if (connected !== to) log(`  WARNING: ${connected} hosts Connected at the end of the sampling, not ${to}`);
    const p: Point = { hosts: to, vms, rssMedianKb: median(samples), rssSamplesKb: samples, anonKb: median(anon), gc, fds: openFds(pid), connectS };
    points.push(p);
    log(`  at ${to} hosts: RSS median ${(p.rssMedianKb / 1024).toFixed(1)} MB (samples ${samples.map((s) => (s / 1024).toFixed(0)).join(' ')}), ` +
      `after GC: RSS ${(gc.rss / MiB).toFixed(1)} MB, heap used ${(gc.heapUsed / MiB).toFixed(1)} MB, heap total ${(gc.heapTotal / MiB).toFixed(1)} MB, ` +
      `external ${(gc.external / MiB).toFixed(1)} MB (array buffers ${(gc.arrayBuffers / MiB).toFixed(1)} MB); fds ${p.fds}`);
    if (SNAPSHOT && SNAPSHOT_N1 && to === N1) {
      const f = join(tmp, 'n1.heapsnapshot');
      await insp.heapSnapshot(f);
      log(`  heap snapshot at ${N1}: ${f}`);
    }
  }

  // ---- the figures side by side, and the slope ----
  const [a, b] = points as [Point, Point];
  const dn = b.hosts - a.hosts;
  const kb = (x: number) => `${x.toFixed(1)} KB`;
  const mb = (x: number) => `${(x / MiB).toFixed(1)} MB`;
  const native = (p: Point) => p.gc.rss - p.gc.heapTotal - p.gc.external;
  const rows: [string, number, number][] = [
    ['RSS, median of samples (no forced GC)', a.rssMedianKb * 1024, b.rssMedianKb * 1024],
    ['RSS after a full GC', a.gc.rss, b.gc.rss],
    ['JS heap used after GC', a.gc.heapUsed, b.gc.heapUsed],
    ['JS heap total (reserved by V8)', a.gc.heapTotal, b.gc.heapTotal],
    ['external (Buffers, ArrayBuffers, native handles V8 knows)', a.gc.external, b.gc.external],
    ['RSS - heap total - external (native: OpenSSL, libuv, malloc)', native(a), native(b)],
  ];
  log('');
  log(`channel: TLS (https with the controller's client certificate, agents pinned to the CA; the heap snapshot counts the TLSSocket objects)`);
  log(table(['controller memory', `${a.hosts} hosts`, `${b.hosts} hosts`, 'slope per host', '100,000 hosts at that slope (extrapolated)'],
    rows.map(([name, x, y]) => {
      const slope = (y - x) / dn;
      return [name, mb(x), mb(y), kb(slope / 1024), mb(x + slope * (100_000 - a.hosts))];
    })));
  const slope = ((b.rssMedianKb - a.rssMedianKb) * 1024) / dn;
  log(`VMs in the store: ${a.vms} and ${b.vms}; controller fds ${a.fds} and ${b.fds}; connect ${a.connectS.toFixed(0)} s and ${b.connectS.toFixed(0)} s.`);
  log(`slope (RSS median): ${kb(slope / 1024)} per host (target <= 20 KB: ${slope / 1024 <= 20 ? 'ok' : 'MISS'}); per host average at ${b.hosts}: ${kb((b.rssMedianKb) / b.hosts)} (fixed part included).`);
  log(`100,000 hosts on one controller cannot be run here: the open-files limit (${(() => { try { return /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1]; } catch { return '?'; } })()}) ` +
    `is one socket per host; the 100,000 column is the ${b.hosts}-host figure plus the measured slope, not a measurement.`);

  if (SNAPSHOT) {
    const f = join(tmp, 'n2.heapsnapshot');
    const t0 = Date.now();
    await insp.heapSnapshot(f);
    const s2 = summariseSnapshot(f);
    rmSync(f, { force: true });
    const s1 = SNAPSHOT_N1 ? summariseSnapshot(join(tmp, 'n1.heapsnapshot')) : undefined;
    log('');
    log(`heap snapshot at ${b.hosts} hosts (${((Date.now() - t0) / 1000).toFixed(0)} s): ${s2.nodes} nodes, ${mb(s2.total)} shallow in all` +
      (s1 ? `; at ${a.hosts}: ${s1.nodes} nodes, ${mb(s1.total)}; per added host ${kb((s2.total - s1.total) / dn / 1024)}` : `; ${kb(s2.total / b.hosts / 1024)} per host (fixed part included)`));
    const per = s1 ? dn : b.hosts;
    const keys = [...new Set([...s2.buckets.keys(), ...(s1?.buckets.keys() ?? [])])];
    const d = (k: string) => {
      const x = s2.buckets.get(k) ?? { count: 0, bytes: 0 };
      const y = s1?.buckets.get(k) ?? { count: 0, bytes: 0 };
      return { count: x.count - y.count, bytes: x.bytes - y.bytes, total: x.bytes };
    };
    const top = keys.map((k) => ({ k, ...d(k) })).sort((x, y) => y.bytes - x.bytes).slice(0, TOP);
    log(table(['constructor / kind (shallow sizes)', 'count', 'per host', 'bytes', 'bytes per host'],
      top.map((t) => [t.k.slice(0, 70), String(t.count), (t.count / per).toFixed(2), mb(t.bytes), `${(t.bytes / per).toFixed(0)} B`])));
    const tls = s2.buckets.get('TLSSocket')?.count ?? 0;
    log(`TLSSocket objects in the heap: ${tls} (${b.hosts} hosts: ${tls >= b.hosts ? 'the channels are TLS' : 'fewer than the hosts'})` +
      (s1 ? `; rows are the difference between the snapshots at ${b.hosts} and ${a.hosts}, per added host` : `; per host = total / ${b.hosts}`));
  }
  insp.close();
  log(`load at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
