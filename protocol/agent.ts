/**
 * The controller <-> agent wire protocol: paths, request/response types, the HMAC request
 * signature both directions use, and the frames of the long-lived channel.
 *
 * Security model. Every request between controller and agent carries
 *   x-hk-host: <host uuid>   x-hk-ts: <unix ms>   x-hk-nonce: <32 hex>   x-hk-sig: <hex>
 * where sig = HMAC-SHA256(secret, METHOD \n PATH \n ts \n nonce \n sha256hex(body)), with the
 * per-host secret the controller issued (written by the deployment, or handed out at
 * bootstrap-token registration). The receiver refuses (401, doing nothing, revealing no route)
 * a missing or wrong signature, a timestamp more than MAX_SKEW_MS away from its clock, or a
 * nonce it has already seen within that window (replay). The channel request is signed the
 * same way with an empty body; its frames then travel inside that authenticated TCP stream.
 *
 * Answers are signed too: an agent answering an authenticated request adds
 *   x-hk-answer-sig: HMAC-SHA256(secret, "answer" \n status \n request nonce \n sha256hex(body))
 * so the controller knows the answer came from the holder of the host's secret, for THIS
 * request (the nonce), unaltered. A refusal (401) is not signed: it answers a request that
 * did not authenticate, and signing whatever nonce a stranger sends would make the agent a
 * signing service for that stranger.
 *
 * Fencing (several controllers, controller/cluster/): a controller's request may carry
 *   x-hk-fence: <lease token>
 * the token of its lease on the host (a number that grows each time the host changes owner).
 * It is signed with the rest (the signed string gains a line `fence:<n>` before the body's
 * hash when present). The agent remembers the highest token it has seen (on disk, so that a
 * restart does not forget it) and refuses a request with a lower one (409, code FENCED): a
 * controller that lost the host, however late its request, cannot act on it any more.
 *
 * All of this runs inside mutual TLS (protocol/pki.ts): the signatures are the second
 * factor, and the only authentication during an agent's provisional phase (agent/tls.ts).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const AGENT_PORT = 7070;
export const AGENT_VERSION = '0.1.0';

export const AUTH = { host: 'x-hk-host', ts: 'x-hk-ts', nonce: 'x-hk-nonce', sig: 'x-hk-sig', fence: 'x-hk-fence' } as const;
/** Clocks of controller and hosts must agree within this (run NTP on both). */
export const MAX_SKEW_MS = 30_000;

export const sha256hex = (body: string | Buffer) => createHash('sha256').update(body).digest('hex');

export function signature(secret: string, method: string, path: string, ts: string, nonce: string, body: string | Buffer, fence?: string): string {
  const fenced = fence === undefined ? '' : `fence:${fence}\n`;
  return createHmac('sha256', secret).update(`${method.toUpperCase()}\n${path}\n${ts}\n${nonce}\n${fenced}${sha256hex(body)}`).digest('hex');
}

/** A lease token as the x-hk-fence header carries it: a non-negative integer below 2^53. */
export const FENCE_RE = /^\d{1,15}$/;

/** Headers for a signed request. `path` includes any query string. */
export function signedHeaders(secret: string, hostUuid: string, method: string, path: string, body: string | Buffer, now: number, fence?: number): Record<string, string> {
  const ts = String(now);
  const nonce = randomBytes(16).toString('hex');
  const f = fence === undefined ? undefined : String(fence);
  return {
    [AUTH.host]: hostUuid, [AUTH.ts]: ts, [AUTH.nonce]: nonce, [AUTH.sig]: signature(secret, method, path, ts, nonce, body, f),
    ...(f === undefined ? {} : { [AUTH.fence]: f }),
  };
}

/** The signature of an answer (see the security model above): status, request nonce, body. */
export const ANSWER_SIG_HEADER = 'x-hk-answer-sig';

export function answerSignature(secret: string, status: number, nonce: string, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`answer\n${status}\n${nonce}\n${sha256hex(body)}`).digest('hex');
}

