/**
 * Validation of command bodies, once, at the edge (STYLE.md 8): handlers get typed values.
 *
 * Why not zod, like the controller: protocol/ holds no agent-side schemas yet, and zod
 * costs ~15 MB of RSS in a process whose idle budget is 60 MB. These checkers are typed
 * against protocol/agent.ts, so a change there fails to compile here.
 *
 * Unknown fields are ignored, not refused (unlike the public API): a newer controller may
 * send fields an older agent does not know, as ZStack's grayscale upgrades do.
 */
import {
  type AgentVm, type AgentVmState, type ConnectCmd, MAX_GRACE_TIMEOUT_MS, type UpdateConfigCmd, type VmCreateCmd, type VmMigrateCmd, type VmPrepareMigrationCmd,
  type VmReceiveCmd, type VmResolveMigrationCmd, type VmStopCmd, type VmUuidCmd,
} from '../protocol/agent.ts';
import { isIPv4Address, isUuid } from '../protocol/values.ts';
import { isHttpUrl } from './state.ts';

export class BadRequest extends Error {
  readonly status = 400;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, where: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadRequest(`${where} must be a JSON object`);
  return v as Obj;
}

function uuid(o: Obj, k: string, where: string): string {
  const v = o[k];
  if (!isUuid(v)) throw new BadRequest(`${where}.${k} must be a uuid (32 lowercase hex digits), got ${JSON.stringify(v) ?? 'nothing'}`);
  return v;
}

function str(o: Obj, k: string, where: string, opts: { min?: number; max?: number } = {}): string {
  const v = o[k];
  const min = opts.min ?? 1;
  const max = opts.max ?? 1024;
  if (typeof v !== 'string' || v.length < min || v.length > max) throw new BadRequest(`${where}.${k} must be a string of ${min}-${max} characters`);
  return v;
}

function url(o: Obj, k: string, where: string): string {
  const v = o[k];
  if (!isHttpUrl(v)) throw new BadRequest(`${where}.${k} must be an http(s) URL`);
  return v.replace(/\/+$/, '');
}

function posInt(o: Obj, k: string, where: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new BadRequest(`${where}.${k} must be an integer > 0`);
  return v;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const STATES: AgentVmState[] = ['Running', 'Stopped', 'Paused', 'Migrating', 'Unknown'];

function vmSpec(v: unknown, where: string): Omit<AgentVm, 'state' | 'migratingTo'> {
  const o = obj(v, where);
  const nicsRaw = o.vmNics ?? [];
  if (!Array.isArray(nicsRaw)) throw new BadRequest(`${where}.vmNics must be an array`);
  const vmNics = nicsRaw.map((n, i) => {
    const nw = `${where}.vmNics[${i}]`;
    const no = obj(n, nw);
    const ip = no.ip;
    if (typeof ip !== 'string' || (ip !== '' && !isIPv4Address(ip))) throw new BadRequest(`${nw}.ip must be an IPv4 address`);
    const mac = typeof no.mac === 'string' ? no.mac.toLowerCase() : no.mac;
    if (typeof mac !== 'string' || !MAC_RE.test(mac)) throw new BadRequest(`${nw}.mac must be a MAC address like 52:54:00:12:34:56`);
    return { ip, mac };
  });
  return { uuid: uuid(o, 'uuid', where), name: str(o, 'name', where, { max: 255 }), memorySize: posInt(o, 'memorySize', where), cpuNum: posInt(o, 'cpuNum', where), vmNics };
}

function vm(v: unknown, where: string): AgentVm {
  const spec = vmSpec(v, where);
  const state = (v as Obj).state ?? 'Running';
  if (!STATES.includes(state as AgentVmState)) throw new BadRequest(`${where}.state must be one of ${STATES.join(', ')}`);
  return { ...spec, state: state as AgentVmState };
}

/** An empty body means `{}` (ZStack's echo sends none). */
export function parseJsonBody(raw: Buffer): unknown {
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new BadRequest('body is not valid JSON');
  }
}

export const check = {
  connect(b: unknown): ConnectCmd {
    const o = obj(b, 'body');
    return { hostUuid: uuid(o, 'hostUuid', 'body'), controllerUrl: url(o, 'controllerUrl', 'body') };
  },
  updateConfig(b: unknown): UpdateConfigCmd {
    return { controllerUrl: url(obj(b, 'body'), 'controllerUrl', 'body') };
  },
  vmCreate(b: unknown): VmCreateCmd {
    const o = obj(b, 'body');
    if (o.start !== undefined && typeof o.start !== 'boolean') throw new BadRequest('body.start must be true or false');
    return { vm: vmSpec(o.vm, 'body.vm'), start: o.start === true };
  },
  vmUuid(b: unknown): VmUuidCmd {
    return { vmUuid: uuid(obj(b, 'body'), 'vmUuid', 'body') };
  },
  vmStop(b: unknown): VmStopCmd {
    const o = obj(b, 'body');
    const cmd: VmStopCmd = { vmUuid: uuid(o, 'vmUuid', 'body'), type: 'grace' };
    if (o.type !== undefined) {
      if (o.type !== 'grace' && o.type !== 'cold') throw new BadRequest('body.type must be grace or cold');
      cmd.type = o.type;
    }
    if (o.graceTimeoutMs !== undefined) {
      const ms = posInt(o, 'graceTimeoutMs', 'body');
      if (ms > MAX_GRACE_TIMEOUT_MS) throw new BadRequest(`body.graceTimeoutMs must be at most ${MAX_GRACE_TIMEOUT_MS}`);
      cmd.graceTimeoutMs = ms;
    }
    return cmd;
  },
  vmResolveMigration(b: unknown): VmResolveMigrationCmd {
    const o = obj(b, 'body');
    if (typeof o.completed !== 'boolean') throw new BadRequest('body.completed must be true or false');
    return { vmUuid: uuid(o, 'vmUuid', 'body'), completed: o.completed };
  },
  vmPrepareMigration(b: unknown): VmPrepareMigrationCmd {
    const o = obj(b, 'body');
    return { vm: vm(o.vm, 'body.vm'), token: str(o, 'token', 'body', { min: 16, max: 256 }) };
  },
  vmMigrate(b: unknown): VmMigrateCmd {
    const o = obj(b, 'body');
    return { vmUuid: uuid(o, 'vmUuid', 'body'), destinationUrl: url(o, 'destinationUrl', 'body'), token: str(o, 'token', 'body', { min: 16, max: 256 }) };
  },
  vmReceive(b: unknown): VmReceiveCmd {
    return { vm: vm(obj(b, 'body').vm, 'body.vm') };
  },
};
