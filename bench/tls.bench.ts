/**
 * `npx tsx bench/tls.bench.ts`: what TLS on the command channel costs, in one run, side by
 * side: the same fleet (agent/fleet.ts, simulated hosts on 127.x.y.z) against the same
 * in-process controller, once over TLS (the default: mutual TLS, certificates from the
 * controller's CA) and once over plain HTTP (agents started with the fleet's bench-only
 * `--plain-http`, the controller with `agents.tls: null`).
 *
 * For each mode:
 * 1. registration: spawn the fleet, time until every host is tracked (Connected, channel open);
 * 2. heartbeat CPU: the controller's CPU over BENCH_IDLE_MS with every channel open and only
 *    heartbeats arriving (ping.interval raised so the tracker's pings do not mix in), shown
 *    as % of a core and per heartbeat (heartbeats/s from the fleet-size period, protocol/agent.ts);
 * 3. ping sweep: `core.agents.pingAll()` (over the channels) once to warm up, then
 *    BENCH_SWEEPS times: wall time and controller CPU per ping;
 * 4. one-off calls: BENCH_CALLS signed `AgentClient.call(/host/echo)` spread over 100 hosts
 *    at concurrency 100, each a fresh connection (as commands are): wall and CPU per call.
 *    Over TLS that is a handshake per call (resumed from the host's last session after the
 *    first).
 *
 * CPU figures are `process.cpuUsage()` of this process, which hosts the controller.
 * Environment: BENCH_HOSTS (1000), BENCH_PER_PROCESS (2500), BENCH_SWEEPS (3), BENCH_CALLS
 * (2000), BENCH_IDLE_MS (5000), BENCH_FIRST_IP (127.20.0.1), BENCH_MODES (tls,plain).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AgentClient } from '../controller/agents/client.ts';
import { HostAgents } from '../controller/agents/host-agents.ts';
import type { Core } from '../controller/core.ts';
import { type RunningController, startController } from '../controller/server.ts';
import { createBootstrapToken } from '../controller/services/bootstrap.ts';
import { createCluster, createZone } from '../controller/services/inventory.ts';
import { AGENT_PATHS, heartbeatPeriodFor } from '../protocol/agent.ts';
import type { HostRow } from '../protocol/resources.ts';
import { intEnv, log, onExit, ROOT, sleep } from './common.ts';

const HOSTS = intEnv('BENCH_HOSTS', 1000, 10);
const PER_PROCESS = intEnv('BENCH_PER_PROCESS', 2500, 1);
const SWEEPS = intEnv('BENCH_SWEEPS', 3, 1);
const CALLS = intEnv('BENCH_CALLS', 2000, 100);
const IDLE_MS = intEnv('BENCH_IDLE_MS', 5000, 1000);
const FIRST_IP = process.env.BENCH_FIRST_IP || '127.20.0.1';
const MODES = (process.env.BENCH_MODES || 'tls,plain').split(',') as ('tls' | 'plain')[];
const ADMIN_PASSWORD = 'bench-admin-password';

let fleet: ChildProcess | undefined;
const temps: string[] = [];
onExit(() => {
  if (fleet?.pid) {
    try {
      process.kill(-fleet.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const cpuUs = (from: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(from);
  return d.user + d.system;
};

async function until(fn: () => boolean | Promise<boolean>, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function setHostConfig(core: Core, name: string, value: string): Promise<void> {
  const row = await core.repo.transaction((tx) => core.configs.prepareUpdate(tx, 'host', name, value));
  core.configs.applied(row);
}

interface Figures {
  registerS: number;
  idlePct: number;
  perBeatUs: number;
  sweepMs: number;
  perPingUs: number;
  callsPerS: number;
  perCallUs: number;
}

async function clusterOf(core: Core): Promise<string> {
  // Straight through the store: the admin API is not what is measured here.
  return core.repo.transaction(async (tx) => {
    const z = await createZone(tx, Date.now(), { name: 'bench' });
    return (await createCluster(tx, Date.now(), { zoneUuid: z.uuid, name: 'bench', hypervisorType: 'KVM' })).uuid;
  });
}

async function run(mode: 'tls' | 'plain'): Promise<Figures> {
  const dataDir = mkdtempSync(join(os.tmpdir(), `hk-tls-bench-${mode}-`));
  temps.push(dataDir);
  const logger = pino({ level: 'error' });
  const ctl: RunningController = await startController({
    dataDir, port: 0, host: '127.0.0.1', adminPassword: ADMIN_PASSWORD, log: logger, sync: false,
    ...(mode === 'plain' ? { agents: { tls: null } } : {}),
  });
  const { core } = ctl;
  const clusterUuid = await clusterOf(core);
  const { token } = await core.repo.transaction((tx) => createBootstrapToken(tx, Date.now(), clusterUuid, 3600));

  const t0 = performance.now();
  const args = ['--import', 'tsx', 'agent/fleet.ts', '--count', String(HOSTS), '--controller', ctl.url, '--bootstrap-token', token,
    '--ca-cert-hash', core.pki.caCertHash, '--state-dir', join(dataDir, 'fleet'), '--first-ip', FIRST_IP, '--per-process', String(PER_PROCESS),
    '--log-level', 'error', ...(mode === 'plain' ? ['--plain-http'] : [])];
  fleet = spawn(process.execPath, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'ignore', 'inherit'] });
  await until(() => core.agents.trackedCount >= HOSTS, `${HOSTS} hosts tracked (${mode})`, 20 * 60_000);
  const registerS = (performance.now() - t0) / 1000;
  log(`${mode}: ${HOSTS} hosts registered and Connected in ${registerS.toFixed(1)} s`);

  await setHostConfig(core, 'ping.interval', '3600');
  await sleep(2000);
  const i0 = process.cpuUsage();
  const w0 = performance.now();
  await sleep(IDLE_MS);
  const idleUsPerMs = cpuUs(i0) / (performance.now() - w0);
  const beatsPerS = HOSTS / (heartbeatPeriodFor(HOSTS) / 1000);
  const idlePct = idleUsPerMs / 10;
  const perBeatUs = (idleUsPerMs * 1000) / beatsPerS;
  log(`${mode}: idle ${idlePct.toFixed(1)}% of a core for ~${Math.round(beatsPerS)} heartbeats/s = ${perBeatUs.toFixed(1)} µs/heartbeat`);

  const sweeps: { ms: number; us: number; n: number }[] = [];
  for (let s = 0; s <= SWEEPS; s++) {
    const c0 = process.cpuUsage();
    const st = performance.now();
    const n = await core.agents.pingAll();
    const r = { ms: performance.now() - st, us: cpuUs(c0), n };
    if (s > 0) sweeps.push(r);
    log(`${mode}: sweep ${s === 0 ? '0 (warm-up)' : s}: ${n} pings in ${r.ms.toFixed(0)} ms, ${(r.us / n).toFixed(1)} µs CPU/ping`);
    await sleep(300);
  }
  const med = <T>(xs: T[], f: (x: T) => number) => xs.map(f).sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

  const hosts = (await core.repo.all<HostRow>('host')).slice(0, 100);
  const client = new AgentClient(() => Date.now(), 100, 10, mode === 'tls' ? core.pki : null);
  const targets = hosts.map((h) => HostAgents.target(h));
  let next = 0;
  const c0 = process.cpuUsage();
  const ct0 = performance.now();
  await Promise.all(Array.from({ length: 100 }, async () => {
    while (next < CALLS) {
      const t = targets[next++ % targets.length]!;
      await client.call(t, AGENT_PATHS.echo, {}, 10_000);
    }
  }));
  const callMs = performance.now() - ct0;
  const callUs = cpuUs(c0);
  log(`${mode}: ${CALLS} one-off calls in ${callMs.toFixed(0)} ms, ${(callUs / CALLS).toFixed(0)} µs CPU/call`);

  process.kill(-fleet.pid!, 'SIGKILL');
  fleet = undefined;
  await ctl.close();
  await sleep(1000);
  return {
    registerS, idlePct, perBeatUs, sweepMs: med(sweeps, (x) => x.ms), perPingUs: med(sweeps, (x) => x.us / x.n),
    callsPerS: CALLS / (callMs / 1000), perCallUs: callUs / CALLS,
  };
}

async function main(): Promise<void> {
  log(`bench/tls: ${HOSTS} agents, ${os.cpus().length} CPUs, Node ${process.version}`);
  const out: Partial<Record<'tls' | 'plain', Figures>> = {};
  for (const m of MODES) out[m] = await run(m);
  const row = (name: string, f: (x: Figures) => string) => `| ${name} | ${MODES.map((m) => f(out[m]!)).join(' | ')} |`;
  log('');
  log(`| ${HOSTS} hosts | ${MODES.join(' | ')} |`);
  log(`|---|${MODES.map(() => '---').join('|')}|`);
  log(row('register + connect all', (x) => `${x.registerS.toFixed(1)} s`));
  log(row('controller idle CPU (heartbeats only)', (x) => `${x.idlePct.toFixed(1)} % of a core`));
  log(row('CPU per heartbeat', (x) => `${x.perBeatUs.toFixed(1)} µs`));
  log(row('ping sweep (median)', (x) => `${x.sweepMs.toFixed(0)} ms`));
  log(row('CPU per ping (channel)', (x) => `${x.perPingUs.toFixed(1)} µs`));
  log(row('one-off signed calls', (x) => `${x.callsPerS.toFixed(0)}/s`));
  log(row('CPU per one-off call', (x) => `${x.perCallUs.toFixed(0)} µs`));
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`bench/tls: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
