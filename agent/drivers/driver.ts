/**
 * The hypervisor seam. An agent talks to its host only through a HypervisorDriver: the
 * VMs, and what the host is (facts, free memory, boot id). Two implementations:
 * libvirt.ts (virsh on a real KVM host) and simulator.ts (a host kept in a JSON file, for
 * tests and the simulated fleet).
 */
import type { AgentErrorCode, AgentVm, HostFacts } from '../../protocol/agent.ts';

/** Facts the driver knows; the agent adds bootId, agentVersion and hypervisor. */
export type HostHardware = Omit<HostFacts, 'bootId' | 'agentVersion' | 'hypervisor'>;

export type VmSpec = Omit<AgentVm, 'state' | 'migratingTo'>;

/** An expected failure with the HTTP status the agent answers with (and a code the caller acts on). */
export class DriverError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 500 | 502 | 503,
    message: string,
    readonly code?: AgentErrorCode,
  ) {
    super(message);
  }
}

/**
 * A delivery to the destination agent failed. `maybeDelivered`: the request may have
 * reached it (the connection broke after sending, or a resend was refused after such an
 * attempt), so the destination may run the VM now: the source must not resume it.
 */
export class DeliveryError extends DriverError {
  constructor(message: string, readonly maybeDelivered: boolean) {
    super(502, message);
  }
}

export const vmName = (uuid: string) => `vm[uuid:${uuid}]`;
export const notFound = (uuid: string) => new DriverError(404, `${vmName(uuid)} is not on this host`);

/** A VM description without the source-side migration field (what is sent and answered). */
export function plainVm(vm: AgentVm, state: AgentVm['state'] = vm.state): AgentVm {
  return { uuid: vm.uuid, name: vm.name, state, memorySize: vm.memorySize, cpuNum: vm.cpuNum, vmNics: vm.vmNics.map((n) => ({ ...n })) };
}

export interface MigrationTarget {
  /** The destination agent's base URL (for logs and, in libvirt, the destination host). */
  url: string;
  /**
   * Hands the VM to the destination agent (POST vmReceive with the one-time token, resent
   * on a broken connection); rejects with a DeliveryError when the destination refused it or
   * the outcome is unknown. Nothing is removed here before it resolves.
   */
  deliver(vm: AgentVm): Promise<void>;
}

export interface StopOptions {
  type?: 'grace' | 'cold';
  /** grace only: how long to wait for the guest (default DEFAULT_GRACE_TIMEOUT_MS). */
  graceTimeoutMs?: number;
}

/** Told of every VM change: the VM now, or null when it left this host. */
export type VmListener = (uuid: string, vm: AgentVm | null) => void;

export interface HypervisorDriver {
  readonly kind: HostFacts['hypervisor'];
  /** Changes when the host reboots (/proc/sys/kernel/random/boot_id, or the simulated one). */
  bootId(): Promise<string>;
  hostFacts(): Promise<HostHardware>;
  /** What the OS reports available right now (bytes); not a fact: it moves all the time. */
  availableMemory(): Promise<number>;
  list(): Promise<AgentVm[]>;
  get(uuid: string): Promise<AgentVm | undefined>;
  /** Defines the VM (Stopped), and starts it when `start`. 409 when the uuid exists. */
  create(vm: VmSpec, start: boolean): Promise<AgentVm>;
  /** Starts a Stopped VM, resumes a Paused one. */
  start(uuid: string): Promise<AgentVm>;
  /** grace: ACPI and a bounded wait (DriverError 409 GRACE_TIMEOUT after it); cold: power off. */
  stop(uuid: string, opts?: StopOptions): Promise<AgentVm>;
  /** Reboots a Running VM's guest. */
  reboot(uuid: string): Promise<AgentVm>;
  /** Powers the VM off and removes it from the host; answers its last description. */
  destroy(uuid: string): Promise<AgentVm>;
  /** Destination side, before the token is issued: can this host take the VM? */
  prepareMigration(vm: AgentVm): Promise<void>;
  /**
   * Source side: mark the VM outgoing (persisted before anything is sent), deliver it, then
   * forget it. A refusal puts it back as it was; an unknown outcome leaves it Paused with
   * migratingTo until resolveMigration.
   */
  migrate(uuid: string, to: MigrationTarget): Promise<AgentVm>;
  /** Source side: ends a migration whose outcome was unknown (protocol VmResolveMigrationCmd). */
  resolveMigration(uuid: string, completed: boolean): Promise<AgentVm | null>;
  /** Destination side: the VM arrived (the token was checked by the agent); it runs (or stays paused) here now. */
  receive(vm: AgentVm): Promise<AgentVm>;
  /** Subscribes to VM changes (the agent pushes them over its channel); returns the unsubscribe. */
  watch(listener: VmListener): () => void;
  /** Flushes what it keeps on disk. */
  close(): Promise<void>;
}

/** The listeners of one driver (one module: both drivers announce changes the same way). */
export class VmListeners {
  private readonly set = new Set<VmListener>();
  add(l: VmListener): () => void {
    this.set.add(l);
    return () => this.set.delete(l);
  }
  emit(uuid: string, vm: AgentVm | null): void {
    const copy = vm && { ...vm, vmNics: vm.vmNics.map((n) => ({ ...n })) };
    for (const l of this.set) l(uuid, copy);
  }
}
