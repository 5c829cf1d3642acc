/**
 * What a host's facts change in the store, at every connect and on every facts push: the
 * metadata system tags (contract: "Host metadata system tags"; stale ones removed) and the
 * KVMHostInventory fields ZStack's SDK reads (osDistribution, osRelease, osVersion,
 * architecture). A cluster takes the architecture of the first host that reports one.
 */
import type { HostFacts } from '../../protocol/agent.ts';
import type { ClusterRow, HostRow } from '../../protocol/resources.ts';
import { metadataTag } from '../../protocol/tags.ts';
import type { Tx } from '../store/repository.ts';
import { syncInherentTags } from './tags.ts';

/** Host metadata tags from facts; a tag whose value is empty is left out. */
export function metadataTags(f: HostFacts): string[] {
  const tags = [metadataTag.osDistribution(f.osDistribution), metadataTag.osRelease(f.osRelease), metadataTag.osVersion(f.osVersion)];
  if (f.qemuImgVersion) tags.push(metadataTag.qemuImgVersion(f.qemuImgVersion));
  if (f.libvirtVersion) tags.push(metadataTag.libvirtVersion(f.libvirtVersion));
  if (f.hvm) tags.push(metadataTag.hvm(f.hvm));
  if (f.liveSnapshot) tags.push(metadataTag.liveSnapshot());
  return tags.filter((t) => !/::$/.test(t));
}

export async function applyHostFacts(tx: Tx, hostUuid: string, f: HostFacts, now: number): Promise<void> {
  await syncInherentTags(tx, hostUuid, metadataTags(f), now);
  const host = await tx.get<HostRow>('host', hostUuid);
  if (!host) return;
  const patch: Partial<HostRow> = {
    osDistribution: f.osDistribution || null, osRelease: f.osRelease || null, osVersion: f.osVersion || null,
    architecture: f.architecture ?? host.architecture ?? null,
  };
  if ((Object.keys(patch) as (keyof HostRow)[]).some((k) => host[k] !== patch[k])) await tx.update<HostRow>('host', hostUuid, patch);
  if (patch.architecture) {
    const cluster = await tx.get<ClusterRow>('cluster', host.clusterUuid);
    if (cluster && !cluster.architecture) await tx.update<ClusterRow>('cluster', cluster.uuid, { architecture: patch.architecture });
  }
}
