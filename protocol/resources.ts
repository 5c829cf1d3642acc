/**
 * The resources of the admin API: their inventory shapes (exactly the contract's fields),
 * their REST paths and schema class names, and the fields the query language accepts.
 */
import type { HostState, HostStatus } from './states.ts';
import { HOST_STATES, HOST_STATUSES } from './states.ts';
import type { ResourceType } from './tags.ts';

/** Dates are epoch milliseconds inside the controller and ZStack strings on the wire. */
export interface ZoneRow {
  uuid: string; name: string; description: string | null; state: 'Enabled' | 'Disabled';
  createDate: number; lastOpDate: number;
  /** ZStack's ZoneInventory: type 'zstack'; the first zone created is the default one. */
  type?: string; isDefault?: boolean;
}
export interface ClusterRow {
  uuid: string; name: string; description: string | null; zoneUuid: string; hypervisorType: 'KVM';
  state: 'Enabled' | 'Disabled'; createDate: number; lastOpDate: number;
  /** ZStack's ClusterInventory: type 'zstack'; architecture from the first host that reports one. */
  type?: string; architecture?: string | null;
}
export interface HostCapacity {
  cpuNum: number; cpuSockets: number; totalCpuCapacity: number; availableCpuCapacity: number;
  totalMemoryCapacity: number; availableMemoryCapacity: number;
  totalPhysicalMemory: number; availablePhysicalMemory: number;
}
export interface HostRow extends HostCapacity {
  uuid: string; name: string; description: string | null; zoneUuid: string; clusterUuid: string;
  managementIp: string; hypervisorType: 'KVM'; state: HostState; status: HostStatus;
  createDate: number; lastOpDate: number;
  /** Not in the inventory: ssh port for deployment, and why the status is what it is. */
  sshPort: number;
  statusReason: string;
  /** Not in the inventory: how to reach and authenticate to the host's agent. */
  agentPort?: number;
  /** The per-host secret requests are signed with; null until deployment or registration. */
  agentSecret?: string | null;
  /**
   * When the last certificate the controller issued to the host's agent expires (epoch ms);
   * set once one was issued: from then on the agent must present a certificate from the CA
   * (controller/agents/client.ts). Absent: not issued yet (provisional TLS).
   */
  agentCertNotAfter?: number;
  /** Identity the agent reported at the last connect (a change means a restart). */
  bootId?: string;
  instanceId?: string;
  agentVersion?: string;
  /**
   * Not in the inventory: deployment over SSH (AddKVMHost). The host key recorded at the
   * first login (`<type> <base64>`; a different one is refused later), the SSH user, whether
   * it needs sudo, the controller URL given to the agent, and how far the deployment got:
   * 'login' (password in use, not kept), 'deploying' (key installed: resumable), 'done'; and
 * whether a failed deployment keeps the record.
   * Hosts that registered with a bootstrap token have none of these.
   */
  sshHostKey?: string;
  sshUser?: string;
  sshBecome?: boolean;
  controllerUrl?: string;
  deployPhase?: 'login' | 'deploying' | 'done';
  /** The controller running the host's deployment (several controllers: another resumes it if that one dies). */
  deployBy?: string;
  /** The add asked to keep the host when deployment fails (system tag keepHostOnFailure). */
  keepOnFailure?: boolean;
  /**
   * Not in the inventory: what the VMs placed on the host hold (controller/services/capacity.ts
   * recomputes them in every transaction that moves a VM), read by the allocator.
   */
  usedMemory?: number;
  usedCpu?: number;
  vmCount?: number;
  /** From the agent's facts at each connect (ZStack's KVMHostInventory fields). */
  osDistribution?: string | null;
  osRelease?: string | null;
  osVersion?: string | null;
  architecture?: string | null;
}
export interface VmNic { ip: string; mac: string }
export const VM_STATES = ['Created', 'Starting', 'Running', 'Paused', 'Stopping', 'Stopped', 'Migrating', 'Unknown', 'Destroyed'] as const;
export type VmState = (typeof VM_STATES)[number];
export interface VmRow {
  uuid: string; name: string; hostUuid: string | null; lastHostUuid: string | null;
  clusterUuid: string | null; zoneUuid: string | null; state: VmState;
  memorySize: number; cpuNum: number; vmNics: VmNic[]; createDate: number; lastOpDate: number;
  /** Not in the inventory: what a Migrating VM was before (Running or Paused), restored where it lands. */
  stateBeforeMigration?: VmState;
}
export interface TagRow {
  uuid: string; resourceType: ResourceType; resourceUuid: string; tag: string;
  type: 'System' | 'User'; inherent: boolean; createDate: number; lastOpDate: number;
}
export interface GlobalConfigRow {
  /** `${category}/${name}`: the store needs one key per row. */
  uuid: string; category: string; name: string; value: string; defaultValue: string; description: string;
}

