/**
 * `npx tsx agent/measure.ts [--fleet N]`: start time and idle resident memory of the agent
 * process, run from source (tsx loader) and bundled (dist/, built first), for both
 * hypervisors; then fleets of N and 2N agents (default N = 1,000) in ONE child process,
 * through the real `fleet` command against a minimal in-process controller, with a channel
 * open to every agent. Prints one line per figure.
 *
 * "Idle" means: started, connected, facts and capacity answered, a channel open and
 * pinged, then 3 s with nothing to do. RSS is VmRSS from /proc/<pid>/status.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { AGENT_PATHS, CONTROLLER_AGENT_PATHS, type RegisterCmd, signedHeaders } from '../protocol/agent.ts';
import { buildAgent } from './build.ts';
import { postJson } from './http-client.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rssKb(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)![1]);
}

function lines(child: ChildProcess, onLine: (l: string) => void): void {
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
}

function waitLine(child: ChildProcess, re: RegExp, ms: number): Promise<string> {
  return new Promise((resolveLine, reject) => {
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${ms} ms`)), ms);
    lines(child, (l) => {
      if (re.test(l)) {
        clearTimeout(timer);
        resolveLine(l);
      }
    });
    child.on('exit', (code) => reject(new Error(`exited (${code}) before ${re}`)));
  });
}

/** Opens a signed channel and pings it once; resolves with a closer. */
function channel(url: string, hostUuid: string, secret: string): Promise<() => void> {
  return new Promise((res, rej) => {
    const req = http.request(url + AGENT_PATHS.channel, {
      method: 'POST',
      agent: false,
      headers: { 'transfer-encoding': 'chunked', ...signedHeaders(secret, hostUuid, 'POST', AGENT_PATHS.channel, '', Date.now()) },
    });
    req.on('response', (r) => {
      r.setEncoding('utf8');
      r.on('data', (c: string) => {
        if (c.includes('"pong"')) res(() => req.destroy());
      });
    });
    req.on('error', rej);
    req.write(`${JSON.stringify({ t: 'ping', id: 1 })}\n`);
  });
}

async function measureOne(kind: 'tsx' | 'bundle', hypervisor: 'libvirt' | 'simulator', port: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hk-measure-'));
  const hostUuid = randomBytes(16).toString('hex');
  const secret = randomBytes(24).toString('hex');
  await writeFile(join(dir, 'agent.json'), JSON.stringify({ hostUuid, secret }), { mode: 0o600 });
  const args = ['--listen', `127.0.0.1:${port}`, '--state-dir', dir, '--hypervisor', hypervisor, '--log-level', 'info'];
  const argv = kind === 'tsx' ? ['--import', 'tsx', 'agent/main.ts', ...args] : [join(ROOT, 'dist/hostkeeper-agent.mjs'), ...args];
  const t0 = performance.now();
  const child = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const ready = JSON.parse(await waitLine(child, /"agent ready"/, 20_000)) as { startMs: number };
    const spawnToReady = performance.now() - t0;
    const url = `http://127.0.0.1:${port}`;
    const call = (path: string, body: unknown) => {
      const text = JSON.stringify(body);
      return postJson(url + path, text, signedHeaders(secret, hostUuid, 'POST', path, text, Date.now()), 10_000);
    };
    await call(AGENT_PATHS.connect, { hostUuid, controllerUrl: 'http://127.0.0.1:1' });
    await call(AGENT_PATHS.fact, {});
    await call(AGENT_PATHS.capacity, {});
    await call(AGENT_PATHS.vmList, {});
    const close = await channel(url, hostUuid, secret);
    await wait(3_000);
    const rss = await rssKb(child.pid!);
    close();
    return `agent ${kind.padEnd(6)} ${hypervisor.padEnd(9)}: process ready in ${Math.round(spawnToReady)} ms (startAgent ${ready.startMs} ms), idle RSS ${(rss / 1024).toFixed(1)} MB`;
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
}

