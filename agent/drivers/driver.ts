/**
 * The hypervisor seam. An agent talks to its host only through a HypervisorDriver: the
 * VMs, and what the host is (facts, free memory, boot id). Two implementations:
 * libvirt.ts (virsh on a real KVM host) and simulator.ts (a host kept in a JSON file, for
 * tests and the simulated fleet).
 */
import type { AgentVm, HostFacts } from '../../protocol/agent.ts';

/** Facts the driver knows; the agent adds bootId, agentVersion and hypervisor. */
export type HostHardware = Omit<HostFacts, 'bootId' | 'agentVersion' | 'hypervisor'>;

export type VmSpec = Omit<AgentVm, 'state'>;

/** An expected failure with the HTTP status the agent answers with. */
export class DriverError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 500 | 502 | 503,
    message: string,
  ) {
    super(message);
  }
}

export const vmName = (uuid: string) => `vm[uuid:${uuid}]`;
export const notFound = (uuid: string) => new DriverError(404, `${vmName(uuid)} is not on this host`);

export interface MigrationTarget {
  /** The destination agent's base URL (for logs and, in libvirt, the destination host). */
  url: string;
  /**
   * Hands the VM to the destination agent (POST vmReceive with the one-time token);
   * rejects when the destination refused it. Nothing is removed here before it resolves.
   */
  deliver(vm: AgentVm): Promise<void>;
}

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
  start(uuid: string): Promise<AgentVm>;
  stop(uuid: string): Promise<AgentVm>;
  /** Powers the VM off and removes it from the host; answers its last description. */
  destroy(uuid: string): Promise<AgentVm>;
  /** Destination side, before the token is issued: can this host take the VM? */
  prepareMigration(vm: AgentVm): Promise<void>;
  /** Source side: deliver the VM, then forget it. A failure anywhere leaves it here. */
  migrate(uuid: string, to: MigrationTarget): Promise<AgentVm>;
  /** Destination side: the VM arrived (the token was checked by the agent); it runs here now. */
  receive(vm: AgentVm): Promise<AgentVm>;
  /** Flushes what it keeps on disk. */
  close(): Promise<void>;
}
