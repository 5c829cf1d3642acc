/**
 * Zones, clusters and hosts: creation, update and deletion as store transactions. Every
 * function takes the transaction it runs in, so a job records its outcome atomically with
 * the change (services/jobs.ts).
 */
import { HkError, invalidArgument, notFound } from '../../protocol/errors.ts';
import type { ClusterRow, HostRow, TagRow, VmRow, ZoneRow } from '../../protocol/resources.ts';
import type { ResourceType } from '../../protocol/tags.ts';
import { isManagementAddress, isUuid, newUuid } from '../../protocol/values.ts';
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
  const zone = await tx.insert<ZoneRow>('zone', {
    uuid, name: p.name, description: p.description ?? null, state: 'Enabled', createDate: now, lastOpDate: now,
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
    hypervisorType: p.hypervisorType, state: 'Enabled', createDate: now, lastOpDate: now,
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
}

export const EMPTY_CAPACITY = {
  cpuNum: 0, cpuSockets: 0, totalCpuCapacity: 0, availableCpuCapacity: 0, totalMemoryCapacity: 0,
  availableMemoryCapacity: 0, totalPhysicalMemory: 0, availablePhysicalMemory: 0,
};

/** Checks an add-host request against the inventory (ZStack's HostApiInterceptor rules). */
export async function checkNewHost(tx: Tx, p: AddHostParams): Promise<ClusterRow> {
  if (!isManagementAddress(p.managementIp)) {
    throw invalidArgument(`params.managementIp[${p.managementIp}] is neither an IPv4 address nor a valid hostname`);
  }
  const cluster = await tx.get<ClusterRow>('cluster', p.clusterUuid);
  if (!cluster) throw invalidArgument(`params.clusterUuid: cluster[uuid:${p.clusterUuid}] does not exist`);
  const dup = await tx.find<HostRow>('host', { managementIp: p.managementIp });
  if (dup.length > 0) {
    throw invalidArgument(`params.managementIp[${p.managementIp}] is already used by host[uuid:${dup[0]!.uuid}, name:${dup[0]!.name}]`);
  }
  return cluster;
}

export async function insertHost(
  tx: Tx, now: number, p: AddHostParams, status: HostRow['status'], statusReason: string, tags: TagsParam = {},
): Promise<HostRow> {
  const cluster = await checkNewHost(tx, p);
  const uuid = await pickUuid(tx, p.resourceUuid);
  const host = await tx.insert<HostRow>('host', {
    uuid, name: p.name, description: p.description ?? null, zoneUuid: cluster.zoneUuid,
    clusterUuid: cluster.uuid, managementIp: p.managementIp, hypervisorType: 'KVM', state: 'Enabled', status,
    createDate: now, lastOpDate: now, ...EMPTY_CAPACITY, sshPort: p.sshPort ?? 22, statusReason,
  });
  await attachTags(tx, 'HostVO', uuid, tags, now);
  return host;
}

export async function updateHost(
  tx: Tx, now: number, uuid: string, p: { name?: string; description?: string; managementIp?: string },
): Promise<HostRow> {
  const host = await tx.get<HostRow>('host', uuid);
  if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
  if (p.managementIp !== undefined && p.managementIp !== host.managementIp) {
    if (!isManagementAddress(p.managementIp)) {
      throw invalidArgument(`updateHost.managementIp[${p.managementIp}] is neither an IPv4 address nor a valid hostname`);
    }
    const dup = await tx.find<HostRow>('host', { managementIp: p.managementIp });
    if (dup.length > 0) throw invalidArgument(`updateHost.managementIp[${p.managementIp}] is already used by host[uuid:${dup[0]!.uuid}]`);
  }
  const patch: Partial<HostRow> = { lastOpDate: now };
  if (p.name !== undefined) patch.name = p.name;
  if (p.description !== undefined) patch.description = p.description;
  if (p.managementIp !== undefined) patch.managementIp = p.managementIp;
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
