/**
 * `npm run agent -- --listen IP:PORT [--controller URL --bootstrap-token TOKEN]
 *  [--state-dir DIR] [--hypervisor libvirt|simulator] [--config FILE] [--libvirt-uri URI]`
 *
 * Only flags and process life live here; the agent is startAgent() (server.ts). Exits
 * non-zero with ONE line `hostkeeper-agent: ...` on a bad flag (or a bad `listen` or
 * `hypervisor` in the --config file, which stand in for the flags), a port in use, an
 * unusable state dir or a refused registration; stops cleanly on SIGTERM/SIGINT.
 */
import { resolve } from 'node:path';
import { AGENT_USAGE, applyConfigFileSettings, FlagError, parseAgentFlags } from './flags.ts';
import { createAgentLogger } from './log.ts';
import { DEFAULT_STATE_DIR, type RunningAgent, StartupError, startAgent } from './server.ts';
import { readConfigFileSettings } from './state.ts';

function fail(msg: string): never {
  process.stderr.write(`hostkeeper-agent: ${msg.split('\n')[0]}\n`);
  process.exit(1);
}

let flags;
try {
  flags = parseAgentFlags(process.argv.slice(2), { stateDir: DEFAULT_STATE_DIR });
  if (flags.configFile && !flags.help) {
    // Read here for listen/hypervisor only; startAgent() reads it again for the identity.
    const path = resolve(flags.configFile);
    flags = applyConfigFileSettings(flags, await readConfigFileSettings(path), path);
  }
} catch (err) {
  fail(err instanceof FlagError || err instanceof StartupError ? err.message : String(err));
}
if (flags.help) {
  process.stdout.write(`${AGENT_USAGE}\n`);
  process.exit(0);
}

const log = createAgentLogger({ level: flags.logLevel });
let agent: RunningAgent | undefined;
let stopping = false;

async function stop(sig: string, code = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal: sig }, 'stopping');
  try {
    await agent?.stop();
  } catch (err) {
    process.stderr.write(`hostkeeper-agent: error while stopping: ${(err as Error).message}\n`);
    code = 1;
  }
  log.flush();
  process.exit(code);
}

process.on('uncaughtException', (err) => {
  log.fatal({ err: err.message }, 'uncaught exception');
  log.flush();
  fail(`internal error: ${err.message}`);
});
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

try {
  agent = await startAgent({
    listen: flags.listen,
    stateDir: resolve(flags.stateDir),
    hypervisor: flags.hypervisor,
    controllerUrl: flags.controllerUrl,
    bootstrapToken: flags.bootstrapToken,
    caCertHash: flags.caCertHash,
    configFile: flags.configFile ? resolve(flags.configFile) : undefined,
    libvirtUri: flags.libvirtUri,
    log,
  });
} catch (err) {
  fail((err as Error).message);
}

agent.registered.catch((err: Error) => {
  // A refused registration (4xx: bad or expired token) will not fix itself: exit.
  log.flush();
  void agent!.stop().finally(() => fail(err.message));
});