/** True when `sig` (the x-hk-answer-sig header) signs this status and body for the request nonce. */
export function verifyAnswer(secret: string, status: number, nonce: string, body: string | Buffer, sig: string | string[] | undefined): boolean {
  if (typeof sig !== 'string' || !/^[0-9a-f]{64}$/.test(sig)) return false;
  return timingSafeEqual(Buffer.from(answerSignature(secret, status, nonce, body), 'hex'), Buffer.from(sig, 'hex'));
}

export type AuthFailure = 'missing' | 'bad-signature' | 'stale' | 'replayed' | 'unknown-host';

/**
 * Remembers nonces for twice the allowed skew, so a captured request cannot be replayed
 * while its timestamp would still pass. Memory is bounded by the request rate x window.
 */
export class ReplayGuard {
  private seen = new Map<string, number>();
  private lastSweep = 0;
  constructor(private readonly windowMs = 2 * MAX_SKEW_MS) {}
  /** True the first time a nonce is seen within the window. */
  fresh(nonce: string, now: number): boolean {
    if (now - this.lastSweep > this.windowMs / 4) {
      for (const [n, t] of this.seen) if (now - t > this.windowMs) this.seen.delete(n);
      this.lastSweep = now;
    }
    if (this.seen.has(nonce)) return false;
    this.seen.set(nonce, now);
    return true;
  }
}

/**
 * Checks a signed request. `secretOf` returns the secret for the claimed host uuid (the
 * agent has one; the controller looks it up). The nonce is only recorded once the
 * signature is valid, so garbage cannot fill the guard.
 */
export function verifySigned(
  headers: Record<string, string | string[] | undefined>,
  method: string,
  path: string,
  body: string | Buffer,
  now: number,
  secretOf: (hostUuid: string) => string | undefined,
  guard: ReplayGuard,
): { ok: true; hostUuid: string; fence?: number } | { ok: false; why: AuthFailure } {
  const h = (k: string) => {
    const v = headers[k];
    return typeof v === 'string' ? v : undefined;
  };
  const host = h(AUTH.host);
  const ts = h(AUTH.ts);
  const nonce = h(AUTH.nonce);
  const sig = h(AUTH.sig);
  const fence = h(AUTH.fence);
  if (!host || !ts || !nonce || !sig || !/^\d{1,16}$/.test(ts) || !/^[0-9a-f]{64}$/.test(sig)) return { ok: false, why: 'missing' };
  if (headers[AUTH.fence] !== undefined && (fence === undefined || !FENCE_RE.test(fence))) return { ok: false, why: 'missing' };
  const secret = secretOf(host);
  if (!secret) return { ok: false, why: 'unknown-host' };
  const want = Buffer.from(signature(secret, method, path, ts, nonce, body, fence), 'hex');
  if (!timingSafeEqual(want, Buffer.from(sig, 'hex'))) return { ok: false, why: 'bad-signature' };
  if (Math.abs(now - Number(ts)) > MAX_SKEW_MS) return { ok: false, why: 'stale' };
  if (!guard.fresh(`${host}:${nonce}`, now)) return { ok: false, why: 'replayed' };
  return { ok: true, hostUuid: host, ...(fence === undefined ? {} : { fence: Number(fence) }) };
}

// ---- controller -> agent (all POST, JSON bodies, signed) ------------------------------------

export const AGENT_PATHS = {
  echo: '/host/echo',
  connect: '/host/connect',
  ping: '/host/ping',
  fact: '/host/fact',
  capacity: '/host/capacity',
  updateConfig: '/host/update/configuration',
  /** The long-lived channel: a streaming POST whose request and response bodies are frames. */
  channel: '/host/channel',
  vmList: '/vm/list',
  vmCreate: '/vm/create',
  vmStart: '/vm/start',
  /** VmStopCmd: grace (ACPI, bounded wait) or cold (power off). */
  vmStop: '/vm/stop',
  /** VmUuidCmd: a guest reboot of a Running VM. */
  vmReboot: '/vm/reboot',
  vmDestroy: '/vm/destroy',
  /** To the destination first: accept this VM when the source sends it with this token. */
  vmPrepareMigration: '/vm/migrate/prepare',
  /** To the source: send the VM to the destination agent, then forget it. */
  vmMigrate: '/vm/migrate',
  /**
   * To the source of a migration whose outcome it could not know (VmResolveMigrationCmd):
   * the controller, having asked the destination's /vm/list, says whether it completed.
   */
  vmResolveMigration: '/vm/migrate/resolve',
  /** Agent to agent (authenticated by the one-time migration token, not the host secret). */
  vmReceive: '/vm/migrate/receive',
} as const;

