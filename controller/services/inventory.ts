/**
 * Zones, clusters and hosts: creation, update and deletion as store transactions. Every
 * function takes the transaction it runs in, so a job records its outcome atomically with
 * the change (services/jobs.ts).
 */
import { HkError, invalidArgument, notFound } from '../../protocol/errors.ts';
import type { ClusterRow, HostRow, TagRow, VmRow, ZoneRow } from '../../protocol/resources.ts';
import type { ResourceType } from '../../protocol/tags.ts';
import { AGENT_PORT } from '../../protocol/agent.ts';
import { type ControllerEndpoint, isControllerEndpoint, isUuid, newUuid, normalizeManagementAddress } from '../../protocol/values.ts';
import type { Tx } from '../store/repository.ts';
import { checkSystemTag, createTag, removeTagsOf } from './tags.ts';

export type DeleteMode = 'Permissive' | 'Enforcing';

export interface TagsParam {
  systemTags?: string[];
  userTags?: string[];
}

export const hostRef = (h: Pick<HostRow, 'uuid' | 'name' | 'state' | 'status'>) =>
  `host[uuid:${h.uuid}, name:${h.name}, state:${h.state}, status:${h.status}]`;

async function pickUuid(tx: Tx, requested: string | undefined): Promise<string> {
  if (requested === undefined) return newUuid();
  if (!isUuid(requested)) throw invalidArgument(`params.resourceUuid[${requested}] must be 32 lowercase hex digits`);
  // One uuid space for every resource, as in ZStack: tags and joins look up by uuid alone.
  for (const k of ['zone', 'cluster', 'host', 'vm', 'tag'] as const) {
    if (await tx.get(k, requested)) throw invalidArgument(`params.resourceUuid[${requested}] is already used by a ${k}`);
  }
  return requested;
}

async function attachTags(tx: Tx, type: ResourceType, uuid: string, tags: TagsParam, now: number): Promise<void> {
  for (const [i, t] of (tags.systemTags ?? []).entries()) checkSystemTag(t, type, `systemTags[${i}]`);
  for (const [i, t] of (tags.systemTags ?? []).entries()) {
    await createTag(tx, { resourceType: type, resourceUuid: uuid, tag: t, type: 'System' }, now, false, `systemTags[${i}]`);
  }
  for (const [i, t] of (tags.userTags ?? []).entries()) {
    await createTag(tx, { resourceType: type, resourceUuid: uuid, tag: t, type: 'User' }, now, false, `userTags[${i}]`);
  }
}

export async function createZone(
  tx: Tx, now: number, p: { name: string; description?: string; resourceUuid?: string }, tags: TagsParam = {},
): Promise<ZoneRow> {
  const uuid = await pickUuid(tx, p.resourceUuid);
  // As ZStack: type 'zstack'; the first zone is the default one.
  const isDefault = (await tx.count('zone', {})) === 0;
  const zone = await tx.insert<ZoneRow>('zone', {
    uuid, name: p.name, description: p.description ?? null, state: 'Enabled', type: 'zstack', isDefault, createDate: now, lastOpDate: now,
  });
  await attachTags(tx, 'ZoneVO', uuid, tags, now);
  return zone;
}

export async function createCluster(
  tx: Tx, now: number,
  p: { zoneUuid: string; name: string; hypervisorType: 'KVM'; description?: string; resourceUuid?: string },
  tags: TagsParam = {},
): Promise<ClusterRow> {
  if (!(await tx.get('zone', p.zoneUuid))) throw invalidArgument(`params.zoneUuid: zone[uuid:${p.zoneUuid}] does not exist`);
  const uuid = await pickUuid(tx, p.resourceUuid);
  const cluster = await tx.insert<ClusterRow>('cluster', {
    uuid, name: p.name, description: p.description ?? null, zoneUuid: p.zoneUuid,
    hypervisorType: p.hypervisorType, state: 'Enabled', type: 'zstack', architecture: null, createDate: now, lastOpDate: now,
  });
  await attachTags(tx, 'ClusterVO', uuid, tags, now);
  return cluster;
}

