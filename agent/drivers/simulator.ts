/**
 * A simulated KVM host: its VMs, hardware and boot id live in
 * `<state dir>/simulated-host.json` (written atomically: temp file + rename), so a
 * simulated host survives agent restarts the way a real one does. Used by tests and by the
 * fleet (thousands in one process), so it never shells out: OS facts are the real
 * machine's, read once per process and shared; the hardware is made up and settable.
 *
 * Faults on demand: `inject({op, vmUuid?, delayMs?, fail?, hang?, times?})` delays, fails or
 * hangs the next calls of an operation (of one VM, with vmUuid); HK_SIM_INJECT (a JSON array
 * of the same objects) sets them at start. Op `shutdown` is the guest's answer to an ACPI
 * shutdown (a grace stop): delayMs is how long the guest takes, hang a guest that ignores it.
 *
 * Events from outside the agent (a guest that crashes or is powered off, an admin pausing
 * it) are test hooks: simulateCrash(), simulatePause(), simulateResume(). Every change, by
 * an operation or a hook, is announced to watch() listeners (the agent pushes it).
 *
 * Outgoing migrations are marked in the same file (`outgoing`) before the VM is sent, so a
 * restart mid-way finds the VM Paused with migratingTo, never resumed on its own.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type AgentVm, DEFAULT_GRACE_TIMEOUT_MS } from '../../protocol/agent.ts';
import { type Clock, sleep, systemClock } from '../clock.ts';
import { gatherOsFacts, type OsFacts, realProbe } from '../facts.ts';
import { CoalescingWriter } from '../fsutil.ts';
import {
  DeliveryError, DriverError, type HostHardware, type HypervisorDriver, type MigrationTarget, notFound, plainVm, type StopOptions, type VmListener,
  VmListeners, vmName, type VmSpec,
} from './driver.ts';

export const SIM_FILE = 'simulated-host.json';

export type SimOp =
  | 'list' | 'create' | 'start' | 'stop' | 'shutdown' | 'reboot' | 'destroy' | 'prepareMigration' | 'migrate' | 'resolve' | 'receive' | 'facts';
export const SIM_OPS: SimOp[] = ['list', 'create', 'start', 'stop', 'shutdown', 'reboot', 'destroy', 'prepareMigration', 'migrate', 'resolve', 'receive', 'facts'];

export interface Injection {
  op: SimOp;
  /** Only calls for this VM (default: any). */
  vmUuid?: string;
  /**
   * Wait this long (on the driver's clock) before doing the operation. `migrate`: the
   * transfer time (the VM is listed Migrating meanwhile); `shutdown`: the guest's time to
   * power off after ACPI.
   */
  delayMs?: number;
  /** Then fail with this message (HTTP 500) instead of doing it. */
  fail?: string;
  /** Never complete (`shutdown`: a guest that ignores ACPI, so a grace stop times out). */
  hang?: boolean;
  /** How many calls it applies to (default: all until removed). */
  times?: number;
}

/** The made-up hardware of a simulated host (OS fields default to the real machine's). */
export type SimulatedHardware = Omit<HostHardware, 'liveSnapshot' | keyof OsFacts> & Partial<OsFacts>;

export const DEFAULT_SIM_HARDWARE: SimulatedHardware = {
  qemuImgVersion: '7.2.0',
  libvirtVersion: '9.0.0',
  hvm: 'vmx',
  cpuModel: 'Hostkeeper Simulated CPU @ 2.40GHz',
  cpuCores: 16,
  cpuSockets: 2,
  cpuNum: 32,
  cpuMhz: 2400,
  memoryBytes: 128 * 1024 ** 3,
};

/** A migration away from this host that is under way, or whose outcome is unknown. */
interface Outgoing {
  to: string;
  /** What the VM was before: what a failed migration puts back. */
  resume: 'Running' | 'Paused';
}

interface SimFile {
  bootId: string;
  hardware?: Partial<SimulatedHardware>;
  vms: AgentVm[];
  /** vm uuid -> outgoing migration; written BEFORE the VM is sent, removed after it is forgotten. */
  outgoing?: Record<string, Outgoing>;
}

/** Real OS facts, read once per process and shared by every simulated host in it. */
let sharedOs: Promise<OsFacts> | undefined;
export const processOsFacts = (): Promise<OsFacts> => (sharedOs ??= gatherOsFacts(realProbe));

