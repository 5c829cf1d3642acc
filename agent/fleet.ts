/**
 * `npm run fleet -- --count N --controller URL --bootstrap-token TOKEN [--state-dir DIR]
 *  [--first-ip 127.1.0.1] [--per-process 2500] [--port 7070] [--log-level warn]`
 *
 * Runs N simulated hosts' agents (see fleet-core.ts), prints progress and a final line
 * `fleet: N agents up on FIRST-LAST:PORT in S s`, forwards SIGTERM to its children and
 * exits non-zero if one of them fails. `startFleet()` is the same thing for code.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_PORT } from '../protocol/agent.ts';
import { DEFAULT_FIRST_IP, DEFAULT_PER_PROCESS, runFleetChild, startFleet } from './fleet-core.ts';
import { FlagError, parseFlags, parseIntFlag, parseIpFlag, parseLogLevel, parseUrlFlag } from './flags.ts';

export { type ChildFleet, type FleetAgent, type FleetOptions, type InProcessFleet, startFleet } from './fleet-core.ts';

export const FLEET_USAGE = `usage: npm run fleet -- --count N --controller URL --bootstrap-token TOKEN [--ca-cert-hash HASH]
                        [--state-dir DIR] [--first-ip 127.1.0.1] [--per-process 2500]
                        [--port 7070] [--log-level warn]
  --count            how many simulated hosts (agents)
  --controller       the controller URL agents register with
  --bootstrap-token  a bootstrap token of the cluster the hosts join
  --ca-cert-hash     the token's caCertHash: agents pin the controller CA with it
  --state-dir        each agent's state goes to DIR/<its ip> (default ./data/fleet)
  --first-ip         the first loopback address; the others follow (default 127.1.0.1)
  --per-process      agents per child process (default 2500: the open-files limit is per process)
  --port             the port every agent listens on, on its own address (default 7070)
  --log-level        the agents' log level (default warn)`;

function fail(msg: string): never {
  process.stderr.write(`hostkeeper-fleet: ${msg.split('\n')[0]}\n`);
  process.exit(1);
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--child') return runFleetChild();
  let f: Map<string, string>;
  try {
    f = parseFlags(argv, { values: ['count', 'controller', 'bootstrap-token', 'ca-cert-hash', 'state-dir', 'first-ip', 'per-process', 'port', 'log-level'], switches: ['help', 'plain-http'] });
    if (f.has('help')) {
      process.stdout.write(`${FLEET_USAGE}\n`);
      return;
    }
    for (const req of ['count', 'controller', 'bootstrap-token']) if (!f.has(req)) throw new FlagError(`--${req} is required (see --help)`);
  } catch (err) {
    fail((err as Error).message);
  }
  let opts;
  try {
    opts = {
      count: parseIntFlag(f.get('count')!, '--count', 1, 1_000_000),
      controllerUrl: parseUrlFlag(f.get('controller')!, '--controller'),
      token: f.get('bootstrap-token')!,
      caCertHash: f.get('ca-cert-hash'),
      // bench/tls.bench.ts only (not in the usage): agents serve plain HTTP, to measure what TLS costs.
      plainHttp: f.has('plain-http'),
      stateDir: resolve(f.get('state-dir') ?? './data/fleet'),
      firstIp: parseIpFlag(f.get('first-ip') ?? DEFAULT_FIRST_IP, '--first-ip'),
      perProcess: parseIntFlag(f.get('per-process') ?? String(DEFAULT_PER_PROCESS), '--per-process', 1, 100_000),
      port: parseIntFlag(f.get('port') ?? String(AGENT_PORT), '--port', 1, 65535),
      logLevel: parseLogLevel(f.get('log-level') ?? 'warn'),
    };
  } catch (err) {
    fail((err as Error).message);
  }

  const t0 = Date.now();
  let lastPrint = 0;
  let stopping = false;
  let fleet: Awaited<ReturnType<typeof startFleet>> | undefined;
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`fleet: ${sig}: stopping\n`);
    void (fleet?.stop() ?? Promise.resolve()).then(() => process.exit(0));
    if (!fleet) process.exit(0);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  try {
    fleet = await startFleet({
      ...opts,
      onProgress: (up, total) => {
        const now = Date.now();
        if (now - lastPrint >= 1000 && up < total) {
          lastPrint = now;
          process.stdout.write(`fleet: ${up}/${total} agents up (${((now - t0) / 1000).toFixed(1)} s)\n`);
        }
      },
    });
  } catch (err) {
    if (!stopping) fail((err as Error).message);
    return;
  }
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`fleet: ${opts.count} agents up on ${fleet.firstIp}-${fleet.lastIp}:${fleet.port} in ${secs} s (${fleet.children} processes)\n`);
  const code = await fleet.done;
  if (code !== 0 && !stopping) fail('a fleet process failed; all stopped');
  process.exit(code);
}

const isEntry = (() => {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (isEntry) await main(process.argv.slice(2));