export interface AddHostParams {
  name: string;
  managementIp: string;
  clusterUuid: string;
  sshPort?: number;
  description?: string;
  resourceUuid?: string;
  /** Where the host's agent listens (default AGENT_PORT): checked against the controller's own endpoint. */
  agentPort?: number;
}

export const EMPTY_CAPACITY = {
  cpuNum: 0, cpuSockets: 0, totalCpuCapacity: 0, availableCpuCapacity: 0, totalMemoryCapacity: 0,
  availableMemoryCapacity: 0, totalPhysicalMemory: 0, availablePhysicalMemory: 0,
};

/**
 * The management address in the one spelling the inventory stores and compares (see
 * normalizeManagementAddress: `0x7f.0.0.12` or `localhost` are refused, names lowercased), and
 * not the controller's own API (`self`, when the caller knows it), which the controller would
 * otherwise call as if it were the host's agent. Throws SYS.1007 naming `field`.
 */
export function checkManagementAddress(field: string, raw: string, agentPort: number, self?: ControllerEndpoint): string {
  const r = normalizeManagementAddress(raw);
  if (r.problem !== undefined) throw invalidArgument(`${field}[${raw}] ${r.problem}`);
  if (self && isControllerEndpoint(r.address, agentPort, self)) {
    throw invalidArgument(`${field}[${raw}] with agent port ${agentPort} is this controller's own API, not a host's agent`);
  }
  return r.address;
}

async function checkUnusedAddress(tx: Tx, field: string, raw: string, address: string): Promise<void> {
  const dup = await tx.find<HostRow>('host', { managementIp: address });
  if (dup.length > 0) {
    const as = address === raw ? '' : ` (as ${address})`;
    throw invalidArgument(`${field}[${raw}]${as} is already used by host[uuid:${dup[0]!.uuid}, name:${dup[0]!.name}]`);
  }
}

/**
 * Checks an add-host request against the inventory (ZStack's HostApiInterceptor rules);
 * returns the cluster and the management address to store.
 */
export async function checkNewHost(tx: Tx, p: AddHostParams, self?: ControllerEndpoint): Promise<{ cluster: ClusterRow; managementIp: string }> {
  const managementIp = checkManagementAddress('params.managementIp', p.managementIp, p.agentPort ?? AGENT_PORT, self);
  const cluster = await tx.get<ClusterRow>('cluster', p.clusterUuid);
  if (!cluster) throw invalidArgument(`params.clusterUuid: cluster[uuid:${p.clusterUuid}] does not exist`);
  await checkUnusedAddress(tx, 'params.managementIp', p.managementIp, managementIp);
  return { cluster, managementIp };
}

/** `self`: the controller's own API endpoint, so that a host cannot be the controller itself. */
export async function insertHost(
  tx: Tx, now: number, p: AddHostParams, status: HostRow['status'], statusReason: string, tags: TagsParam = {},
  self?: ControllerEndpoint,
): Promise<HostRow> {
  const { cluster, managementIp } = await checkNewHost(tx, p, self);
  const uuid = await pickUuid(tx, p.resourceUuid);
  const host = await tx.insert<HostRow>('host', {
    uuid, name: p.name, description: p.description ?? null, zoneUuid: cluster.zoneUuid,
    clusterUuid: cluster.uuid, managementIp, hypervisorType: 'KVM', state: 'Enabled', status,
    createDate: now, lastOpDate: now, ...EMPTY_CAPACITY, sshPort: p.sshPort ?? 22, statusReason,
  });
  await attachTags(tx, 'HostVO', uuid, tags, now);
  return host;
}