/**
 * Codes a failed answer may carry beside `error`, for failures a caller acts on:
 * - GRACE_TIMEOUT: a grace stop did not end within its timeout (or the VM is Paused and
 *   cannot react to ACPI); the VM still runs: stop it with type cold.
 * - MIGRATION_UNKNOWN: the source could not learn whether the destination took the VM
 *   (the connection was cut after sending). The VM stays Paused here, with migratingTo,
 *   until the controller calls vmResolveMigration.
 */
/** FENCED: the request's lease token is older than one the agent has seen (another controller owns the host). */
export type AgentErrorCode = 'GRACE_TIMEOUT' | 'MIGRATION_UNKNOWN' | 'FENCED';

/** Every answer: `success` false carries `error` (and HTTP 4xx/5xx), and `code` for some failures. */
export interface AgentResponse {
  success: boolean;
  error?: string;
  code?: AgentErrorCode;
}

/** Who the agent is right now; a change of bootId or instanceId means the host or agent restarted. */
export interface AgentIdentity {
  /** The host uuid the agent was told at its last connect (null after an agent restart until then). */
  hostUuid: string | null;
  agentVersion: string;
  /** /proc/sys/kernel/random/boot_id: changes when the host reboots. */
  bootId: string;
  /** Random per agent process start: changes when the agent restarts. */
  instanceId: string;
}

export interface ConnectCmd {
  hostUuid: string;
  /** Where the agent sends pushes (facts changes): http://<controller>:<port>. */
  controllerUrl: string;
}
export type ConnectRsp = AgentResponse & AgentIdentity;

export interface PingCmd {
  hostUuid: string;
}
export type PingRsp = AgentResponse & AgentIdentity;

export interface HostFacts {
  osDistribution: string;
  osRelease: string;
  osVersion: string;
  /** `uname -m`'s name for the machine (x86_64, aarch64): ZStack's KVMHostInventory.architecture. Older agents omit it. */
  architecture?: string;
  /** null when the tool is absent. */
  qemuImgVersion: string | null;
  libvirtVersion: string | null;
  /** Hardware virtualization flag from /proc/cpuinfo. */
  hvm: 'vmx' | 'svm' | null;
  cpuModel: string;
  cpuCores: number;
  cpuSockets: number;
  /** Logical CPUs. */
  cpuNum: number;
  cpuMhz: number;
  memoryBytes: number;
  bootId: string;
  agentVersion: string;
  hypervisor: 'libvirt' | 'simulator';
  /** libvirt >= 1.0.0 and qemu-img >= 1.3.0 (ZStack's rule), or the simulator. */
  liveSnapshot: boolean;
}
export type FactRsp = AgentResponse & { facts: HostFacts };

export interface HostCapacityReport {
  cpuNum: number;
  cpuSockets: number;
  cpuMhz: number;
  totalMemory: number;
  /** What the OS reports free/available. */
  availablePhysicalMemory: number;
  /** Sums over running VMs. */
  usedCpu: number;
  usedMemory: number;
}
export type CapacityRsp = AgentResponse & { capacity: HostCapacityReport };

/**
 * 'Migrating' on a source (with `migratingTo`): being sent right now. 'Migrating' without
 * `migratingTo`: arriving here (a destination receiving it); it becomes Running or Paused,
 * or disappears if the receive fails. A VM reported with `migratingTo` and any other state
 * (Paused) is a migration whose outcome is unknown: see vmResolveMigration.
 */
