/**
 * The agent's identity on disk: `<state dir>/agent.json` (mode 0600)
 * `{hostUuid, secret, controllerUrl}`. Written by the deployment (the controller's Ansible
 * playbook, or `--config FILE`) or by bootstrap-token registration; the connect and
 * update/configuration commands change controllerUrl. The secret is the HMAC key of every
 * request in both directions, so the file is never world-readable and never logged.
 * A --config file holds the same keys and may add `listen` and `hypervisor`
 * (ConfigFileSettings), which stay out of the state dir.
 */
import { access, chmod, constants, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isUuid } from '../protocol/values.ts';
import { CoalescingWriter, ensureDir } from './fsutil.ts';

export interface AgentConfig {
  hostUuid?: string;
  secret?: string;
  controllerUrl?: string;
}

export const AGENT_JSON = 'agent.json';
/** A secret shorter than this is refused: it would be guessable. */
export const MIN_SECRET_LENGTH = 16;

/** A startup problem worth one clear line (bad state dir, bad agent.json). */
export class StartupError extends Error {}

export function isHttpUrl(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && !!u.hostname;
  } catch {
    return false;
  }
}

function parseJsonObject(text: string, where: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new StartupError(`${where} is not valid JSON`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new StartupError(`${where} must hold a JSON object`);
  return raw as Record<string, unknown>;
}

/**
 * Checks the shape of an agent.json-like file; `where` names it in messages. Other keys
 * (the --config file's `listen` and `hypervisor`, see ConfigFileSettings) are left out: they
 * are never copied into the state dir.
 */
export function parseAgentConfig(text: string, where: string): AgentConfig {
  const o = parseJsonObject(text, where);
  const out: AgentConfig = {};
  if (o.hostUuid !== undefined && o.hostUuid !== null) {
    if (!isUuid(o.hostUuid)) throw new StartupError(`${where}: hostUuid must be 32 lowercase hex digits`);
    out.hostUuid = o.hostUuid;
  }
  if (o.secret !== undefined && o.secret !== null) {
    if (typeof o.secret !== 'string' || o.secret.length < MIN_SECRET_LENGTH) {
      throw new StartupError(`${where}: secret must be a string of at least ${MIN_SECRET_LENGTH} characters`);
    }
    out.secret = o.secret;
  }
  if (o.controllerUrl !== undefined && o.controllerUrl !== null) {
    if (!isHttpUrl(o.controllerUrl)) throw new StartupError(`${where}: controllerUrl must be an http(s) URL`);
    out.controllerUrl = o.controllerUrl.replace(/\/+$/, '');
  }
  // A secret is bound to one host uuid (the x-hk-host of every request): one without the other is useless.
  if (out.secret && !out.hostUuid) throw new StartupError(`${where} has a secret but no hostUuid`);
  return out;
}

async function readConfigText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new StartupError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export async function readConfigFile(path: string): Promise<AgentConfig> {
  return parseAgentConfig(await readConfigText(path), path);
}

/**
 * The --config file's start-up settings: `listen` ("IP:PORT") and `hypervisor`, which stand
 * in for the flags of the same name when the command line leaves them out (the deployment
 * writes one file and runs the agent with --config alone). Raw values (absent or null:
 * undefined): flags.ts checks them as it checks the flags, naming the file and the key.
 */
export interface ConfigFileSettings {
  listen?: unknown;
  hypervisor?: unknown;
}

export function parseConfigFileSettings(text: string, where: string): ConfigFileSettings {
  const o = parseJsonObject(text, where);
  return { listen: o.listen ?? undefined, hypervisor: o.hypervisor ?? undefined };
}

export async function readConfigFileSettings(path: string): Promise<ConfigFileSettings> {
  return parseConfigFileSettings(await readConfigText(path), path);
}

/** Creates (0700) and checks the state dir: it must be a directory we can read and write. */
export async function prepareStateDir(dir: string): Promise<void> {
  try {
    await ensureDir(dir);
    const st = await stat(dir);
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    await access(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StartupError(`state dir ${dir} is not usable: ${code ?? (err as Error).message}`);
  }
}

export class StateStore {
  private cfg: AgentConfig;
  private readonly writer: CoalescingWriter;

  private constructor(readonly dir: string, cfg: AgentConfig) {
    this.cfg = cfg;
    this.writer = new CoalescingWriter(join(dir, AGENT_JSON), () => `${JSON.stringify(this.cfg, null, 2)}\n`, 0o600);
  }

  /**
   * Opens `<dir>/agent.json` (absent: empty). `seed` (from --config) replaces what is
   * there: the deployment that wrote it is the authority on the secret.
   */
  static async open(dir: string, seed?: AgentConfig): Promise<{ store: StateStore; modeFixed: boolean }> {
    await prepareStateDir(dir);
    const path = join(dir, AGENT_JSON);
    let cfg: AgentConfig = {};
    let modeFixed = false;
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw new StartupError(`cannot read ${path}: ${code ?? (err as Error).message}`);
    }
    if (text !== undefined) {
      cfg = parseAgentConfig(text, path);
      const st = await stat(path);
      if ((st.mode & 0o077) !== 0) {
        // Someone (a hand copy, a wrong umask) left the secret readable by others: close it.
        await chmod(path, 0o600);
        modeFixed = true;
      }
    }
    const store = new StateStore(dir, cfg);
    if (seed && (Object.keys(seed) as (keyof AgentConfig)[]).some((k) => seed[k] !== cfg[k])) await store.update(seed);
    return { store, modeFixed };
  }

  get(): Readonly<AgentConfig> {
    return this.cfg;
  }

  /** Sets the defined fields of `patch` and writes the file (atomically, 0600). */
  async update(patch: AgentConfig): Promise<void> {
    const next: AgentConfig = { ...this.cfg };
    for (const k of Object.keys(patch) as (keyof AgentConfig)[]) if (patch[k] !== undefined) next[k] = patch[k];
    this.cfg = next;
    await this.writer.write();
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}
