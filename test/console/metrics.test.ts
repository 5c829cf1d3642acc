/**
 * The metrics port (controller/metrics.ts): each call lands in its series with the controller
 * label, inventory gauges come from what `refreshInventory` is given (every state x status
 * combination, zeros included), and noMetrics takes every call.
 */
import { describe, expect, it } from 'vitest';
import type { ClusterRow, HostRow } from '../../protocol/resources.ts';
import { type MetricsPort, noMetrics, PromMetrics } from '../../controller/metrics.ts';

const GiB = 1024 ** 3;
const cluster = (uuid: string, name: string) => ({ uuid, name }) as ClusterRow;
const makeHost = (over: Partial<HostRow>): HostRow => ({
  uuid: 'h', clusterUuid: 'c1', zoneUuid: 'z', state: 'Enabled', status: 'Connected', cpuNum: 8,
  totalMemoryCapacity: 16 * GiB, usedMemory: 2 * GiB, usedCpu: 3, ...over,
}) as HostRow;

describe('PromMetrics', () => {
  it.each<[string, (m: MetricsPort) => void, RegExp]>([
    ['a ping', (m) => m.ping(true, 0.003), /hostkeeper_pings_total\{controller="t",outcome="ok"\} 1/],
    ['a failed ping', (m) => m.ping(false, 1), /hostkeeper_pings_total\{controller="t",outcome="failed"\} 1/],
    ['a reconnect', (m) => m.connect('reconnect', true, 0.4), /hostkeeper_connects_total\{controller="t",kind="reconnect",outcome="ok"\} 1/],
    ['open channels', (m) => m.channels(42), /hostkeeper_channels_open\{controller="t"\} 42/],
    ['heartbeats', (m) => m.heartbeat(1600), /hostkeeper_heartbeats_total\{controller="t"\} 1600/],
    ['the brake', (m) => m.brake(true), /hostkeeper_mass_failure_brake_engaged\{controller="t"\} 1/],
    ['a failed job', (m) => m.job('ChangeHostState', 'Failed', 12), /hostkeeper_jobs_total\{controller="t",kind="ChangeHostState",outcome="Failed"\} 1/],
    ['a job duration', (m) => m.job('AddKVMHost', 'Succeeded', 12), /hostkeeper_job_seconds_bucket\{le="30",controller="t",kind="AddKVMHost"\} 1/],
    ['a migration', (m) => m.migration(false, 3), /hostkeeper_vm_migrations_total\{controller="t",outcome="failed"\} 1/],
    ['refusals', (m) => m.allocatorRefusal({ 'not-enough-memory': 3, disabled: 1 }), /hostkeeper_allocator_dropped_hosts_total\{controller="t",reason="not-enough-memory"\} 3/],
    ['a transaction', (m) => m.transaction(0.002, true), /hostkeeper_store_transaction_seconds_count\{controller="t",outcome="committed"\} 1/],
    ['a certificate', (m) => m.certificateExpiry('ca', 1_900_000_000), /hostkeeper_certificate_expiry_timestamp_seconds\{controller="t",certificate="ca"\} 1900000000/],
  ])('records %s', async (_what, act, want) => {
    const m = new PromMetrics({ controller: 't', processMetrics: false });
    act(m);
    expect(await m.text()).toMatch(want);
  });

  it('computes inventory gauges from the hosts it is given, without per-host series', async () => {
    const m = new PromMetrics({ controller: 't', processMetrics: false });
    const hosts = [
      makeHost({ uuid: 'a1' }), makeHost({ uuid: 'a2', status: 'Disconnected' }), makeHost({ uuid: 'b1', clusterUuid: 'c2', state: 'Maintenance' }),
    ];
    await m.refreshInventory({
      hosts: async () => hosts, clusters: async () => [cluster('c1', 'one'), cluster('c2', 'two')],
      reserved: async () => () => ({ bytes: GiB, source: 'global' }), cpuRatio: () => 10,
    });
    const text = await m.text();
    expect(text).toContain('hostkeeper_hosts{cluster="c1",cluster_name="one",state="Enabled",status="Connected"} 1');
    expect(text).toContain('hostkeeper_hosts{cluster="c1",cluster_name="one",state="Enabled",status="Disconnected"} 1');
    expect(text).toContain('hostkeeper_hosts{cluster="c2",cluster_name="two",state="Maintenance",status="Connected"} 1');
    expect(text).toContain('hostkeeper_hosts{cluster="c2",cluster_name="two",state="Disabled",status="Connecting"} 0');
    expect(text).toContain('hostkeeper_cluster_cpu{cluster="c1",cluster_name="one",kind="total"} 160');
    expect(text).toContain(`hostkeeper_cluster_memory_bytes{cluster="c1",cluster_name="one",kind="reserved"} ${2 * GiB}`);
    for (const h of hosts) expect(text).not.toContain(`"${h.uuid}"`);
  });

  it('noMetrics takes every call', () => {
    for (const k of Object.keys(noMetrics) as (keyof MetricsPort)[]) expect(() => (noMetrics[k] as (...a: unknown[]) => void)('x', 1)).not.toThrow();
  });
});