export function parseInjections(text: string | undefined, where = 'HK_SIM_INJECT'): Injection[] {
  if (!text) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error(`${where} must be a JSON array of {op, vmUuid?, delayMs?, fail?, hang?, times?}`);
  }
  const list = Array.isArray(raw) ? raw : [raw];
  return list.map((x, i) => {
    const o = x as Partial<Injection>;
    if (!o || !SIM_OPS.includes(o.op as SimOp)) throw new Error(`${where}[${i}].op must be one of ${SIM_OPS.join(', ')}`);
    if (o.delayMs !== undefined && !(Number.isFinite(o.delayMs) && o.delayMs >= 0)) throw new Error(`${where}[${i}].delayMs must be a number >= 0`);
    if (o.fail !== undefined && typeof o.fail !== 'string') throw new Error(`${where}[${i}].fail must be a string`);
    if (o.times !== undefined && !(Number.isInteger(o.times) && o.times > 0)) throw new Error(`${where}[${i}].times must be an integer > 0`);
    if (o.hang !== undefined && typeof o.hang !== 'boolean') throw new Error(`${where}[${i}].hang must be true or false`);
    if (o.vmUuid !== undefined && typeof o.vmUuid !== 'string') throw new Error(`${where}[${i}].vmUuid must be a string`);
    const out: Injection = { op: o.op as SimOp, delayMs: o.delayMs, fail: o.fail, times: o.times };
    if (o.hang !== undefined) out.hang = o.hang;
    if (o.vmUuid !== undefined) out.vmUuid = o.vmUuid;
    return out;
  });
}

export interface SimulatorOptions {
  stateDir: string;
  clock?: Clock;
  /** Hardware for a host created now (an existing file keeps its own). */
  hardware?: Partial<SimulatedHardware>;
  /** Faults from the start (default: parsed from HK_SIM_INJECT). */
  inject?: Injection[];
  /** OS facts source (default: the real machine's, once per process). */
  osFacts?: () => Promise<OsFacts>;
}

/** Holds memory and vCPUs on this host. */
const holds = (s: AgentVm['state']) => s === 'Running' || s === 'Paused' || s === 'Migrating';

export class SimulatorDriver implements HypervisorDriver {
  readonly kind = 'simulator' as const;
  private readonly vms = new Map<string, AgentVm>();
  /** VMs an operation is moving right now (being sent, or arriving): other operations are refused. */
  private readonly busy = new Set<string>();
  /** VMs arriving here (listed Migrating): not written to the file until they have arrived. */
  private readonly arriving = new Set<string>();
  private readonly outgoing = new Map<string, Outgoing>();
  private injections: (Injection & { left: number })[] = [];
  private readonly writer: CoalescingWriter;
  private readonly listeners = new VmListeners();

  private constructor(
    readonly stateDir: string,
    private readonly clock: Clock,
    private file: SimFile,
    private readonly osFacts: () => Promise<OsFacts>,
  ) {
    for (const vm of file.vms) this.vms.set(vm.uuid, vm);
    for (const [uuid, o] of Object.entries(file.outgoing ?? {})) {
      const vm = this.vms.get(uuid);
      // Without the VM, only the marker's removal was lost: it had been forgotten after delivery.
      if (!vm) continue;
      // A previous process was sending it: whether the destination runs it is unknown until
      // the controller resolves it, so it stays paused here, whatever it was before.
      this.outgoing.set(uuid, o);
      this.vms.set(uuid, { ...plainVm(vm, 'Paused'), migratingTo: o.to });
    }
    this.writer = new CoalescingWriter(join(stateDir, SIM_FILE), () => {
      this.file.vms = [...this.vms.values()].filter((v) => !this.arriving.has(v.uuid));
      this.file.outgoing = Object.fromEntries(this.outgoing);
      return JSON.stringify(this.file);
    });
  }