/** `self`: the controller's own API endpoint, so that a host cannot be moved onto the controller. */
export async function updateHost(
  tx: Tx, now: number, uuid: string, p: { name?: string; description?: string; managementIp?: string }, self?: ControllerEndpoint,
): Promise<HostRow> {
  const host = await tx.get<HostRow>('host', uuid);
  if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
  let managementIp: string | undefined;
  if (p.managementIp !== undefined) {
    managementIp = checkManagementAddress('updateHost.managementIp', p.managementIp, host.agentPort ?? AGENT_PORT, self);
    if (managementIp !== host.managementIp) await checkUnusedAddress(tx, 'updateHost.managementIp', p.managementIp, managementIp);
  }
  const patch: Partial<HostRow> = { lastOpDate: now };
  if (p.name !== undefined) patch.name = p.name;
  if (p.description !== undefined) patch.description = p.description;
  if (managementIp !== undefined) patch.managementIp = managementIp;
  return tx.update<HostRow>('host', uuid, patch);
}

const ACTIVE_VM_STATES = new Set<VmRow['state']>(['Starting', 'Running', 'Stopping', 'Migrating']);

/**
 * Deletes a host. Permissive refuses while VMs are active on it; Enforcing marks them
 * Stopped (their host is gone) and goes on.
 */
export async function deleteHost(tx: Tx, now: number, uuid: string, mode: DeleteMode): Promise<HostRow> {
  const host = await tx.get<HostRow>('host', uuid);
  if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
  const vms = await tx.find<VmRow>('vm', { hostUuid: uuid });
  const active = vms.filter((v) => ACTIVE_VM_STATES.has(v.state));
  if (mode === 'Permissive' && active.length > 0) {
    throw new HkError('SYS.1004', `${hostRef(host)} has ${active.length} active VMs; migrate or stop them first, or delete with deleteMode=Enforcing`);
  }
  for (const vm of vms) {
    await tx.update<VmRow>('vm', vm.uuid, { hostUuid: null, lastHostUuid: uuid, state: ACTIVE_VM_STATES.has(vm.state) ? 'Stopped' : vm.state, lastOpDate: now });
  }
  await removeTagsOf(tx, uuid);
  await tx.remove('host', uuid);
  return host;
}

export async function deleteCluster(tx: Tx, now: number, uuid: string, mode: DeleteMode): Promise<ClusterRow> {
  const cluster = await tx.get<ClusterRow>('cluster', uuid);
  if (!cluster) throw notFound(`cluster[uuid:${uuid}] does not exist`);
  const hosts = await tx.find<HostRow>('host', { clusterUuid: uuid });
  if (mode === 'Permissive' && hosts.length > 0) {
    throw new HkError('SYS.1004', `cluster[uuid:${uuid}, name:${cluster.name}] still has ${hosts.length} hosts; delete them first, or delete with deleteMode=Enforcing`);
  }
  for (const h of hosts) await deleteHost(tx, now, h.uuid, 'Enforcing');
  for (const vm of await tx.find<VmRow>('vm', { clusterUuid: uuid })) await tx.remove('vm', vm.uuid);
  await removeTagsOf(tx, uuid);
  await tx.remove('cluster', uuid);
  return cluster;
}

export async function deleteZone(tx: Tx, now: number, uuid: string, mode: DeleteMode): Promise<ZoneRow> {
  const zone = await tx.get<ZoneRow>('zone', uuid);
  if (!zone) throw notFound(`zone[uuid:${uuid}] does not exist`);
  const clusters = await tx.find<ClusterRow>('cluster', { zoneUuid: uuid });
  if (mode === 'Permissive') {
    const hosts = await tx.count('host', { zoneUuid: uuid });
    if (hosts > 0) {
      throw new HkError('SYS.1004', `zone[uuid:${uuid}, name:${zone.name}] still has ${hosts} hosts; delete them first, or delete with deleteMode=Enforcing`);
    }
  }
  for (const c of clusters) await deleteCluster(tx, now, c.uuid, 'Enforcing');
  for (const vm of await tx.find<VmRow>('vm', { zoneUuid: uuid })) await tx.remove('vm', vm.uuid);
  await removeTagsOf(tx, uuid);
  await tx.remove('zone', uuid);
  return zone;
}

export type { TagRow };
