/**
 * Command-line flags of `npm run agent` and `npm run fleet`: `--name value` or
 * `--name=value`. Pure (tests call it); errors are FlagError with a one-line message.
 */
import { isIPv4 } from 'node:net';
import { AGENT_PORT } from '../protocol/agent.ts';
import { CA_CERT_HASH_RE } from '../protocol/pki.ts';
import { type ConfigFileSettings, isHttpUrl } from './state.ts';

export class FlagError extends Error {}

export interface FlagSpec {
  /** Flags that take a value. */
  values: string[];
  /** Flags without a value. */
  switches?: string[];
}

export function parseFlags(argv: string[], spec: FlagSpec): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new FlagError(`unexpected argument ${JSON.stringify(arg)} (flags look like --name value)`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (spec.switches?.includes(name)) {
      if (eq >= 0) throw new FlagError(`--${name} takes no value`);
      out.set(name, 'true');
      continue;
    }
    if (!spec.values.includes(name)) throw new FlagError(`unknown flag --${name} (see --help)`);
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new FlagError(`--${name} needs a value`);
      i++;
    }
    if (out.has(name)) throw new FlagError(`--${name} given twice`);
    out.set(name, value);
  }
  return out;
}

/** `IP:PORT` (IPv4, port 0-65535); `flag` names the source in the message. */
export function parseListen(s: unknown, flag = '--listen'): { host: string; port: number } {
  const m = typeof s === 'string' ? /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s) : null;
  if (!m || !isIPv4(m[1]!) || Number(m[2]) > 65535) throw new FlagError(`${flag} must be IP:PORT like 0.0.0.0:7070, got ${JSON.stringify(s)}`);
  return { host: m[1]!, port: Number(m[2]) };
}

export function parseUrlFlag(s: string, flag: string): string {
  if (!isHttpUrl(s)) throw new FlagError(`${flag} must be an http(s) URL like http://10.0.0.1:8080, got ${JSON.stringify(s)}`);
  return s.replace(/\/+$/, '');
}

export function parseIntFlag(s: string, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) throw new FlagError(`${flag} must be an integer ${min}-${max}, got ${JSON.stringify(s)}`);
  return Number(s);
}

export function parseIpFlag(s: string, flag: string): string {
  if (!isIPv4(s)) throw new FlagError(`${flag} must be an IPv4 address, got ${JSON.stringify(s)}`);
  return s;
}

export type Hypervisor = 'libvirt' | 'simulator';
export function parseHypervisor(s: unknown, flag = '--hypervisor'): Hypervisor {
  if (s !== 'libvirt' && s !== 'simulator') throw new FlagError(`${flag} must be libvirt or simulator, got ${JSON.stringify(s)}`);
  return s;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export function parseLogLevel(s: string): string {
  if (!LOG_LEVELS.includes(s)) throw new FlagError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  return s;
}

export interface AgentFlags {
  listen: { host: string; port: number };
  controllerUrl?: string;
  bootstrapToken?: string;
  /** `sha256:<hex>`: the controller CA to pin at registration (the token's caCertHash). */
  caCertHash?: string;
  stateDir: string;
  hypervisor: Hypervisor;
  configFile?: string;
  /** Which of listen/hypervisor the command line gave: those win over the --config file. */
  explicit: { listen: boolean; hypervisor: boolean };
  libvirtUri?: string;
  logLevel: string;
  help: boolean;
}

export const AGENT_USAGE = `usage: npm run agent -- [--listen IP:PORT] [--controller URL --bootstrap-token TOKEN [--ca-cert-hash HASH]]
                        [--state-dir DIR] [--hypervisor libvirt|simulator] [--config FILE]
                        [--libvirt-uri URI] [--log-level LEVEL]
  --listen           address and port to serve on (default: the --config file's "listen",
                     else 0.0.0.0:7070)
  --controller       controller URL, for registration and pushes (http://IP:8080)
  --bootstrap-token  register with the controller using this token when no secret is known yet
  --ca-cert-hash     sha256:<hex> of the controller CA's public key (the token's caCertHash):
                     registration checks the controller against it before sending the token
  --state-dir        where agent.json and simulated hosts live (default /var/lib/hostkeeper-agent)
  --hypervisor       libvirt or simulator (default: the --config file's "hypervisor", else libvirt)
  --config           an agent.json written by the deployment ({hostUuid, secret, controllerUrl},
                     copied into the state dir; optional "listen" and "hypervisor" stand in
                     for the flags when these are not given)
  --libvirt-uri      libvirt connection URI (default qemu:///system)
  --log-level        fatal|error|warn|info|debug|trace|silent (default info)`;

export function parseAgentFlags(argv: string[], defaults: { stateDir: string }): AgentFlags {
  const f = parseFlags(argv, {
    values: ['listen', 'controller', 'bootstrap-token', 'ca-cert-hash', 'state-dir', 'hypervisor', 'config', 'libvirt-uri', 'log-level'],
    switches: ['help'],
  });
  const hypervisor = parseHypervisor(f.get('hypervisor') ?? 'libvirt');
  const token = f.get('bootstrap-token');
  if (token !== undefined && !token) throw new FlagError('--bootstrap-token is empty');
  if (token && !f.has('controller')) throw new FlagError('--bootstrap-token needs --controller URL');
  const hash = f.get('ca-cert-hash');
  if (hash !== undefined && !CA_CERT_HASH_RE.test(hash)) throw new FlagError(`--ca-cert-hash must be sha256:<64 lowercase hex digits>, not ${hash}`);
  if (hash && !token) throw new FlagError('--ca-cert-hash goes with --bootstrap-token (it pins the controller at registration)');
  const stateDir = f.get('state-dir') ?? defaults.stateDir;
  if (!stateDir) throw new FlagError('--state-dir is empty');
  return {
    listen: parseListen(f.get('listen') ?? `0.0.0.0:${AGENT_PORT}`),
    controllerUrl: f.has('controller') ? parseUrlFlag(f.get('controller')!, '--controller') : undefined,
    bootstrapToken: token,
    ...(hash ? { caCertHash: hash } : {}),
    stateDir,
    hypervisor,
    configFile: f.get('config'),
    libvirtUri: f.get('libvirt-uri'),
    logLevel: parseLogLevel(f.get('log-level') ?? process.env.HOSTKEEPER_LOG_LEVEL ?? 'info'),
    help: f.has('help'),
    explicit: { listen: f.has('listen'), hypervisor: f.has('hypervisor') },
  };
}

/**
 * Fills listen and hypervisor from the --config file's keys of the same name where the
 * command line left them out: a flag given explicitly wins. The file's values are checked
 * even when a flag overrides them, so a bad file fails the same way whoever starts the agent
 * (`where` is the file's path; messages read `<file>: listen must be ...`).
 */
export function applyConfigFileSettings(flags: AgentFlags, file: ConfigFileSettings, where: string): AgentFlags {
  const listen = file.listen === undefined ? undefined : parseListen(file.listen, `${where}: listen`);
  const hypervisor = file.hypervisor === undefined ? undefined : parseHypervisor(file.hypervisor, `${where}: hypervisor`);
  return {
    ...flags,
    listen: flags.explicit.listen || !listen ? flags.listen : listen,
    hypervisor: flags.explicit.hypervisor || !hypervisor ? flags.hypervisor : hypervisor,
  };
}