  static async open(opts: SimulatorOptions): Promise<SimulatorDriver> {
    const path = join(opts.stateDir, SIM_FILE);
    let file: SimFile | undefined;
    try {
      const raw = JSON.parse(await readFile(path, 'utf8')) as SimFile;
      if (typeof raw.bootId !== 'string' || !Array.isArray(raw.vms)) throw new Error('bad shape');
      file = raw;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${path} is unreadable: ${(err as Error).message}`);
    }
    const fresh = !file;
    file ??= { bootId: randomUUID(), hardware: opts.hardware, vms: [] };
    const d = new SimulatorDriver(opts.stateDir, opts.clock ?? systemClock, file, opts.osFacts ?? processOsFacts);
    for (const i of opts.inject ?? parseInjections(process.env.HK_SIM_INJECT)) d.inject(i);
    if (fresh) await d.writer.write();
    return d;
  }

  // ---- test and fleet hooks -------------------------------------------------------------

  /** Adds a fault; returns a function that removes it. */
  inject(i: Injection): () => void {
    const entry = { ...i, left: i.times ?? Infinity };
    this.injections.push(entry);
    return () => {
      this.injections = this.injections.filter((x) => x !== entry);
    };
  }

  clearInjections(): void {
    this.injections = [];
  }

  /** Simulates a host reboot (new boot id). VMs are kept: a test decides what else happens. */
  async setBootId(id: string = randomUUID()): Promise<void> {
    this.file.bootId = id;
    await this.writer.write();
  }

  /** Changes the simulated hardware (the agent notices at its next facts refresh). */
  async setHardware(patch: Partial<SimulatedHardware>): Promise<void> {
    this.file.hardware = { ...this.file.hardware, ...patch };
    await this.writer.write();
  }

  /** From outside the agent: the guest crashed or was powered off (Running or Paused -> Stopped). */
  simulateCrash(uuid: string): Promise<AgentVm> {
    return this.external(uuid, ['Running', 'Paused'], 'Stopped');
  }

  /** From outside the agent: someone paused the VM (`virsh suspend`). */
  simulatePause(uuid: string): Promise<AgentVm> {
    return this.external(uuid, ['Running'], 'Paused');
  }

  /** From outside the agent: someone resumed a paused VM. */
  simulateResume(uuid: string): Promise<AgentVm> {
    return this.external(uuid, ['Paused'], 'Running');
  }

  private async external(uuid: string, from: AgentVm['state'][], to: AgentVm['state']): Promise<AgentVm> {
    const vm = this.mustGet(uuid);
    if (!from.includes(vm.state)) throw new DriverError(409, `${vmName(uuid)} is ${vm.state}, not ${from.join(' or ')}`);
    return this.save(uuid, to);
  }

  private take(op: SimOp, uuid?: string): Injection | undefined {
    const i = this.injections.find((x) => x.op === op && x.left > 0 && (x.vmUuid === undefined || x.vmUuid === uuid));
    if (!i) return undefined;
    i.left -= 1;
    if (i.left <= 0) this.injections = this.injections.filter((x) => x !== i);
    return i;
  }

  private async fault(op: SimOp, uuid?: string): Promise<void> {
    const i = this.take(op, uuid);
    if (!i) return;
    if (i.hang) await new Promise<never>(() => {});
    if (i.delayMs) await sleep(this.clock, i.delayMs);
    if (i.fail !== undefined) throw new DriverError(500, i.fail);
  }

  private persist(): Promise<void> {
    return this.writer.write();
  }

  /** The VM, if no migration holds it (being sent, arriving, or awaiting its outcome). */
  private mustGet(uuid: string): AgentVm {
    const vm = this.vms.get(uuid);
    if (!vm) throw notFound(uuid);
    if (this.busy.has(uuid)) throw new DriverError(409, `${vmName(uuid)} is being migrated`);
    const out = this.outgoing.get(uuid);
    if (out) throw new DriverError(409, `${vmName(uuid)} awaits the outcome of its migration to ${out.to}: resolve it first (/vm/migrate/resolve)`);
    return vm;
  }

  /** Sets (or, with null, removes) a VM in memory and tells the listeners. */
  private put(uuid: string, vm: AgentVm | null): void {
    if (vm) this.vms.set(uuid, vm);
    else this.vms.delete(uuid);
    this.listeners.emit(uuid, vm);
  }

  /** Sets the state of a VM, writes the file, and answers the VM. */
  private async save(uuid: string, state: AgentVm['state']): Promise<AgentVm> {
    const next = plainVm(this.vms.get(uuid)!, state);
    this.put(uuid, next);
    await this.persist();
    return { ...next };
  }

  watch(listener: VmListener): () => void {
    return this.listeners.add(listener);
  }

  // ---- host -----------------------------------------------------------------------------

  async bootId(): Promise<string> {
    return this.file.bootId;
  }

  async hostFacts(): Promise<HostHardware> {
    await this.fault('facts');
    const os = await this.osFacts();
    const hw = { ...DEFAULT_SIM_HARDWARE, ...this.file.hardware };
    return {
      osDistribution: hw.osDistribution ?? os.osDistribution,
      osRelease: hw.osRelease ?? os.osRelease,
      osVersion: hw.osVersion ?? os.osVersion,
      qemuImgVersion: hw.qemuImgVersion,
      libvirtVersion: hw.libvirtVersion,
      hvm: hw.hvm,
      cpuModel: hw.cpuModel,
      cpuCores: hw.cpuCores,
      cpuSockets: hw.cpuSockets,
      cpuNum: hw.cpuNum,
      cpuMhz: hw.cpuMhz,
      memoryBytes: hw.memoryBytes,
      // A simulated hypervisor can do everything a modern libvirt can.
      liveSnapshot: true,
    };
  }

  /** Total minus what running, paused and migrating VMs hold. */
  async availableMemory(): Promise<number> {
    const total = this.file.hardware?.memoryBytes ?? DEFAULT_SIM_HARDWARE.memoryBytes;
    let used = 0;
    for (const vm of this.vms.values()) if (holds(vm.state)) used += vm.memorySize;
    return Math.max(0, total - used);
  }

  // ---- VMs ------------------------------------------------------------------------------

  async list(): Promise<AgentVm[]> {
    await this.fault('list');
    return [...this.vms.values()].map((v) => ({ ...v }));
  }

  async get(uuid: string): Promise<AgentVm | undefined> {
    const vm = this.vms.get(uuid);
    return vm && { ...vm };
  }

  async create(spec: VmSpec, start: boolean): Promise<AgentVm> {
    await this.fault('create', spec.uuid);
    if (this.vms.has(spec.uuid)) throw new DriverError(409, `${vmName(spec.uuid)} already exists on this host`);
    const vm = plainVm({ ...spec, state: start ? 'Running' : 'Stopped' });
    this.put(vm.uuid, vm);
    await this.persist();
    return { ...vm };
  }

  /** Starts a Stopped VM, resumes a Paused one. */
  async start(uuid: string): Promise<AgentVm> {
    this.mustGet(uuid);
    await this.fault('start', uuid);
    const vm = this.mustGet(uuid);
    return vm.state === 'Running' ? { ...vm } : this.save(uuid, 'Running');
  }

  async stop(uuid: string, opts: StopOptions = {}): Promise<AgentVm> {
    this.mustGet(uuid);
    await this.fault('stop', uuid);
    const vm = this.mustGet(uuid);
    if (vm.state === 'Stopped') return { ...vm };
    if (opts.type === 'cold') return this.save(uuid, 'Stopped');
    const timeoutMs = opts.graceTimeoutMs ?? DEFAULT_GRACE_TIMEOUT_MS;
    if (vm.state === 'Paused') {
      throw new DriverError(409, `${vmName(uuid)} is Paused: its guest cannot react to an ACPI shutdown (grace stop); stop it with type cold`, 'GRACE_TIMEOUT');
    }
    const guest = this.take('shutdown', uuid);
    if (guest?.fail !== undefined) throw new DriverError(500, guest.fail);
    const guestMs = guest?.hang ? Infinity : (guest?.delayMs ?? 0);
    if (guestMs === 0) return this.save(uuid, 'Stopped');
    // The guest powers off when it is done, whether or not the caller still waits, as a real one would.
    const off = guestMs === Infinity ? undefined : sleep(this.clock, guestMs).then(() => this.guestPoweredOff(uuid));
    if (off && guestMs <= timeoutMs) {
      await off;
      const now = this.vms.get(uuid);
      if (!now) throw notFound(uuid);
      return { ...now };
    }
    await sleep(this.clock, timeoutMs);
    const now = this.vms.get(uuid);
    if (now?.state === 'Stopped') return { ...now };
    throw new DriverError(409, `${vmName(uuid)} did not shut down within ${timeoutMs} ms of an ACPI shutdown (grace stop); stop it with type cold`, 'GRACE_TIMEOUT');
  }

  /** The guest finished an ACPI shutdown: off, unless something else happened to it meanwhile. */
  private async guestPoweredOff(uuid: string): Promise<void> {
    const vm = this.vms.get(uuid);
    if (!vm || vm.state !== 'Running' || this.busy.has(uuid) || this.outgoing.has(uuid)) return;
    await this.save(uuid, 'Stopped');
  }

  async reboot(uuid: string): Promise<AgentVm> {
    const vm = this.mustGet(uuid);
    if (vm.state !== 'Running') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running VM reboots`);
    await this.fault('reboot', uuid);
    // The guest restarts inside the same VM: the description does not change, but it is announced.
    const now = this.mustGet(uuid);
    this.listeners.emit(uuid, now);
    return { ...now };
  }