export type FieldType = 'string' | 'number' | 'date' | 'boolean';
export interface FieldSpec { type: FieldType; values?: readonly string[] }
export type FieldCatalogue = Record<string, FieldSpec>;

const s: FieldSpec = { type: 'string' };
const n: FieldSpec = { type: 'number' };
const d: FieldSpec = { type: 'date' };
const b: FieldSpec = { type: 'boolean' };
const enumOf = (values: readonly string[]): FieldSpec => ({ type: 'string', values });
const ENABLED_DISABLED = ['Enabled', 'Disabled'] as const;

export const ZONE_FIELDS: FieldCatalogue = {
  uuid: s, name: s, description: s, state: enumOf(ENABLED_DISABLED), type: s, isDefault: b, createDate: d, lastOpDate: d,
};
export const CLUSTER_FIELDS: FieldCatalogue = {
  uuid: s, name: s, description: s, zoneUuid: s, hypervisorType: enumOf(['KVM']), state: enumOf(ENABLED_DISABLED),
  type: s, architecture: s, createDate: d, lastOpDate: d,
};
export const HOST_FIELDS: FieldCatalogue = {
  uuid: s, name: s, description: s, zoneUuid: s, clusterUuid: s, managementIp: s, hypervisorType: enumOf(['KVM']),
  state: enumOf(HOST_STATES), status: enumOf(HOST_STATUSES), createDate: d, lastOpDate: d,
  cpuNum: n, cpuSockets: n, totalCpuCapacity: n, availableCpuCapacity: n, totalMemoryCapacity: n,
  availableMemoryCapacity: n, totalPhysicalMemory: n, availablePhysicalMemory: n,
  osDistribution: s, osRelease: s, osVersion: s, architecture: s, sshPort: n,
};
export const VM_FIELDS: FieldCatalogue = {
  uuid: s, name: s, hostUuid: s, lastHostUuid: s, clusterUuid: s, zoneUuid: s, state: enumOf(VM_STATES),
  memorySize: n, cpuNum: n, createDate: d, lastOpDate: d,
};
/** Fields inside a VM's `vmNics` list: a condition on them matches when any NIC matches. */
export const VM_NIC_FIELDS: FieldCatalogue = { ip: s, mac: s };
export const TAG_FIELDS: FieldCatalogue = {
  uuid: s, resourceType: enumOf(['HostVO', 'ClusterVO', 'ZoneVO']), resourceUuid: s, tag: s,
  type: enumOf(['System', 'User']), inherent: b, createDate: d, lastOpDate: d,
};
/** What the domain event log records (controller/events.ts writes them, after their change commits). */
export const EVENT_TYPES = [
  'HostStatusChanged', 'HostStateChanged', 'VmStateChanged',
  'MaintenanceStarted', 'MaintenanceDone', 'MaintenanceFailed', 'JobStarted', 'JobFinished',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];
