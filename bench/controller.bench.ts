/**
 * `npm run bench`: how fast the controller foundation is with a large embedded store.
 *
 * 1. Seeds a store (default 10,000 hosts, 100,000 VMs) by opening EmbeddedStore directly in
 *    a temp dir, then closes it so the controller starts from a snapshot.
 * 2. Start-up: spawns the real process (`node --import tsx controller/main.ts`) a few times
 *    and times spawn -> first HTTP answer (and -> first successful login). Run 1 also
 *    creates the admin account (scrypt) and the config rows, so it is reported apart.
 *    For context it also times `node -e 0` and `node --import tsx -e 0`.
 * 3. HTTP figures against the last started process, over one keep-alive socket, sequential:
 *    a trivial authed GET (404) as the same-run baseline, QueryHost by VM NIC ip, QueryHost
 *    state=Enabled status=Connected limit=100, and changeHostState (to the 202, and to the
 *    job's 200). The four are interleaved round by round, so background load on the machine
 *    hits them alike and the ratios stay meaningful.
 *
 * Environment: BENCH_HOSTS (10000), BENCH_VMS_PER_HOST (10), BENCH_SAMPLES (1000),
 * BENCH_WARMUP (100), BENCH_STARTS (4: one first start + 3 measured), BENCH_SEED (1),
 * BENCH_TMP (parent of the temp dir, default os.tmpdir(); must be a real disk for the
 * fdatasync figure to mean anything), BENCH_CPU_PROF (a directory: run the HTTP-phase
 * controller with --cpu-prof there, to see where a slow figure spends its time).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '../test/integration/proc.ts';
import { Client } from './http.ts';
import { prng, seedStore } from './seed.ts';
import { fmtBytes, fmtMs, median, summarize, type Summary, table } from './stats.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';



const HOSTS = intEnv('BENCH_HOSTS', 10_000);
const VMS_PER_HOST = intEnv('BENCH_VMS_PER_HOST', 10);
const SAMPLES = intEnv('BENCH_SAMPLES', 1000);
const WARMUP = intEnv('BENCH_WARMUP', 100);
const STARTS = Math.max(2, intEnv('BENCH_STARTS', 4));
const SEED = intEnv('BENCH_SEED', 1);
const CPU_PROF = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const ADMIN_PASSWORD = 'bench-admin-password';
const POLL_MS = 5;

// ---- cleanup: the child and the temp dir go away on every exit path ------------------------

const children = new Set<ChildProcess>();
let tempDir: string | undefined;

function cleanupSync(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  tempDir = undefined;
}
onExit(cleanupSync);

// ---- processes -------------------------------------------------------------------------------

interface Spawned {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function spawnNode(args: string[], env: NodeJS.ProcessEnv = process.env): Spawned {
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString('utf8')).slice(-8000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      children.delete(child);
      r(code);
    }),
  );
  return { child, output: () => out, exited };
}

/** Wall time of `node <args>` from spawn to exit. */
async function timeNode(args: string[]): Promise<number> {
  const t0 = performance.now();
  const p = spawnNode(args);
  const code = await p.exited;
  if (code !== 0) throw new Error(`node ${args.join(' ')} exited ${code}: ${p.output()}`);
  return performance.now() - t0;
}

interface Controller extends Spawned {
  port: number;
  dataDir: string;
}

function spawnController(dataDir: string, port: number, nodeArgs: string[] = []): Controller {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOSTKEEPER_DATA_DIR: dataDir,
    HOSTKEEPER_PORT: String(port),
    HOSTKEEPER_ADMIN_PASSWORD: ADMIN_PASSWORD,
    HOSTKEEPER_LOG_LEVEL: 'warn',
  };
  delete env.HOSTKEEPER_DATABASE_URL;
  return { ...spawnNode([...nodeArgs, '--import', 'tsx', 'controller/main.ts'], env), port, dataDir };
}

/** Polls until the controller answers anything over HTTP; resolves with the status. */
async function waitForAnswer(c: Controller, client: Client, path: string, deadlineMs = 120_000): Promise<number> {
  const until = performance.now() + deadlineMs;
  let done = false;
  const died = c.exited.then((code) => {
    if (!done) throw new Error(`controller exited (${code}) before answering:\n${c.output()}`);
  });
  died.catch(() => undefined);
  try {
    while (performance.now() < until) {
      const attempt = client.request('GET', path, undefined, { auth: false, agent: false, timeoutMs: 5000 }).then(
        (a) => a.status,
        () => undefined,
      );
      const status = await Promise.race([attempt, died.then(() => undefined)]);
      if (status !== undefined) return status;
      await sleep(POLL_MS);
    }
    throw new Error(`controller did not answer within ${deadlineMs} ms:\n${c.output()}`);
  } finally {
    done = true;
  }
}