/** A controller that only registers hosts (and keeps their secrets). */
async function tinyController(): Promise<{ url: string; hosts: Map<string, { secret: string; ip: string; port: number }>; close(): void }> {
  const hosts = new Map<string, { secret: string; ip: string; port: number }>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (req.url !== CONTROLLER_AGENT_PATHS.register) {
        res.writeHead(200).end('{"success":true}');
        return;
      }
      const cmd = JSON.parse(Buffer.concat(chunks).toString()) as RegisterCmd;
      const hostUuid = randomBytes(16).toString('hex');
      const secret = randomBytes(24).toString('hex');
      hosts.set(hostUuid, { secret, ip: cmd.managementIp, port: cmd.port });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: true, hostUuid, secret }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hosts, close: () => server.close() };
}

interface FleetFigures {
  upMs: number;
  final: string;
  rssUp: number;
  rssChannels: number;
}

async function measureFleet(kind: 'tsx' | 'bundle', count: number): Promise<FleetFigures> {
  const ctl = await tinyController();
  const dir = await mkdtemp(join(tmpdir(), 'hk-fleet-'));
  const firstIp = `127.${60 + Math.floor(Math.random() * 100)}.0.1`;
  const args = ['--count', String(count), '--per-process', String(count), '--controller', ctl.url, '--bootstrap-token', 't', '--state-dir', dir, '--first-ip', firstIp];
  const argv = kind === 'tsx' ? ['--import', 'tsx', 'agent/fleet.ts', ...args] : [join(ROOT, 'dist/hostkeeper-fleet.mjs'), ...args];
  const t0 = performance.now();
  const parent = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const final = await waitLine(parent, /agents up on/, 300_000);
    const upMs = performance.now() - t0;
    const childPid = Number((await readFile(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8')).trim().split(/\s+/)[0]);
    await wait(2_000);
    const rssUp = await rssKb(childPid);
    // A channel to every agent, as a controller would hold.
    const closers: (() => void)[] = [];
    const hosts = [...ctl.hosts.entries()];
    for (let i = 0; i < hosts.length; i += 100) {
      closers.push(...(await Promise.all(hosts.slice(i, i + 100).map(([uuid, h]) => channel(`http://${h.ip}:${h.port}`, uuid, h.secret)))));
    }
    await wait(3_000);
    const rssChannels = await rssKb(childPid);
    for (const c of closers) c();
    return { upMs, final, rssUp, rssChannels };
  } finally {
    parent.kill('SIGTERM');
    await new Promise((r) => parent.once('exit', r));
    ctl.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const fleetArg = process.argv.indexOf('--fleet');
const fleetCount = fleetArg > 0 ? Number(process.argv[fleetArg + 1]) : 1000;
await buildAgent();
let port = 17400 + Math.floor(Math.random() * 500);
for (const kind of ['tsx', 'bundle'] as const) {
  for (const hv of ['libvirt', 'simulator'] as const) console.log(await measureOne(kind, hv, port++));
}
for (const kind of ['tsx', 'bundle'] as const) {
  // Two sizes (N and 2N): the difference is what one more agent costs, without the process's fixed part.
  const one = await measureFleet(kind, fleetCount);
  const two = await measureFleet(kind, 2 * fleetCount);
  const per = (a: number, b: number) => Math.round((b - a) / fleetCount);
  console.log(`fleet  ${kind.padEnd(6)} ${fleetCount} agents in 1 process: all registered in ${(one.upMs / 1000).toFixed(1)} s; "${one.final}"`);
  console.log(
    `fleet  ${kind.padEnd(6)} ${fleetCount} agents: child RSS ${(one.rssUp / 1024).toFixed(0)} MB idle, ${(one.rssChannels / 1024).toFixed(0)} MB with a channel open to each;` +
      ` ${2 * fleetCount}: ${(two.rssUp / 1024).toFixed(0)} / ${(two.rssChannels / 1024).toFixed(0)} MB, so one more agent costs ~${per(one.rssUp, two.rssUp)} KB idle, ~${per(one.rssChannels, two.rssChannels)} KB with its channel`,
  );
}