export const EVENT_SEVERITIES = ['info', 'warning', 'error'] as const;
export interface EventRow {
  uuid: string; type: EventType; severity: (typeof EVENT_SEVERITIES)[number];
  /** HostVO, VmInstanceVO or ApiJob; the name as it was when the event happened. */
  resourceType: string; resourceUuid: string; resourceName: string | null;
  /** The host concerned (a VM's host), so a host's page can list its VMs' events too. */
  hostUuid: string | null;
  from: string | null; to: string | null; message: string; createDate: number;
}
export const EVENT_FIELDS: FieldCatalogue = {
  uuid: s, type: enumOf(EVENT_TYPES), severity: enumOf(EVENT_SEVERITIES), resourceType: enumOf(['HostVO', 'VmInstanceVO', 'ApiJob']),
  resourceUuid: s, resourceName: s, hostUuid: s, from: s, to: s, message: s, createDate: d,
};
export const CONFIG_FIELDS: FieldCatalogue = { category: s, name: s, value: s, defaultValue: s, description: s };
/** Bootstrap tokens as listed: never the token or its hash (controller/services/bootstrap.ts). */
export const BOOTSTRAP_TOKEN_FIELDS: FieldCatalogue = { uuid: s, clusterUuid: s, expiredDate: d, createDate: d, maxUses: n, uses: n };

/** A scheduled maintenance window (contract: /v1/maintenance-windows). */
export interface MaintenanceWindowRow {
  uuid: string; name: string; hostUuids: string[]; cron: string; durationMinutes: number;
  /** IANA zone the cron expression is read in; null: the controller's (TZ, else UTC). */
  timeZone: string | null;
  /** Waiting for its next firing, or Active until activeUntil. */
  state: 'Waiting' | 'Active';
  nextFireDate: number | null; lastFireDate: number | null; activeUntil: number | null;
  /** Hosts this window put into maintenance at its last firing: enabled again at its end. */
  entered: string[];
  /** Firings missed while no controller ran (the window was over by the time one started). */
  missed: number; lastMissedDate: number | null;
  createDate: number; lastOpDate: number;
}
export const MAINTENANCE_WINDOW_FIELDS: FieldCatalogue = {
  uuid: s, name: s, cron: s, durationMinutes: n, timeZone: s, state: enumOf(['Waiting', 'Active']),
  nextFireDate: d, lastFireDate: d, activeUntil: d, missed: n, lastMissedDate: d, createDate: d, lastOpDate: d,
};

/**
 * A resource as the API sees it. `nested` maps an expanded-query prefix (`zone`, `cluster`,
 * `vmInstance`) to the resource it joins; `lists` are list-valued fields of the row itself
 * (`vmNics`).
 */
export interface ResourceSpec {
  kind: Kind;
  path: string;
  schemaClass: string;
  fields: FieldCatalogue;
  inventoryFields: readonly string[];
  nested?: Record<string, { kind: Kind; fields: FieldCatalogue; lists?: Record<string, FieldCatalogue> }>;
  lists?: Record<string, FieldCatalogue>;
  /** Inventory fields read from another row field (a host's `username` is its SSH user). */
  aliases?: Record<string, string>;
}

export type Kind = 'zone' | 'cluster' | 'host' | 'vm' | 'tag' | 'config' | 'account' | 'session' | 'job' | 'bootstrapToken'
  /** In-flight VM migrations (controller/flows): the recorded target of each, until it settles. */
  | 'migration'
  /** Durable flows (controller/flows/runner.ts): steps, context and per-item progress. */
  | 'flow'
  /** Maintenance windows (controller/flows/maintenance-windows.ts). */
  | 'maintenanceWindow'
  /** The bounded domain event log (controller/events.ts): oldest rows dropped past the cap. */
  | 'event'
  /** The controller CA (controller/pki/ca.ts): one row, shared by controllers on one database. */
  | 'pki'
  /** Controllers sharing the database and their heartbeats (controller/cluster/cluster.ts). */
  | 'controller'
  /** Which controller holds each host, and its fencing token (controller/cluster/cluster.ts). */
  | 'hostLease';

