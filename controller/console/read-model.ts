/**
 * What the console's overview and host page show that no single query answers: host counts
 * by status and state, capacity per cluster (CPU and memory: used, reserved, free), the jobs
 * running now, the latest events, and a host's reserved memory with where it comes from.
 * Read only, from the store in one pass over the hosts (10,000 hosts: see
 * bench/console.bench.ts); the routes in api/console.ts format nothing else.
 */
import type { ClusterRow, EventRow, HostRow } from '../../protocol/resources.ts';
import { HOST_STATES, HOST_STATUSES } from '../../protocol/states.ts';
import type { Core } from '../core.ts';
import { cpuRatio } from '../services/capacity.ts';
import type { JobRow } from '../services/jobs.ts';

export interface ClusterCapacity {
  uuid: string; name: string; zoneUuid: string; hosts: number;
  cpu: { total: number; used: number };
  memory: { total: number; used: number; reserved: number };
}

export interface Overview {
  hosts: { total: number; byStatus: Record<string, number>; byState: Record<string, number> };
  clusters: ClusterCapacity[];
  jobs: { uuid: string; apiName: string; progress?: JobRow['progress']; createDate: number }[];
  events: EventRow[];
}

export async function overview(core: Core, recentEvents = 15): Promise<Overview> {
  const [hosts, clusters, jobs, reserved] = await Promise.all([
    core.repo.all<HostRow>('host'), core.repo.all<ClusterRow>('cluster'), core.repo.all<JobRow>('job'), core.reservations.resolver(),
  ]);
  const ratio = cpuRatio(core.configs);
  const byStatus = Object.fromEntries(HOST_STATUSES.map((s) => [s, 0])) as Record<string, number>;
  const byState = Object.fromEntries(HOST_STATES.map((s) => [s, 0])) as Record<string, number>;
  const caps = new Map<string, ClusterCapacity>();
  for (const c of clusters) {
    caps.set(c.uuid, { uuid: c.uuid, name: c.name, zoneUuid: c.zoneUuid, hosts: 0, cpu: { total: 0, used: 0 }, memory: { total: 0, used: 0, reserved: 0 } });
  }
  for (const h of hosts) {
    byStatus[h.status] = (byStatus[h.status] ?? 0) + 1;
    byState[h.state] = (byState[h.state] ?? 0) + 1;
    const c = caps.get(h.clusterUuid);
    if (!c) continue;
    c.hosts++;
    // From the inventory's figures (total - available), which capacity.ts keeps with usedCpu/usedMemory.
    c.cpu.total += h.totalCpuCapacity ?? (h.cpuNum ?? 0) * ratio;
    c.cpu.used += (h.totalCpuCapacity ?? 0) - (h.availableCpuCapacity ?? 0);
    c.memory.total += h.totalMemoryCapacity ?? 0;
    c.memory.used += (h.totalMemoryCapacity ?? 0) - (h.availableMemoryCapacity ?? 0);
    // Reserved memory only counts where there is memory to reserve (a host that never connected has none).
    if (h.totalMemoryCapacity) c.memory.reserved += Math.min(reserved(h).bytes, h.totalMemoryCapacity);
  }
  const running = jobs.filter((j) => j.status === 'Running').sort((a, b) => b.createDate - a.createDate).slice(0, 50)
    .map((j) => ({ uuid: j.uuid, apiName: j.apiName, progress: j.progress, createDate: j.createDate }));
  return {
    hosts: { total: hosts.length, byStatus, byState },
    clusters: [...caps.values()].sort((a, b) => a.name.localeCompare(b.name)),
    jobs: running,
    events: await latestEvents(core, recentEvents),
  };
}

/** The newest events (of one host and its VMs, when given), newest first. */
export async function latestEvents(core: Core, n: number, hostUuid?: string): Promise<EventRow[]> {
  const rows = hostUuid ? await core.repo.find<EventRow>('event', { hostUuid }) : await core.repo.all<EventRow>('event');
  return rows.slice(-n).reverse();
}

/** A host's reserved memory and the level it comes from (host, cluster, zone or global). */
export async function hostReservation(core: Core, host: HostRow): Promise<{ bytes: number; source: string }> {
  return (await core.reservations.resolver())(host);
}