export type AgentVmState = 'Running' | 'Stopped' | 'Paused' | 'Migrating' | 'Unknown';
export interface AgentVm {
  uuid: string;
  name: string;
  state: AgentVmState;
  memorySize: number;
  cpuNum: number;
  vmNics: { ip: string; mac: string }[];
  /**
   * Source side only: the destination agent URL this VM is being (or was being) sent to.
   * Set while 'Migrating', and on a 'Paused' VM whose migration outcome is unknown (the
   * agent restarted mid-way, or the delivery was cut): such a VM is never resumed by the
   * agent on its own, and refuses every command but vmResolveMigration.
   */
  migratingTo?: string;
}
export type VmListRsp = AgentResponse & { vms: AgentVm[] };
export interface VmCreateCmd { vm: Omit<AgentVm, 'state'>; start?: boolean }
/**
 * start/reboot/destroy. Destroy powers the VM off and forgets it; a VM the host does not have
 * answers 404, which a caller cleaning up treats as "already gone". Start of a Paused VM
 * resumes it.
 */
export interface VmUuidCmd { vmUuid: string }
export type VmRsp = AgentResponse & { vm: AgentVm };

/** How long a grace stop waits for the guest by default (ZStack's KVM agent waits about as long). */
export const DEFAULT_GRACE_TIMEOUT_MS = 60_000;
/** Bounds of VmStopCmd.graceTimeoutMs. */
export const MAX_GRACE_TIMEOUT_MS = 3_600_000;
/**
 * type grace (default, as ZStack's StopVmInstance): ACPI shutdown, then wait up to
 * graceTimeoutMs (default DEFAULT_GRACE_TIMEOUT_MS, 1..MAX_GRACE_TIMEOUT_MS) for the guest to
 * power off; still running then: 409 with code GRACE_TIMEOUT, the VM untouched (the caller
 * decides to go cold). type cold: power off at once. Either answers the Stopped VM.
 */
export interface VmStopCmd { vmUuid: string; type?: 'grace' | 'cold'; graceTimeoutMs?: number }
/** The destination remembers the token for 60 s, single use, for this VM only. */
export interface VmPrepareMigrationCmd { vm: AgentVm; token: string }
export type VmPrepareMigrationRsp = AgentResponse;
/**
 * To the source. Running or Paused VMs migrate and arrive in the same state. While sending,
 * the source lists the VM 'Migrating' with `migratingTo`. Answers: 200 `{vm}` (as it was
 * here) once the destination confirmed it; 502 when the destination refused or could not be
 * reached before anything was sent (the VM is back as it was); 502 with code
 * MIGRATION_UNKNOWN when the outcome is unknown (the VM stays Paused with migratingTo until
 * vmResolveMigration).
 */
export interface VmMigrateCmd { vmUuid: string; destinationUrl: string; token: string }
/**
 * Agent to agent; header `x-hk-migration-token: <token>`. The same token resent for the
 * same VM after a successful receive answers success again (for 10 minutes), so
 * a source may retry a delivery whose answer it lost.
 */
export interface VmReceiveCmd { vm: AgentVm }
export const MIGRATION_TOKEN_HEADER = 'x-hk-migration-token';
/**
 * Ends a migration whose outcome the source did not know (a VM reported with migratingTo
 * and not 'Migrating'). completed true: the destination has the VM, the source destroys its
 * copy (answer `vm: null`). completed false: the destination does not have it, the source
 * resumes it as it was before (Running or Paused) and answers it. Idempotent: completed
 * true for a VM no longer here answers `vm: null`; completed false for a VM here without a
 * pending migration answers it. completed true for a VM here without a pending migration,
 * or a VM still being sent, is 409; completed false for a VM not here is 404.
 *
 * The controller decides by the destination's /vm/list: the VM listed there (in a state
 * other than 'Migrating') means completed; listed 'Migrating' means still arriving: ask
 * again; absent means not completed.
 */
export interface VmResolveMigrationCmd { vmUuid: string; completed: boolean }
export type VmResolveMigrationRsp = AgentResponse & { vm: AgentVm | null };

export interface UpdateConfigCmd { controllerUrl: string }

