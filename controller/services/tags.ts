/**
 * User and system tags. System tags are checked against protocol/tags.ts: the format must be
 * known, fit the resource type, and not be inherent (host metadata is the controller's to
 * write); single-valued formats allow one tag per resource.
 */
import { HkError, invalidArgument, notFound } from '../../protocol/errors.ts';
import type { TagRow } from '../../protocol/resources.ts';
import { RESOURCE_TYPE_KIND } from '../../protocol/resources.ts';
import type { ResourceType } from '../../protocol/tags.ts';
import { MAX_TAG_LENGTH, matchSystemTag, RESOURCE_TYPES, reservedMemoryOf } from '../../protocol/tags.ts';
import { isUuid, newUuid, parseSize } from '../../protocol/values.ts';
import type { Tx } from '../store/repository.ts';
import type { GlobalConfigs } from './configs.ts';

export interface NewTag {
  resourceType: ResourceType;
  resourceUuid: string;
  tag: string;
  type: 'System' | 'User';
}

function checkTagText(tag: string, field: string): void {
  if (tag.length === 0) throw invalidArgument(`${field} must not be empty`);
  if (tag.length > MAX_TAG_LENGTH) throw invalidArgument(`${field} is longer than ${MAX_TAG_LENGTH} characters`);
}

/** Validates an admin-written system tag for a resource type; returns nothing or throws. */
export function checkSystemTag(tag: string, resourceType: ResourceType, field = 'tag'): void {
  checkTagText(tag, field);
  const fmt = matchSystemTag(tag);
  if (!fmt) {
    throw invalidArgument(`${field}[${tag}] is not a known system tag; admin-writable ones are reservedMemory::{size} on HostVO and host::reservedMemory::{size} on ZoneVO and ClusterVO`);
  }
  if (fmt.inherent) throw invalidArgument(`${field}[${tag}] (${fmt.format}) is written by the controller only`);
  if (!fmt.resourceTypes.includes(resourceType)) {
    throw invalidArgument(`${field}[${tag}] (${fmt.format}) applies to ${fmt.resourceTypes.join(', ')}, not ${resourceType}`);
  }
  const value = fmt.pattern.exec(tag)?.[1];
  const problem = value !== undefined ? fmt.check?.(value) : undefined;
  if (problem) throw invalidArgument(`${field}[${tag}]: ${problem}`);
}

/**
 * Who hears that a reserved-memory tag changed (the allocator's cache, services/capacity.ts),
 * after the change commits, wherever it came from: the tag API, tags given with a create, a
 * deleted resource taking its tags along.
 */
const reservedMemoryListeners = new Set<() => void>();
export function onReservedMemoryTagChange(fn: () => void): () => void {
  reservedMemoryListeners.add(fn);
  return () => reservedMemoryListeners.delete(fn);
}
function touched(tx: Tx, tag: string): void {
  if (reservedMemoryOf(tag, 'host') === undefined && reservedMemoryOf(tag, 'parent') === undefined) return;
  tx.onCommit(() => {
    for (const fn of reservedMemoryListeners) fn();
  });
}

export async function createTag(tx: Tx, t: NewTag, now: number, inherent = false, field = 'tag'): Promise<TagRow> {
  if (!RESOURCE_TYPES.includes(t.resourceType)) {
    throw invalidArgument(`resourceType[${t.resourceType}] must be one of ${RESOURCE_TYPES.join(', ')}`);
  }
  if (!isUuid(t.resourceUuid)) throw invalidArgument(`resourceUuid[${t.resourceUuid}] is not a 32-hex-digit uuid`);
  if (!(await tx.get(RESOURCE_TYPE_KIND[t.resourceType], t.resourceUuid))) {
    throw invalidArgument(`resourceUuid: ${t.resourceType}[uuid:${t.resourceUuid}] does not exist`);
  }
  if (t.type === 'System') {
    if (!inherent) checkSystemTag(t.tag, t.resourceType, field);
    const fmt = matchSystemTag(t.tag)!;
    if (fmt.single) {
      const existing = (await tx.find<TagRow>('tag', { resourceUuid: t.resourceUuid, type: 'System' }))
        .find((r) => fmt.pattern.test(r.tag));
      if (existing) {
        throw invalidArgument(`${field}: ${t.resourceType}[uuid:${t.resourceUuid}] already has tag[${existing.tag}] (uuid:${existing.uuid}); update or delete it first`);
      }
    }
  } else {
    checkTagText(t.tag, field);
    const dup = (await tx.find<TagRow>('tag', { resourceUuid: t.resourceUuid, type: 'User' })).find((r) => r.tag === t.tag);
    if (dup) throw invalidArgument(`${field}: ${t.resourceType}[uuid:${t.resourceUuid}] already has user tag[${t.tag}]`);
  }
  const row: TagRow = {
    uuid: newUuid(), resourceType: t.resourceType, resourceUuid: t.resourceUuid, tag: t.tag, type: t.type,
    inherent, createDate: now, lastOpDate: now,
  };
  touched(tx, t.tag);
  return tx.insert('tag', row);
}

