/**
 * A simulated fleet: N real agent servers (simulator hypervisor), each on its own loopback
 * address (all of 127.0.0.0/8 is local on Linux) and the agent port, each registering with
 * the controller through a bootstrap token.
 *
 * Why child processes: the open-files limit (20,000 here, and not raisable) is per process,
 * and each agent holds a listening socket, a channel socket and transient ones; so
 * `--per-process` agents (default 2,500) run in each child. Inside a process everything
 * that can be shared is: the express app, one pino logger, one facts schedule, the OS facts.
 */
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AGENT_PORT } from '../protocol/agent.ts';
import { type Clock, systemClock } from './clock.ts';
import type { SimulatorDriver } from './drivers/simulator.ts';
import { createLimiter } from './limiter.ts';
import { createAgentLogger, type Logger } from './log.ts';
import type { Backoff } from '../protocol/backoff.ts';
import { type RunningAgent, startAgent } from './server.ts';

export const DEFAULT_FIRST_IP = '127.1.0.1';
export const DEFAULT_PER_PROCESS = 2500;
/** Registrations in flight across the whole fleet. */
export const DEFAULT_REGISTER_CONCURRENCY = 50;
/** Agents being started (files read, socket bound) at once in one process. */
const START_CONCURRENCY = 200;

export interface FleetOptions {
  count: number;
  controllerUrl: string;
  token: string;
  /** The token's caCertHash: every agent pins the controller CA with it. */
  caCertHash?: string;
  /** Agents serve plain HTTP (bench/ only: what TLS costs). */
  plainHttp?: boolean;
  /** Each agent's state lives in `<stateDir>/<its ip>`. */
  stateDir: string;
  firstIp?: string;
  port?: number;
  perProcess?: number;
  registerConcurrency?: number;
  registerBackoff?: Backoff;
  log?: Logger;
  logLevel?: string;
  clock?: Clock;
  /** Run every agent in this process (tests, measurements): no children. */
  inProcess?: boolean;
  /** Called as agents come up (started and registered). */
  onProgress?: (up: number, total: number) => void;
}

export type FleetAgent = RunningAgent & { ip: string; sim: SimulatorDriver };

export interface InProcessFleet {
  agents: FleetAgent[];
  firstIp: string;
  lastIp: string;
  port: number;
  /** Start to all registered. */
  ms: number;
  stop(): Promise<void>;
}

export interface ChildFleet {
  children: number;
  firstIp: string;
  lastIp: string;
  port: number;
  ms: number;
  /** Resolves (with the exit code the fleet should have) when a child fails or all stopped. */
  done: Promise<number>;
  stop(): Promise<void>;
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}
export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The addresses of a fleet: consecutive from firstIp, all inside 127.0.0.0/8. */
export function fleetAddresses(firstIp: string, count: number): { first: number; last: number } {
  const first = ipToInt(firstIp);
  const last = first + count - 1;
  const lo = ipToInt('127.0.0.1');
  const hi = ipToInt('127.255.255.254');
  if (first < lo || last > hi) throw new Error(`${count} agents from ${firstIp} do not fit in 127.0.0.1-127.255.255.254`);
  return { first, last };
}

export function startFleet(opts: FleetOptions & { inProcess: true }): Promise<InProcessFleet>;
export function startFleet(opts: FleetOptions & { inProcess?: false }): Promise<ChildFleet>;
export function startFleet(opts: FleetOptions): Promise<InProcessFleet | ChildFleet> {
  return opts.inProcess ? startInProcess(opts) : startChildren(opts);
}

async function startInProcess(opts: FleetOptions): Promise<InProcessFleet> {
  const clock = opts.clock ?? systemClock;
  const t0 = clock.now();
  const port = opts.port ?? AGENT_PORT;
  const firstIp = opts.firstIp ?? DEFAULT_FIRST_IP;
  const { first, last } = fleetAddresses(firstIp, opts.count);
  const log = opts.log ?? createAgentLogger({ level: opts.logLevel ?? 'warn', svc: 'fleet' });
  const registerLimiter = createLimiter(opts.registerConcurrency ?? DEFAULT_REGISTER_CONCURRENCY);
  const startLimiter = createLimiter(START_CONCURRENCY);
  const agents: FleetAgent[] = new Array(opts.count);
  let up = 0;
  let failure: Error | undefined;

  const stopAll = async () => {
    const limit = createLimiter(START_CONCURRENCY);
    await Promise.all(agents.filter(Boolean).map((a) => limit.run(() => a.stop().catch(() => {}))));
  };

  await Promise.all(
    Array.from({ length: opts.count }, (_, i) =>
      startLimiter
        .run(async () => {
          if (failure) return;
          const ip = intToIp(first + i);
          const a = await startAgent({
            listen: { host: ip, port },
            stateDir: join(opts.stateDir, ip),
            hypervisor: 'simulator',
            controllerUrl: opts.controllerUrl,
            bootstrapToken: opts.token,
            caCertHash: opts.caCertHash,
            plainHttp: opts.plainHttp,
            hostname: `sim-${ip.replaceAll('.', '-')}`,
            clock,
            log: log.child({ agent: ip }),
            registerLimiter,
            registerBackoff: opts.registerBackoff,
          });
          agents[i] = Object.assign(a, { ip, sim: a.driver as SimulatorDriver });
          return a;
        })
        .then(async (a) => {
          if (!a) return;
          await a.registered;
          up++;
          opts.onProgress?.(up, opts.count);
        })
        .catch((err: Error) => {
          failure ??= err;
        }),
    ),
  );
  if (failure) {
    await stopAll();
    throw failure;
  }
  return { agents, firstIp, lastIp: intToIp(last), port, ms: clock.now() - t0, stop: stopAll };
}