// ---- the channel --------------------------------------------------------------------------
//
// Controller opens POST /host/channel (signed, empty-body digest, `transfer-encoding: chunked`)
// and keeps writing; the agent answers 200 at once (headers flushed) and keeps writing.
// Both bodies are newline-delimited JSON frames; an empty line is a heartbeat.
//   controller -> agent: {"t":"ping","id":<n>}
//                        {"t":"hb","ms":<n>}   heartbeat every n ms from now on (see below)
//   agent -> controller: {"t":"pong","id":<n>, ...AgentIdentity}   and "\n" every heartbeat period
// The agent keeps one channel per controller; a new channel replaces the old one.
// A closed socket means the agent process (or its host) is gone; 2.5 heartbeat periods of
// silence mean the host or the network stopped: both are checked with a ping before the
// host is declared Disconnected.
//
// The heartbeat period grows with the fleet. Each heartbeat costs the controller a wake-up
// (~17-26 µs of CPU measured, whatever the framing), so a fixed 600 ms would cost 10,000 hosts
// ~44% of a core doing nothing else. A controller takes at most HEARTBEAT_BUDGET_PER_S
// heartbeats a second: up to 2,100 hosts the period is 600 ms (a reset host is noticed
// within 1.5 s); at 10,000 it is 2.9 s (7.3 s). A killed agent is noticed at once either way
// (its socket closes), and pings still catch silent partitions.

export const HEARTBEAT_MS = 600;
export const HEARTBEAT_DEADLINE_MS = 1500;
export const HEARTBEAT_BUDGET_PER_S = 3500;
export const HEARTBEAT_MAX_MS = 60_000;

/** Silence allowed before a host is suspect, for a heartbeat period. */
export function heartbeatDeadline(periodMs: number): number {
  return Math.round(periodMs * (HEARTBEAT_DEADLINE_MS / HEARTBEAT_MS));
}

/** The heartbeat period for a controller watching `hosts` channels (100 ms steps). */
export function heartbeatPeriodFor(hosts: number): number {
  const ms = Math.ceil((hosts / HEARTBEAT_BUDGET_PER_S) * 10) * 100;
  return Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MS, ms));
}

export type ControllerFrame = { t: 'ping'; id: number } | { t: 'hb'; ms: number };
/**
 * Agent -> controller. Besides pongs: `vm`, a VM changed (a command, a migration step, or
 * something outside the agent: a guest crash or power-off, a pause), with its description
 * now, or null when it is no longer on this host. Sent as the change happens while a
 * channel is open; changes made while none was open are sent (re-read, so current) when the
 * next one opens, and the controller also lists VMs at every connect.
 *
 * Frames are not signed, unlike answers: they travel inside the signed channel request's
 * TCP stream, so only someone on the path can add one, and such a party can equally drop
 * or delay the stream; protecting the stream itself is the transport's job (TLS), not a
 * per-frame HMAC on a line that is usually a one-byte heartbeat. A frame is a hint the
 * controller reconciles with signed /vm/list answers, never the only evidence of a move.
 */
export type VmFrame = { t: 'vm'; vmUuid: string; vm: AgentVm | null };
export type AgentFrame = ({ t: 'pong'; id: number } & AgentIdentity) | VmFrame;

// ---- agent -> controller (signed with the host secret, x-hk-host = host uuid) --------------

export const CONTROLLER_AGENT_PATHS = {
  /** Unsigned: authenticated by the bootstrap token in the body. */
  register: '/zstack/agent/v1/register',
  /** Facts changed: body FactsPush. */
  facts: '/zstack/agent/v1/facts',
} as const;

export interface RegisterCmd {
  token: string;
  hostname: string;
  /** The address and port the agent listens on; 0.0.0.0 means "the address you see me from". */
  managementIp: string;
  port: number;
  /**
   * SPKI PEM of the ECDSA P-256 key the agent made for its certificate (protocol/pki.ts).
   * Registration is served over TLS only (the controller's agent port), so the answer's
   * secret never travels in clear.
   */
  publicKey: string;
}
export interface RegisterRsp extends AgentResponse {
  hostUuid: string;
  secret: string;
  /** The agent's certificate (PEM) for `publicKey`, and the CA bundle to trust from now on. */
  certificate: string;
  caCertificates: string;
}
export interface FactsPush {
  facts: HostFacts;
}