export const RESOURCES = {
  zone: {
    kind: 'zone', path: 'zones', schemaClass: 'org.zstack.header.zone.ZoneInventory', fields: ZONE_FIELDS,
    inventoryFields: Object.keys(ZONE_FIELDS),
  },
  cluster: {
    kind: 'cluster', path: 'clusters', schemaClass: 'org.zstack.header.cluster.ClusterInventory', fields: CLUSTER_FIELDS,
    inventoryFields: Object.keys(CLUSTER_FIELDS),
  },
  host: {
    kind: 'host', path: 'hosts', schemaClass: 'org.zstack.kvm.KVMHostInventory', fields: HOST_FIELDS,
    // username: not secret (ZStack returns it), absent for self-registered hosts.
    inventoryFields: [...Object.keys(HOST_FIELDS), 'username'], aliases: { username: 'sshUser' },
    nested: {
      zone: { kind: 'zone', fields: ZONE_FIELDS },
      cluster: { kind: 'cluster', fields: CLUSTER_FIELDS },
      vmInstance: { kind: 'vm', fields: VM_FIELDS, lists: { vmNics: VM_NIC_FIELDS } },
    },
  },
  vm: {
    kind: 'vm', path: 'vm-instances', schemaClass: 'org.zstack.header.vm.VmInstanceInventory', fields: VM_FIELDS,
    inventoryFields: [...Object.keys(VM_FIELDS), 'vmNics'], lists: { vmNics: VM_NIC_FIELDS },
  },
  systemTag: {
    kind: 'tag', path: 'system-tags', schemaClass: 'org.zstack.header.tag.SystemTagInventory', fields: TAG_FIELDS,
    inventoryFields: Object.keys(TAG_FIELDS),
  },
  userTag: {
    kind: 'tag', path: 'user-tags', schemaClass: 'org.zstack.header.tag.UserTagInventory', fields: TAG_FIELDS,
    inventoryFields: Object.keys(TAG_FIELDS),
  },
  maintenanceWindow: {
    kind: 'maintenanceWindow', path: 'maintenance-windows', schemaClass: 'org.hostkeeper.header.MaintenanceWindowInventory',
    fields: MAINTENANCE_WINDOW_FIELDS, inventoryFields: [...Object.keys(MAINTENANCE_WINDOW_FIELDS), 'hostUuids'],
  },
  config: {
    kind: 'config', path: 'global-configurations', schemaClass: 'org.zstack.core.config.GlobalConfigInventory',
    fields: CONFIG_FIELDS, inventoryFields: Object.keys(CONFIG_FIELDS),
  },
  /** Hostkeeper's own: ZStack has no event log resource, so the class name is ours. */
  event: {
    kind: 'event', path: 'events', schemaClass: 'org.hostkeeper.event.EventInventory', fields: EVENT_FIELDS,
    inventoryFields: Object.keys(EVENT_FIELDS),
  },
  /** Hostkeeper's own (QueryBootstrapToken): ZStack has no bootstrap tokens, so the class name is ours. */
  bootstrapToken: {
    kind: 'bootstrapToken', path: 'hosts/bootstrap-tokens', schemaClass: 'org.hostkeeper.host.BootstrapTokenInventory',
    fields: BOOTSTRAP_TOKEN_FIELDS, inventoryFields: Object.keys(BOOTSTRAP_TOKEN_FIELDS),
  },
} as const satisfies Record<string, ResourceSpec>;

export type ResourceName = keyof typeof RESOURCES;

export const SESSION_SCHEMA_CLASS = 'org.zstack.header.identity.SessionInventory';
export const RESOURCE_TYPE_KIND: Record<ResourceType, Kind> = { HostVO: 'host', ClusterVO: 'cluster', ZoneVO: 'zone' };
