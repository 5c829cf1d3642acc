/**
 * Builds a large embedded store fast, for the benchmark: the store is opened directly (no
 * HTTP, no jobs) and rows go in through big transactions, shaped exactly as
 * protocol/resources.ts says. `snapshot()` then writes the lowdb snapshot, so a controller
 * started on the directory loads a snapshot and an empty journal, as after a clean stop.
 *
 * The mix is deterministic for a given seed (states, statuses, NIC counts); uuids are
 * random, as the controller makes them.
 */
import { EmbeddedStore } from '../controller/store/embedded-store.ts';
import type { ClusterRow, HostRow, VmRow, ZoneRow } from '../protocol/resources.ts';
import type { HostState, HostStatus } from '../protocol/states.ts';
import { newUuid } from '../protocol/values.ts';

export interface SeedOptions {
  hosts: number;
  vmsPerHost: number;
  clusters: number;
  seed: number;
  /** Hosts per transaction: bounds one journal line (~0.5 KB per VM). */
  hostsPerTx?: number;
}

export interface Seeded {
  zoneUuid: string;
  clusterUuids: string[];
  /** uuid, admin state and status of every host, in insertion order. */
  hosts: { uuid: string; state: HostState; status: HostStatus }[];
  /** NIC IPs of VMs placed on a host (each finds exactly one host). */
  placedIps: string[];
  /** The host of each of `placedIps`, same order. */
  placedIpHosts: string[];
  vms: number;
  nics: number;
  /** How many hosts are Enabled and Connected. */
  enabledConnected: number;
  ms: number;
}

/** mulberry32: a small seeded PRNG, so two runs seed the same mix. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** i-th address of a /8 as a.b.c with every octet in 1..250 (no .0 or .255). */
function octets(i: number): string {
  return `${Math.floor(i / 62_500) % 250 + 1}.${Math.floor(i / 250) % 250 + 1}.${(i % 250) + 1}`;
}

function mac(i: number): string {
  const h = i.toString(16).padStart(6, '0');
  return `fa:16:3e:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}`;
}

export async function seedStore(dir: string, o: SeedOptions): Promise<Seeded> {
  const t0 = performance.now();
  const rnd = prng(o.seed);
  // No fdatasync while seeding: snapshot() syncs the snapshot, which is what the controller reads.
  const store = await EmbeddedStore.open(dir, { sync: false });
  const base = Date.UTC(2024, 0, 1);
  const zone: ZoneRow = {
    uuid: newUuid(), name: 'bench-zone', description: null, state: 'Enabled', createDate: base, lastOpDate: base,
  };
  const clusters: ClusterRow[] = Array.from({ length: o.clusters }, (_, i) => ({
    uuid: newUuid(), name: `bench-cluster-${i + 1}`, description: null, zoneUuid: zone.uuid, hypervisorType: 'KVM',
    state: 'Enabled', createDate: base, lastOpDate: base,
  }));
  await store.transaction(async (tx) => {
    await tx.insert('zone', zone);
    for (const c of clusters) await tx.insert('cluster', c);
  });

  const out: Seeded = {
    zoneUuid: zone.uuid, clusterUuids: clusters.map((c) => c.uuid), hosts: [], placedIps: [], placedIpHosts: [], vms: 0, nics: 0,
    enabledConnected: 0, ms: 0,
  };
  const perTx = o.hostsPerTx ?? 500;
  let nic = 0;
  for (let first = 0; first < o.hosts; first += perTx) {
    const last = Math.min(o.hosts, first + perTx);
    await store.transaction(async (tx) => {
      for (let i = first; i < last; i++) {
        const cluster = clusters[i % clusters.length]!;
        // ~70% Enabled x ~75% Connected: about half the hosts are Enabled and Connected.
        const r1 = rnd();
        const state: HostState = r1 < 0.7 ? 'Enabled' : r1 < 0.9 ? 'Disabled' : r1 < 0.95 ? 'Maintenance' : 'PreMaintenance';
        const r2 = rnd();
        const status: HostStatus = r2 < 0.75 ? 'Connected' : r2 < 0.95 ? 'Disconnected' : 'Connecting';
        if (state === 'Enabled' && status === 'Connected') out.enabledConnected++;
        const cpuNum = rnd() < 0.5 ? 32 : 64;
        const totalMem = (cpuNum === 32 ? 256 : 512) * GiB;
        const created = base + i * 1000;
        const uuid = newUuid();
        const vms: VmRow[] = [];
        let usedMem = 0;
        let usedCpu = 0;
        for (let v = 0; v < o.vmsPerHost; v++) {
          // 90% placed and running; the rest stopped (no host, ZStack keeps lastHostUuid).
          const placed = rnd() < 0.9;
          const memorySize = (1 + Math.floor(rnd() * 8)) * 1024 * MiB;
          const vcpu = 1 + Math.floor(rnd() * 4);
          const nicCount = rnd() < 0.5 ? 1 : 2;
          const vmNics = [];
          for (let k = 0; k < nicCount; k++, nic++) {
            // 172.16.0.0/12, walked in order: 172.16.x.y, 172.17.x.y, ...
            const ip = `172.${16 + Math.floor(nic / 62_500)}.${Math.floor(nic / 250) % 250 + 1}.${(nic % 250) + 1}`;
            vmNics.push({ ip, mac: mac(nic) });
            if (placed) {
              out.placedIps.push(ip);
              out.placedIpHosts.push(uuid);
            }
          }
          if (placed) {
            usedMem += memorySize;
            usedCpu += vcpu;
          }
          vms.push({
            uuid: newUuid(), name: `vm-${i + 1}-${v + 1}`, hostUuid: placed ? uuid : null, lastHostUuid: uuid,
            clusterUuid: cluster.uuid, zoneUuid: zone.uuid, state: placed ? 'Running' : 'Stopped',
            memorySize, cpuNum: vcpu, vmNics, createDate: created, lastOpDate: created,
          });
        }
        const host: HostRow = {
          uuid, name: `host-${i + 1}`, description: null, zoneUuid: zone.uuid, clusterUuid: cluster.uuid,
          managementIp: `10.${octets(i)}`, hypervisorType: 'KVM', state, status,
          createDate: created, lastOpDate: created, sshPort: 22,
          statusReason: status === 'Disconnected' ? 'ping to the agent timed out' : '',
          cpuNum, cpuSockets: 2, totalCpuCapacity: cpuNum * 4, availableCpuCapacity: cpuNum * 4 - usedCpu,
          totalMemoryCapacity: totalMem, availableMemoryCapacity: totalMem - usedMem,
          totalPhysicalMemory: totalMem, availablePhysicalMemory: totalMem - usedMem - 4 * GiB,
        };
        await tx.insert('host', host);
        for (const vm of vms) await tx.insert('vm', vm);
        out.hosts.push({ uuid, state, status });
        out.vms += vms.length;
      }
    });
  }
  out.nics = nic;
  await store.snapshot();
  await store.close();
  out.ms = performance.now() - t0;
  return out;
}