  async destroy(uuid: string): Promise<AgentVm> {
    this.mustGet(uuid);
    await this.fault('destroy', uuid);
    const vm = this.mustGet(uuid);
    this.put(uuid, null);
    await this.persist();
    return plainVm(vm, 'Stopped');
  }

  async prepareMigration(vm: AgentVm): Promise<void> {
    await this.fault('prepareMigration', vm.uuid);
    if (this.vms.has(vm.uuid)) throw new DriverError(409, `${vmName(vm.uuid)} already exists on this host`);
  }

  /**
   * Marks the VM outgoing (file written) and Migrating, waits the injected transfer time,
   * delivers it, then forgets it. Many run at once: nothing here is serialised but the file
   * writes, which coalesce.
   */
  async migrate(uuid: string, to: MigrationTarget): Promise<AgentVm> {
    const vm = this.mustGet(uuid);
    if (vm.state !== 'Running' && vm.state !== 'Paused') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running or Paused VM migrates`);
    const resume = vm.state;
    const sent = plainVm(vm, resume);
    this.busy.add(uuid);
    this.outgoing.set(uuid, { to: to.url, resume });
    this.put(uuid, { ...plainVm(vm, 'Migrating'), migratingTo: to.url });
    try {
      // The marker must be on disk before anything leaves: a restart then knows the VM may be elsewhere.
      await this.persist();
    } catch (err) {
      this.busy.delete(uuid);
      this.outgoing.delete(uuid);
      this.put(uuid, sent);
      throw err;
    }
    try {
      await this.fault('migrate', uuid);
      await to.deliver(sent);
    } catch (err) {
      this.busy.delete(uuid);
      if (err instanceof DeliveryError && err.maybeDelivered) {
        // The destination may run it now: it stays paused here until the controller resolves it.
        this.put(uuid, { ...plainVm(vm, 'Paused'), migratingTo: to.url });
        await this.persist();
        throw new DriverError(502, `${err.message}; the outcome is unknown: ${vmName(uuid)} stays Paused here until the migration is resolved`, 'MIGRATION_UNKNOWN');
      }
      // Refused (or failed before sending): nothing left this host.
      this.outgoing.delete(uuid);
      this.put(uuid, sent);
      await this.persist();
      throw err;
    }
    // The destination runs it now: forget it here, then the marker (one write does both).
    this.busy.delete(uuid);
    this.outgoing.delete(uuid);
    this.put(uuid, null);
    await this.persist();
    return sent;
  }

  async resolveMigration(uuid: string, completed: boolean): Promise<AgentVm | null> {
    await this.fault('resolve', uuid);
    const vm = this.vms.get(uuid);
    if (this.busy.has(uuid)) throw new DriverError(409, `${vmName(uuid)} is being migrated right now: resolve it once that has ended`);
    const out = this.outgoing.get(uuid);
    if (!vm) {
      if (completed) return null;
      throw notFound(uuid);
    }
    if (!out) {
      if (!completed) return { ...vm };
      throw new DriverError(409, `${vmName(uuid)} is not migrating away from this host: refusing to destroy it`);
    }
    this.outgoing.delete(uuid);
    if (completed) {
      this.put(uuid, null);
      await this.persist();
      return null;
    }
    return this.save(uuid, out.resume);
  }

  /**
   * Lists the VM at once as arriving (Migrating), so a controller reading /vm/list never
   * misses a VM that is about to run here; after the injected receive time it runs (or
   * stays paused, as it was on the source). Written to the file before answering.
   */
  async receive(vm: AgentVm): Promise<AgentVm> {
    const uuid = vm.uuid;
    if (this.vms.has(uuid)) throw new DriverError(409, `${vmName(uuid)} already exists on this host`);
    const arrived = plainVm(vm, vm.state === 'Paused' ? 'Paused' : 'Running');
    this.busy.add(uuid);
    this.arriving.add(uuid);
    this.put(uuid, plainVm(vm, 'Migrating'));
    const undo = (err: unknown) => {
      this.busy.delete(uuid);
      this.arriving.delete(uuid);
      this.put(uuid, null);
      throw err;
    };
    await this.fault('receive', uuid).catch(undo);
    this.busy.delete(uuid);
    this.arriving.delete(uuid);
    this.put(uuid, arrived);
    await this.persist().catch(undo);
    return { ...arrived };
  }

  async close(): Promise<void> {
    await this.writer.flush();
  }
}