async function login(client: Client): Promise<string> {
  const a = await client.request('PUT', '/zstack/v1/accounts/login', {
    logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD },
  }, { auth: false });
  if (a.status !== 200) throw new Error(`login answered ${a.status}: ${a.body}`);
  return JSON.parse(a.body).inventory.uuid as string;
}

/** SIGTERM and wait; the controller writes a fresh snapshot on the way out. */
async function stopController(c: Controller): Promise<number> {
  const t0 = performance.now();
  c.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 120_000)));
  const code = await Promise.race([c.exited, timeout]);
  clearTimeout(timer);
  if (code === 'timeout') {
    c.child.kill('SIGKILL');
    throw new Error('controller did not stop within 120 s of SIGTERM');
  }
  if (code !== 0) throw new Error(`controller exited ${code} on SIGTERM:\n${c.output()}`);
  return performance.now() - t0;
}

function rssOf(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

// ---- the run ---------------------------------------------------------------------------------

interface StartRun {
  run: number;
  answerMs: number;
  answerStatus: number;
  loginMs: number;
  stopMs?: number;
}


async function main(): Promise<void> {
  const parent = process.env.BENCH_TMP ? resolve(process.env.BENCH_TMP) : os.tmpdir();
  tempDir = mkdtempSync(join(parent, 'hk-bench-'));
  const dataDir = join(tempDir, 'data');
  log(`hostkeeper bench: node ${process.version}, ${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  log(`hosts ${HOSTS}, VMs/host ${VMS_PER_HOST}, samples ${SAMPLES} (+${WARMUP} warm-up), start-ups ${STARTS}, seed ${SEED}, data dir ${dataDir}`);

  // 1. seed
  const seeded = await seedStore(dataDir, { hosts: HOSTS, vmsPerHost: VMS_PER_HOST, clusters: 10, seed: SEED });
  const storeBytes = statSync(join(dataDir, 'store.json')).size;
  log(`seeded ${HOSTS} hosts (${seeded.enabledConnected} Enabled+Connected), ${seeded.vms} VMs, ${seeded.nics} NICs ` +
    `(${seeded.placedIps.length} on a host) in ${fmtMs(seeded.ms)}; store.json ${fmtBytes(storeBytes)}`);

  // 2. process baselines and start-up
  const bareNode: number[] = [];
  const tsxNode: number[] = [];
  for (let i = 0; i < 3; i++) {
    bareNode.push(await timeNode(['-e', '0']));
    tsxNode.push(await timeNode(['--import', 'tsx', '-e', '0']));
  }
  log(`node -e 0: ${bareNode.map(fmtMs).join(', ')}; node --import tsx -e 0: ${tsxNode.map(fmtMs).join(', ')}`);

  const runs: StartRun[] = [];
  let ctl: Controller | undefined;
  let client: Client | undefined;
  for (let run = 1; run <= STARTS; run++) {
    const last = run === STARTS;
    // The free port is found by binding and releasing it, so another process (a test run on
    // the same machine) may take it before the controller binds: then the run is retried.
    let c: Controller;
    let cl: Client;
    let t0: number;
    let answerStatus: number;
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      t0 = performance.now();
      c = spawnController(dataDir, port, last && CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : []);
      cl = new Client(port);
      try {
        answerStatus = await waitForAnswer(c, cl, '/zstack/v1/hosts?limit=1');
        break;
      } catch (err) {
        if (attempt >= 3 || !/already in use/.test(c.output())) throw err;
        log(`start-up run ${run}: port ${port} was taken meanwhile; retrying on another`);
      }
    }
    const answerMs = performance.now() - t0;
    if (answerStatus !== 401) throw new Error(`the unauthenticated probe got ${answerStatus}, not 401: is port ${c.port} someone else's?`);
    cl.session = await login(cl);
    const loginMs = performance.now() - t0;
    const r: StartRun = { run, answerMs, answerStatus, loginMs };
    runs.push(r);
    if (last) {
      ctl = c;
      client = cl;
      log(`start-up run ${run}: first answer (${answerStatus}) ${fmtMs(answerMs)}, first login 200 ${fmtMs(loginMs)}; kept for the HTTP figures (RSS ${fmtBytes(rssOf(c.child.pid) ?? 0)})`);
    } else {
      cl.close();
      r.stopMs = await stopController(c);
      log(`start-up run ${run}: first answer (${answerStatus}) ${fmtMs(answerMs)}, first login 200 ${fmtMs(loginMs)}; SIGTERM -> exit ${fmtMs(r.stopMs)}`);
    }
  }

  // 3. HTTP figures
  const http = client!;
  const rnd = prng(SEED + 1);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  // ip -> host, to check every answer of the NIC query.
  const hostByIp = new Map<string, string>();
  for (let i = 0; i < seeded.placedIps.length; i++) hostByIp.set(seeded.placedIps[i]!, seeded.placedIpHosts[i]!);
  // Local copy of every host's state, flipped as the state changes below succeed, so the
  // page size of the Enabled+Connected query is known exactly at every moment.
  const hostsNow = seeded.hosts.map((h) => ({ ...h }));
  const switchable = hostsNow.filter((h) => h.state === 'Enabled' || h.state === 'Disabled');
  let enabledConnected = seeded.enabledConnected;
  const unknownJob = '0123456789abcdef0123456789abcdef';

  const fail = (what: string, a: { status: number; body: string }) => {
    throw new Error(`${what}: unexpected answer ${a.status}: ${a.body.slice(0, 500)}`);
  };

  async function baseline(): Promise<number> {
    const a = await http.request('GET', `/zstack/v1/api-jobs/${unknownJob}`);
    if (a.status !== 404) fail('baseline', a);
    return a.ms;
  }
  async function byIp(): Promise<number> {
    const ip = pick(seeded.placedIps);
    const a = await http.request('GET', `/zstack/v1/hosts?q=${encodeURIComponent(`vmInstance.vmNics.ip=${ip}`)}`);
    const inv = a.status === 200 ? JSON.parse(a.body).inventories : undefined;
    if (!inv || inv.length !== 1 || inv[0].uuid !== hostByIp.get(ip)) fail(`QueryHost vmInstance.vmNics.ip=${ip}`, a);
    return a.ms;
  }
  async function byState(): Promise<number> {
    const a = await http.request('GET', '/zstack/v1/hosts?q=state=Enabled&q=status=Connected&limit=100');
    const inv = a.status === 200 ? (JSON.parse(a.body).inventories as { state: string; status: string }[]) : undefined;
    if (!inv || inv.length !== Math.min(100, enabledConnected) || inv.some((h) => h.state !== 'Enabled' || h.status !== 'Connected')) {
      fail('QueryHost state=Enabled status=Connected limit=100', a);
    }
    return a.ms;
  }
  async function change(): Promise<[number, number]> {
    const h = pick(switchable);
    const event = h.state === 'Enabled' ? 'disable' : 'enable';
    const t0 = performance.now();
    const a = await http.request('PUT', `/zstack/v1/hosts/${h.uuid}/actions`, { changeHostState: { stateEvent: event } });
    const ackMs = performance.now() - t0;
    if (a.status !== 202) fail(`changeHostState ${event} host ${h.uuid}`, a);
    const path = new URL(JSON.parse(a.body).location as string).pathname;
    const j = await http.request('GET', path);
    const fullMs = performance.now() - t0;
    const want = event === 'disable' ? 'Disabled' : 'Enabled';
    if (j.status !== 200 || JSON.parse(j.body).inventory?.state !== want) fail(`job ${path} of changeHostState ${event}`, j);
    h.state = want;
    if (h.status === 'Connected') enabledConnected += want === 'Enabled' ? 1 : -1;
    return [ackMs, fullMs];
  }

  for (let i = 0; i < WARMUP; i++) {
    await baseline();
    await byIp();
    await byState();
    await change();
  }
  const s = { base: [] as number[], ip: [] as number[], state: [] as number[], ack: [] as number[], full: [] as number[] };
  const tHttp = performance.now();
  for (let i = 0; i < SAMPLES; i++) {
    s.base.push(await baseline());
    s.ip.push(await byIp());
    s.state.push(await byState());
    const [ack, full] = await change();
    s.ack.push(ack);
    s.full.push(full);
  }
  log(`HTTP phase: ${SAMPLES} rounds in ${fmtMs(performance.now() - tHttp)}; controller RSS ${fmtBytes(rssOf(ctl!.child.pid) ?? 0)}`);
  http.close();
  const journalBytes = statSync(join(dataDir, 'journal.ndjson')).size;
  const stopMs = await stopController(ctl!);
  runs[runs.length - 1]!.stopMs = stopMs;
  log(`journal after the HTTP phase ${fmtBytes(journalBytes)}; SIGTERM -> exit (writes the snapshot) ${fmtMs(stopMs)}`);
  if (CPU_PROF) log(`CPU profile of the HTTP-phase controller written to ${CPU_PROF}`);

  // Where start-up time goes: one in-process run of the real start path (bench/startup-phases.ts).
  const ph = spawnNode(['--import', 'tsx', 'bench/startup-phases.ts', dataDir, String(await freePort())]);
  if ((await ph.exited) !== 0) throw new Error(`startup-phases failed:\n${ph.output()}`);
  const phases = JSON.parse(ph.output().trim().split('\n').pop()!) as Record<string, number>;
  const p = (k: string) => fmtMs(phases[k]!);
  const indexMs = phases.open! - phases.read! - phases.parse!;

  // 4. the table
  const base = summarize(s.base);
  const httpRow = (name: string, x: Summary, target?: number): string[] => [
    name, String(x.n), fmtMs(x.median), fmtMs(x.p95), fmtMs(x.p99), target ? `< ${fmtMs(target)}` : '',
    target ? `${(x.median / base.median).toFixed(1)}x` : '1.0x', target ? (x.median < target ? 'ok' : 'MISS') : '',
  ];
  const later = runs.slice(1);
  const startMed = median(later.map((r) => r.answerMs));
  const tsxMed = median(tsxNode);
  const vmCount = seeded.vms >= 1000 ? `${Math.round(seeded.vms / 1000)}k` : String(seeded.vms);
  const hostCount = HOSTS >= 1000 ? `${Math.round(HOSTS / 1000)}k` : String(HOSTS);
  const procRow = (name: string, values: number[], target?: number, ratio = true): string[] => [
    name, String(values.length), fmtMs(median(values)), '', '', target ? `< ${fmtMs(target)}` : '',
    ratio ? `${(median(values) / tsxMed).toFixed(1)}x` : '', target ? (median(values) < target ? 'ok' : 'MISS') : '',
  ];
  log('');
  log(table(
    ['figure', 'n', 'median', 'p95', 'p99', 'target', 'ratio', 'ok'],
    [
      httpRow('baseline: trivial authed GET (404)', base),
      httpRow('QueryHost vmInstance.vmNics.ip=<ip>', summarize(s.ip), 5),
      httpRow('QueryHost state=Enabled status=Connected limit=100', summarize(s.state), 5),
      httpRow('changeHostState -> 202 (committed, fdatasync)', summarize(s.ack), 10),
      httpRow('changeHostState -> 202 + GET job -> 200', summarize(s.full), 10),
      procRow(`start-up (${hostCount} hosts, ${vmCount} VMs, ${fmtBytes(storeBytes)}), runs 2..${STARTS}`, later.map((r) => r.answerMs), 3000),
      procRow('start-up run 1 (creates admin + configs)', [runs[0]!.answerMs]),
      procRow(`spawn -> first login 200, runs 2..${STARTS}`, later.map((r) => r.loginMs)),
      procRow('baseline: node --import tsx -e 0', tsxNode),
      procRow('baseline: node -e 0', bareNode),
    ],
  ));
  log('ratio: HTTP figures to the trivial GET baseline (same run, interleaved); process figures to `node --import tsx -e 0`.');
  log(`start-up runs (spawn -> first answer / first login 200): ${runs.map((r) => `#${r.run} ${fmtMs(r.answerMs)} / ${fmtMs(r.loginMs)}`).join(', ')}`);
  log(`start-up breakdown (one in-process run): node+tsx boot ${p('boot')} + imports ${p('imports')} + startController ${p('start')} = ${p('total')}; ` +
    `store re-timed warm: EmbeddedStore.open ${p('open')} = readFile ${p('read')} + JSON.parse ${p('parse')} + tables/indexes ~${fmtMs(indexMs)}`);
}

main().then(
  () => {
    cleanupSync();
  },
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
    cleanupSync();
    process.exitCode = 1;
  },
);
