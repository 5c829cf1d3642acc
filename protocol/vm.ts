/**
 * VM rules shared by the controller, its tests and (later) the console: which operation a VM
 * takes in which state, which states hold capacity on a host, what a host must be to take
 * work, and the reasons the allocator gives for every host it drops.
 */
import type { HostRow, VmRow, VmState } from './resources.ts';

export const VM_OPERATIONS = ['start', 'stop', 'reboot', 'migrate', 'destroy'] as const;
export type VmOperation = (typeof VM_OPERATIONS)[number];

/**
 * The states each operation accepts (ZStack's VmInstanceState allowed operations, cut to what
 * this project does). Unknown VMs take only stop and destroy: the controller cannot see them,
 * so it never starts or moves them (the host may still be running them).
 */
export const VM_OPERATION_STATES: Record<VmOperation, readonly VmState[]> = {
  start: ['Created', 'Stopped'],
  stop: ['Running', 'Paused', 'Starting', 'Unknown'],
  reboot: ['Running'],
  migrate: ['Running', 'Paused'],
  destroy: ['Created', 'Starting', 'Running', 'Paused', 'Stopping', 'Stopped', 'Unknown'],
};

/**
 * States in which a VM holds memory and CPU on its host (ZStack's capacity rules, reference
 * zstack-notes 7.2): everything that may have a QEMU process on the host. Paused VMs keep
 * their memory; Unknown ones are counted because the host may still run them. A VM being
 * migrated also holds capacity on its destination (see MigrationRow).
 */
export const HOLDING_STATES: ReadonlySet<VmState> = new Set<VmState>(['Starting', 'Running', 'Paused', 'Stopping', 'Migrating', 'Unknown']);

export const vmRef = (vm: Pick<VmRow, 'uuid' | 'state'> & { name?: string }) =>
  `vm[uuid:${vm.uuid}${vm.name ? `, name:${vm.name}` : ''}, state:${vm.state}]`;

/**
 * An in-flight migration, recorded (with the capacity it reserves on the destination) in the
 * same transaction that picks the destination, and removed in the one that records where the
 * VM ended. After a controller crash these rows are what resume asks the agents about.
 */
export interface MigrationRow {
  /** The VM's uuid: one migration per VM at a time. */
  uuid: string;
  sourceHostUuid: string;
  targetHostUuid: string;
  /** The one-time token the destination agent accepts the VM with. */
  token: string;
  memorySize: number;
  cpuNum: number;
  /** The flow (maintenance or MigrateVm) that owns it. */
  flowUuid: string;
  createDate: number;
}

/** Why the allocator dropped a host; every dropped host carries one. */
export const DROP_REASONS = {
  'source-host': 'is the VM\'s current host',
  'not-enabled': 'is not Enabled',
  'not-connected': 'is not Connected',
  'out-of-scope': 'is outside the requested scope',
  memory: 'has not enough free memory',
  cpu: 'has not enough free CPU',
} as const;
export type DropReason = keyof typeof DROP_REASONS;

/** Only an Enabled and Connected host takes a new, started or migrated-in VM. */
export function takesNewWork(h: Pick<HostRow, 'state' | 'status'>): boolean {
  return h.state === 'Enabled' && h.status === 'Connected';
}
