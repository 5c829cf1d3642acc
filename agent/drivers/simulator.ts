/**
 * A simulated KVM host: its VMs, hardware and boot id live in
 * `<state dir>/simulated-host.json` (written atomically: temp file + rename), so a
 * simulated host survives agent restarts the way a real one does. Used by tests and by the
 * fleet (thousands in one process), so it never shells out: OS facts are the real
 * machine's, read once per process and shared; the hardware is made up and settable.
 *
 * Faults on demand: `inject({op, delayMs?, fail?, times?})` delays and/or fails the next
 * calls of an operation; HK_SIM_INJECT (a JSON array of the same objects) sets them at start.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentVm } from '../../protocol/agent.ts';
import { type Clock, sleep, systemClock } from '../clock.ts';
import { gatherOsFacts, type OsFacts, realProbe } from '../facts.ts';
import { CoalescingWriter } from '../fsutil.ts';
import { DriverError, type HostHardware, type HypervisorDriver, type MigrationTarget, notFound, vmName, type VmSpec } from './driver.ts';

export const SIM_FILE = 'simulated-host.json';

export type SimOp = 'list' | 'create' | 'start' | 'stop' | 'destroy' | 'prepareMigration' | 'migrate' | 'receive' | 'facts';
export const SIM_OPS: SimOp[] = ['list', 'create', 'start', 'stop', 'destroy', 'prepareMigration', 'migrate', 'receive', 'facts'];

export interface Injection {
  op: SimOp;
  /** Wait this long (on the driver's clock) before doing the operation. */
  delayMs?: number;
  /** Then fail with this message (HTTP 500) instead of doing it. */
  fail?: string;
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

interface SimFile {
  bootId: string;
  hardware?: Partial<SimulatedHardware>;
  vms: AgentVm[];
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
    throw new Error(`${where} must be a JSON array of {op, delayMs?, fail?, times?}`);
  }
  const list = Array.isArray(raw) ? raw : [raw];
  return list.map((x, i) => {
    const o = x as Partial<Injection>;
    if (!o || !SIM_OPS.includes(o.op as SimOp)) throw new Error(`${where}[${i}].op must be one of ${SIM_OPS.join(', ')}`);
    if (o.delayMs !== undefined && !(Number.isFinite(o.delayMs) && o.delayMs >= 0)) throw new Error(`${where}[${i}].delayMs must be a number >= 0`);
    if (o.fail !== undefined && typeof o.fail !== 'string') throw new Error(`${where}[${i}].fail must be a string`);
    if (o.times !== undefined && !(Number.isInteger(o.times) && o.times > 0)) throw new Error(`${where}[${i}].times must be an integer > 0`);
    return { op: o.op as SimOp, delayMs: o.delayMs, fail: o.fail, times: o.times };
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

export class SimulatorDriver implements HypervisorDriver {
  readonly kind = 'simulator' as const;
  private readonly vms = new Map<string, AgentVm>();
  /** VMs in the middle of a migration: other operations on them are refused. */
  private readonly busy = new Set<string>();
  private injections: (Injection & { left: number })[] = [];
  private readonly writer: CoalescingWriter;

  private constructor(
    readonly stateDir: string,
    private readonly clock: Clock,
    private file: SimFile,
    private readonly osFacts: () => Promise<OsFacts>,
  ) {
    for (const vm of file.vms) this.vms.set(vm.uuid, vm);
    this.writer = new CoalescingWriter(join(stateDir, SIM_FILE), () => {
      this.file.vms = [...this.vms.values()];
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

  private async fault(op: SimOp): Promise<void> {
    const i = this.injections.find((x) => x.op === op && x.left > 0);
    if (!i) return;
    i.left -= 1;
    if (i.left <= 0) this.injections = this.injections.filter((x) => x !== i);
    if (i.delayMs) await sleep(this.clock, i.delayMs);
    if (i.fail !== undefined) throw new DriverError(500, i.fail);
  }

  private persist(): Promise<void> {
    return this.writer.write();
  }

  private mustGet(uuid: string): AgentVm {
    const vm = this.vms.get(uuid);
    if (!vm) throw notFound(uuid);
    if (this.busy.has(uuid)) throw new DriverError(409, `${vmName(uuid)} is being migrated`);
    return vm;
  }

  private setState(vm: AgentVm, state: AgentVm['state']): AgentVm {
    const next = { ...vm, state };
    this.vms.set(vm.uuid, next);
    return next;
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

  /** Total minus what running and paused VMs hold. */
  async availableMemory(): Promise<number> {
    const total = this.file.hardware?.memoryBytes ?? DEFAULT_SIM_HARDWARE.memoryBytes;
    let used = 0;
    for (const vm of this.vms.values()) if (vm.state === 'Running' || vm.state === 'Paused') used += vm.memorySize;
    return Math.max(0, total - used);
  }

  // ---- VMs ------------------------------------------------------------------------------

  async list(): Promise<AgentVm[]> {
    await this.fault('list');
    return [...this.vms.values()];
  }

  async get(uuid: string): Promise<AgentVm | undefined> {
    return this.vms.get(uuid);
  }

  async create(spec: VmSpec, start: boolean): Promise<AgentVm> {
    await this.fault('create');
    if (this.vms.has(spec.uuid)) throw new DriverError(409, `${vmName(spec.uuid)} already exists on this host`);
    const vm: AgentVm = { ...spec, vmNics: spec.vmNics.map((n) => ({ ...n })), state: start ? 'Running' : 'Stopped' };
    this.vms.set(vm.uuid, vm);
    await this.persist();
    return vm;
  }

  start(uuid: string): Promise<AgentVm> {
    return this.power(uuid, 'start', 'Running');
  }

  stop(uuid: string): Promise<AgentVm> {
    return this.power(uuid, 'stop', 'Stopped');
  }

  /** Checks the VM exists, applies the injected fault for `op`, then sets and persists the state. */
  private async power(uuid: string, op: 'start' | 'stop', state: 'Running' | 'Stopped'): Promise<AgentVm> {
    this.mustGet(uuid);
    await this.fault(op);
    const vm = this.setState(this.mustGet(uuid), state);
    await this.persist();
    return vm;
  }

  async destroy(uuid: string): Promise<AgentVm> {
    this.mustGet(uuid);
    await this.fault('destroy');
    const vm = this.mustGet(uuid);
    this.vms.delete(uuid);
    await this.persist();
    return { ...vm, state: 'Stopped' };
  }

  async prepareMigration(vm: AgentVm): Promise<void> {
    await this.fault('prepareMigration');
    if (this.vms.has(vm.uuid)) throw new DriverError(409, `${vmName(vm.uuid)} already exists on this host`);
  }

  async migrate(uuid: string, to: MigrationTarget): Promise<AgentVm> {
    const vm = this.mustGet(uuid);
    if (vm.state !== 'Running') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running VM migrates`);
    this.busy.add(uuid);
    try {
      await this.fault('migrate');
      await to.deliver(vm);
    } finally {
      this.busy.delete(uuid);
    }
    // The destination runs it now: forget it here.
    this.vms.delete(uuid);
    await this.persist();
    return vm;
  }

  async receive(vm: AgentVm): Promise<AgentVm> {
    await this.fault('receive');
    if (this.vms.has(vm.uuid)) throw new DriverError(409, `${vmName(vm.uuid)} already exists on this host`);
    const arrived: AgentVm = { ...vm, vmNics: vm.vmNics.map((n) => ({ ...n })), state: 'Running' };
    this.vms.set(vm.uuid, arrived);
    await this.persist();
    return arrived;
  }

  async close(): Promise<void> {
    await this.writer.flush();
  }
}