// ---- child processes ----------------------------------------------------------------------

type ToChild = { type: 'start'; opts: Omit<FleetOptions, 'log' | 'clock' | 'onProgress' | 'inProcess'> };
type FromChild = { type: 'progress'; up: number } | { type: 'ready'; up: number } | { type: 'error'; message: string };

/** The module that runs a child (fleet.ts): it calls runFleetChild() when started with --child. */
const CHILD_ENTRY = new URL('./fleet.ts', import.meta.url);

async function startChildren(opts: FleetOptions): Promise<ChildFleet> {
  const t0 = Date.now();
  const port = opts.port ?? AGENT_PORT;
  const firstIp = opts.firstIp ?? DEFAULT_FIRST_IP;
  const { first, last } = fleetAddresses(firstIp, opts.count);
  const per = opts.perProcess ?? DEFAULT_PER_PROCESS;
  const n = Math.ceil(opts.count / per);
  const registerConcurrency = Math.max(1, Math.floor((opts.registerConcurrency ?? DEFAULT_REGISTER_CONCURRENCY) / n));
  const ups = new Array<number>(n).fill(0);
  // From source, children load fleet.ts through tsx; from the bundle, the bundle itself.
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = fromSource ? CHILD_ENTRY.pathname : new URL(import.meta.url).pathname;
  const execArgv = fromSource ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] : [];

  let finish!: (code: number) => void;
  const done = new Promise<number>((r) => (finish = r));
  let stopping = false;
  let readyCount = 0;
  let readyResolve!: () => void;
  let readyReject!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    readyResolve = res;
    readyReject = rej;
  });

  const children = Array.from({ length: n }, (_, k) => {
    const count = Math.min(per, opts.count - k * per);
    const chunkFirst = intToIp(first + k * per);
    const range = `${chunkFirst}-${intToIp(first + k * per + count - 1)}`;
    const child = fork(entry, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
    const msg: ToChild = {
      type: 'start',
      opts: {
        count, controllerUrl: opts.controllerUrl, token: opts.token, caCertHash: opts.caCertHash, plainHttp: opts.plainHttp, stateDir: opts.stateDir, firstIp: chunkFirst, port,
        registerConcurrency, registerBackoff: opts.registerBackoff, logLevel: opts.logLevel,
      },
    };
    child.send(msg);
    let isReady = false;
    child.on('message', (m: FromChild) => {
      if (m.type === 'progress' || m.type === 'ready') {
        ups[k] = m.up;
        opts.onProgress?.(ups.reduce((a, b) => a + b, 0), opts.count);
      }
      if (m.type === 'ready' && !isReady) {
        isReady = true;
        if (++readyCount === n) readyResolve();
      }
      if (m.type === 'error') readyReject(new Error(`agents ${range}: ${m.message}`));
    });
    child.on('exit', (code, signal) => {
      if (stopping) return;
      const why = new Error(`the process of agents ${range} exited (${signal ?? `code ${code}`})`);
      readyReject(why);
      void stop().then(() => finish(1));
    });
    return child;
  });

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) return r();
            c.once('exit', () => r());
            c.kill('SIGTERM');
          }),
      ),
    );
  };

  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    children: n, firstIp, lastIp: intToIp(last), port, ms: Date.now() - t0, done,
    stop: async () => {
      await stop();
      finish(0);
    },
  };
}

/** In a child: take the start message, run the agents in-process, report, stop on SIGTERM. */
export function runFleetChild(): void {
  const send = (m: FromChild) => process.send?.(m);
  process.once('message', async (m: ToChild) => {
    let fleet: InProcessFleet | undefined;
    let stopping = false;
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      await fleet?.stop();
      process.exit(0);
    };
    process.on('SIGTERM', () => void stop());
    process.on('SIGINT', () => {}); // the parent forwards SIGTERM
    process.on('disconnect', () => void stop()); // the parent died
    let last = 0;
    try {
      fleet = await startFleet({
        ...m.opts,
        inProcess: true,
        onProgress: (up) => {
          const now = Date.now();
          if (now - last > 250) {
            last = now;
            send({ type: 'progress', up });
          }
        },
      });
      send({ type: 'ready', up: fleet.agents.length });
    } catch (err) {
      send({ type: 'error', message: (err as Error).message });
      process.exitCode = 1;
      setImmediate(() => process.exit(1));
    }
  });
}