export async function deleteTag(tx: Tx, uuid: string): Promise<void> {
  const row = await tx.get<TagRow>('tag', uuid);
  if (!row) throw notFound(`tag[uuid:${uuid}] does not exist`);
  if (row.inherent) {
    throw new HkError('SYS.1006', `tag[uuid:${uuid}, tag:${row.tag}] is inherent: the controller writes it on every host connect and it cannot be deleted`);
  }
  touched(tx, row.tag);
  await tx.remove('tag', uuid);
}

export async function updateSystemTag(tx: Tx, uuid: string, tag: string, now: number): Promise<TagRow> {
  const row = await tx.get<TagRow>('tag', uuid);
  if (!row || row.type !== 'System') throw notFound(`system tag[uuid:${uuid}] does not exist`);
  if (row.inherent) throw new HkError('SYS.1006', `tag[uuid:${uuid}, tag:${row.tag}] is inherent and cannot be changed`);
  checkSystemTag(tag, row.resourceType);
  const oldFmt = matchSystemTag(row.tag);
  if (oldFmt !== matchSystemTag(tag)) {
    throw invalidArgument(`tag[${tag}] must keep the format of the tag it replaces (${oldFmt?.format ?? row.tag})`);
  }
  touched(tx, tag);
  return tx.update<TagRow>('tag', uuid, { tag, lastOpDate: now });
}

/** Removes every tag of a resource (the resource is being deleted). */
export async function removeTagsOf(tx: Tx, resourceUuid: string): Promise<void> {
  for (const t of await tx.find<TagRow>('tag', { resourceUuid })) {
    touched(tx, t.tag);
    await tx.remove('tag', t.uuid);
  }
}

/**
 * Replaces a host's inherent tags with `tags` (those whose format is inherent): missing ones
 * are created, stale ones removed. Used by the connect flow for host metadata.
 */
export async function syncInherentTags(tx: Tx, hostUuid: string, tags: string[], now: number): Promise<void> {
  const current = (await tx.find<TagRow>('tag', { resourceUuid: hostUuid, type: 'System' })).filter((t) => t.inherent);
  const want = new Set(tags);
  for (const t of current) if (!want.has(t.tag)) await tx.remove('tag', t.uuid);
  const have = new Set(current.map((t) => t.tag));
  for (const tag of tags) {
    if (have.has(tag)) continue;
    const fmt = matchSystemTag(tag);
    if (!fmt?.inherent) throw new Error(`${tag} is not an inherent host tag`);
    await createTag(tx, { resourceType: 'HostVO', resourceUuid: hostUuid, tag, type: 'System' }, now, true);
  }
}

export type ReservedSource = 'host' | 'cluster' | 'zone' | 'global';

interface TagReader {
  find<T extends { uuid: string }>(kind: 'tag', where: { resourceUuid: string; type: 'System' }): Promise<T[]>;
}

/**
 * A host's reserved memory: host tag `reservedMemory::{size}` > cluster tag
 * `host::reservedMemory::{size}` > zone tag > global `kvm/reservedMemory`; each tag level
 * counts only while its `hostAllocator/reservedCapacity.*Level` switch is true.
 */
export async function resolveReservedMemory(
  reader: TagReader,
  configs: GlobalConfigs,
  host: { uuid: string; clusterUuid: string; zoneUuid: string },
): Promise<{ bytes: number; source: ReservedSource }> {
  const levels: [ReservedSource, string, 'host' | 'parent', string][] = [
    ['host', host.uuid, 'host', 'reservedCapacity.hostLevel'],
    ['cluster', host.clusterUuid, 'parent', 'reservedCapacity.clusterLevel'],
    ['zone', host.zoneUuid, 'parent', 'reservedCapacity.zoneLevel'],
  ];
  for (const [source, uuid, level, sw] of levels) {
    if (!configs.getBool('hostAllocator', sw)) continue;
    for (const t of await reader.find<TagRow>('tag', { resourceUuid: uuid, type: 'System' })) {
      const bytes = reservedMemoryOf(t.tag, level);
      if (bytes !== undefined) return { bytes, source };
    }
  }
  return { bytes: parseSize(configs.get('kvm', 'reservedMemory'))!, source: 'global' };
}
