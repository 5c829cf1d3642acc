/**
 * Rows for the store contract: 2 zones, 3 clusters, 40 hosts with two VMs each (one with
 * two NICs). Shaped as protocol/resources.ts says; names, nulls and numbers vary with i so
 * that every operator has matches and misses.
 */
import type { ClusterRow, HostRow, VmRow, ZoneRow } from '../../protocol/resources.ts';
import type { Repository } from '../../controller/store/repository.ts';

export const T0 = Date.UTC(2024, 0, 1, 0, 0, 0);
export const hex = (n: number, p: string) => (p + n.toString(16)).padStart(32, '0').slice(-32);
export const Z = [hex(1, 'a'), hex(2, 'a')];
export const C = [hex(1, 'c'), hex(2, 'c'), hex(3, 'c')];

export function host(i: number): HostRow {
  return {
    uuid: hex(i, 'b'), name: i % 3 === 0 ? `kvm-${i}` : `node_${i}`, description: i % 4 === 0 ? null : `d${i}`,
    zoneUuid: Z[i % 2]!, clusterUuid: C[i % 3]!, managementIp: `10.0.0.${i}`, hypervisorType: 'KVM',
    state: (['Enabled', 'Disabled', 'PreMaintenance', 'Maintenance'] as const)[i % 4]!,
    status: (['Connected', 'Disconnected', 'Connecting'] as const)[i % 3]!,
    createDate: T0 + i * 1000, lastOpDate: T0 + i * 1000, cpuNum: i % 8, cpuSockets: 1, totalCpuCapacity: 0,
    availableCpuCapacity: 0, totalMemoryCapacity: i * 1024, availableMemoryCapacity: 0, totalPhysicalMemory: 0,
    availablePhysicalMemory: 0, sshPort: 22, statusReason: '',
  };
}

export const ZONES: ZoneRow[] = Z.map((u, i) => ({ uuid: u, name: `zone-${i}`, description: null, state: 'Enabled', createDate: T0, lastOpDate: T0 }));
export const CLUSTERS: ClusterRow[] = C.map((u, i) => ({
  uuid: u, name: `cluster-${i}`, description: null, zoneUuid: Z[0]!, hypervisorType: 'KVM', state: 'Enabled', createDate: T0, lastOpDate: T0,
}));
export const HOSTS = Array.from({ length: 40 }, (_, i) => host(i + 1));
export const VMS: VmRow[] = HOSTS.flatMap((h, i) =>
  [0, 1].map((k) => ({
    uuid: hex(i * 2 + k + 1, 'e'), name: `vm-${i}-${k}`, hostUuid: h.uuid, lastHostUuid: null, clusterUuid: h.clusterUuid,
    zoneUuid: h.zoneUuid, state: k === 0 ? 'Running' : 'Stopped', memorySize: 1024 * (k + 1), cpuNum: 1,
    vmNics: [{ ip: `172.16.${i}.${k + 1}`, mac: `fa:00:00:00:${i}:${k}` }, ...(k === 1 ? [{ ip: `172.17.${i}.1`, mac: 'x' }] : [])],
    createDate: T0, lastOpDate: T0,
  })),
);

export async function seedFixtures(store: Repository): Promise<void> {
  await store.transaction(async (tx) => {
    for (const z of ZONES) await tx.insert('zone', z);
    for (const c of CLUSTERS) await tx.insert('cluster', c);
    for (const h of HOSTS) await tx.insert('host', h);
    for (const v of VMS) await tx.insert('vm', v);
  });
}
