/**
 * The metrics port (STYLE.md 16): what the controller's moving parts report, injected into
 * core like the clock. `noMetrics` does nothing (tests and tools that never scrape pass it);
 * `PromMetrics` keeps prom-client counters in a registry of its own (several controllers in
 * one test process never share series).
 *
 * Two kinds of series, on purpose:
 * - inventory gauges (hosts by cluster x state x status, capacity by cluster) are computed
 *   from the store at scrape time (`refreshInventory`), so every controller sharing a
 *   database reports the same figures and nothing has to keep them in step;
 * - work counters and histograms (pings, connects, jobs, migrations, ...) count what THIS
 *   process did and carry a `controller` label, so a sum over controllers is the fleet's.
 * No series is per host: 10,000 hosts would be 10,000 series per metric.
 */
import { hostname } from 'node:os';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ClusterRow, HostRow } from '../protocol/resources.ts';
import { HOST_STATES, HOST_STATUSES } from '../protocol/states.ts';
import type { ReservedSource } from './services/tags.ts';

export type ConnectKind = 'connect' | 'reconnect';

export interface MetricsPort {
  /** A store transaction took `seconds`; `ok` false when it threw (nothing committed). */
  transaction(seconds: number, ok: boolean): void;
  /** A ping to a host's agent: its outcome and round trip. */
  ping(ok: boolean, seconds: number): void;
  /** A connect flow (first connect or reconnect) ended. */
  connect(kind: ConnectKind, ok: boolean, seconds: number): void;
  /** Command channels open now (set after each open or close). */
  channels(open: number): void;
  /** Heartbeats received from agents. */
  heartbeat(count?: number): void;
  /** The mass-failure brake engaged (true) or released (false). */
  brake(engaged: boolean): void;
  /** A job finished: its API name, outcome and how long it ran. */
  job(apiName: string, outcome: 'Succeeded' | 'Failed', seconds: number): void;
  /** A VM migration ended. */
  migration(ok: boolean, seconds: number): void;
  /** A placement found no host: how many hosts were dropped for each reason. */
  allocatorRefusal(reasons: Record<string, number>): void;
  /** When a certificate the controller holds expires (epoch seconds). */
  certificateExpiry(name: string, epochSeconds: number): void;
}

const noop = () => {};
export const noMetrics: MetricsPort = {
  transaction: noop, ping: noop, connect: noop, channels: noop, heartbeat: noop, brake: noop,
  job: noop, migration: noop, allocatorRefusal: noop, certificateExpiry: noop,
};

/** What `refreshInventory` reads: the store's hosts and clusters and the reservation resolver. */
export interface InventorySource {
  hosts(): Promise<HostRow[]>;
  clusters(): Promise<ClusterRow[]>;
  reserved(): Promise<(h: HostRow) => { bytes: number; source: ReservedSource }>;
  cpuRatio(): number;
}

export interface PromMetricsOptions {
  /** The `controller` label of work series (default: hostname). */
  controller?: string;
  /** Process metrics and event-loop lag (default true; benches turn it off to measure the rest). */
  processMetrics?: boolean;
}

export class PromMetrics implements MetricsPort {
  readonly registry = new Registry();
  private readonly c: string;
  private readonly txSeconds: Histogram<'controller' | 'outcome'>;
  private readonly pings: Counter<'controller' | 'outcome'>;
  private readonly pingSeconds: Histogram<'controller'>;
  private readonly connects: Counter<'controller' | 'kind' | 'outcome'>;
  private readonly connectSeconds: Histogram<'controller' | 'kind'>;
  private readonly channelsOpen: Gauge<'controller'>;
  private readonly heartbeats: Counter<'controller'>;
  private readonly brakeEngaged: Gauge<'controller'>;
  private readonly brakeEngagements: Counter<'controller'>;
  private readonly jobs: Counter<'controller' | 'kind' | 'outcome'>;
  private readonly jobSeconds: Histogram<'controller' | 'kind'>;
  private readonly migrations: Counter<'controller' | 'outcome'>;
  private readonly migrationSeconds: Histogram<'controller'>;
  private readonly refusals: Counter<'controller' | 'reason'>;
  private readonly certExpiry: Gauge<'controller' | 'certificate'>;
  private readonly hostsGauge: Gauge<'cluster' | 'cluster_name' | 'state' | 'status'>;
  private readonly cpuGauge: Gauge<'cluster' | 'cluster_name' | 'kind'>;
  private readonly memGauge: Gauge<'cluster' | 'cluster_name' | 'kind'>;

  constructor(opts: PromMetricsOptions = {}) {
    this.c = opts.controller ?? hostname();
    const r = [this.registry];
    const fast = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
    const slow = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800];
    this.txSeconds = new Histogram({ name: 'hostkeeper_store_transaction_seconds', help: 'Store transaction latency (until durable)', labelNames: ['controller', 'outcome'], buckets: fast, registers: r });
    this.pings = new Counter({ name: 'hostkeeper_pings_total', help: 'Pings sent to host agents', labelNames: ['controller', 'outcome'], registers: r });
    this.pingSeconds = new Histogram({ name: 'hostkeeper_ping_seconds', help: 'Ping round trip', labelNames: ['controller'], buckets: fast, registers: r });
    this.connects = new Counter({ name: 'hostkeeper_connects_total', help: 'Connect flows (first connects and reconnects)', labelNames: ['controller', 'kind', 'outcome'], registers: r });
    this.connectSeconds = new Histogram({ name: 'hostkeeper_connect_seconds', help: 'Connect flow duration', labelNames: ['controller', 'kind'], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: r });
    this.channelsOpen = new Gauge({ name: 'hostkeeper_channels_open', help: 'Agent command channels open', labelNames: ['controller'], registers: r });
    this.heartbeats = new Counter({ name: 'hostkeeper_heartbeats_total', help: 'Heartbeats received from agents', labelNames: ['controller'], registers: r });
    this.brakeEngaged = new Gauge({ name: 'hostkeeper_mass_failure_brake_engaged', help: '1 while automatic reconnects are held because most hosts dropped at once', labelNames: ['controller'], registers: r });
    this.brakeEngagements = new Counter({ name: 'hostkeeper_mass_failure_brake_engagements_total', help: 'Times the mass-failure brake engaged', labelNames: ['controller'], registers: r });
    this.jobs = new Counter({ name: 'hostkeeper_jobs_total', help: 'Finished API jobs', labelNames: ['controller', 'kind', 'outcome'], registers: r });
    this.jobSeconds = new Histogram({ name: 'hostkeeper_job_seconds', help: 'API job duration', labelNames: ['controller', 'kind'], buckets: slow, registers: r });
    this.migrations = new Counter({ name: 'hostkeeper_vm_migrations_total', help: 'VM migrations', labelNames: ['controller', 'outcome'], registers: r });
    this.migrationSeconds = new Histogram({ name: 'hostkeeper_vm_migration_seconds', help: 'VM migration duration', labelNames: ['controller'], buckets: slow, registers: r });
    this.refusals = new Counter({ name: 'hostkeeper_allocator_dropped_hosts_total', help: 'Hosts dropped by placements that found no host, by reason', labelNames: ['controller', 'reason'], registers: r });
    this.certExpiry = new Gauge({ name: 'hostkeeper_certificate_expiry_timestamp_seconds', help: 'When a certificate the controller holds expires', labelNames: ['controller', 'certificate'], registers: r });
    this.hostsGauge = new Gauge({ name: 'hostkeeper_hosts', help: 'Hosts by cluster, admin state and connection status (from the store)', labelNames: ['cluster', 'cluster_name', 'state', 'status'], registers: r });
    this.cpuGauge = new Gauge({ name: 'hostkeeper_cluster_cpu', help: 'Cluster CPU capacity (cpuNum x over-provisioning ratio): total, used', labelNames: ['cluster', 'cluster_name', 'kind'], registers: r });
    this.memGauge = new Gauge({ name: 'hostkeeper_cluster_memory_bytes', help: 'Cluster memory: total, used (by VMs), reserved (per host, resolved host > cluster > zone > global)', labelNames: ['cluster', 'cluster_name', 'kind'], registers: r });
    this.brakeEngaged.set({ controller: this.c }, 0);
    this.channelsOpen.set({ controller: this.c }, 0);
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'hostkeeper_' });
  }

  transaction(seconds: number, ok: boolean): void {
    this.txSeconds.observe({ controller: this.c, outcome: ok ? 'committed' : 'failed' }, seconds);
  }
  ping(ok: boolean, seconds: number): void {
    this.pings.inc({ controller: this.c, outcome: ok ? 'ok' : 'failed' });
    if (ok) this.pingSeconds.observe({ controller: this.c }, seconds);
  }
  connect(kind: ConnectKind, ok: boolean, seconds: number): void {
    this.connects.inc({ controller: this.c, kind, outcome: ok ? 'ok' : 'failed' });
    this.connectSeconds.observe({ controller: this.c, kind }, seconds);
  }
  channels(open: number): void {
    this.channelsOpen.set({ controller: this.c }, open);
  }
  heartbeat(count = 1): void {
    this.heartbeats.inc({ controller: this.c }, count);
  }
  brake(engaged: boolean): void {
    this.brakeEngaged.set({ controller: this.c }, engaged ? 1 : 0);
    if (engaged) this.brakeEngagements.inc({ controller: this.c });
  }
  job(apiName: string, outcome: 'Succeeded' | 'Failed', seconds: number): void {
    this.jobs.inc({ controller: this.c, kind: apiName, outcome });
    this.jobSeconds.observe({ controller: this.c, kind: apiName }, seconds);
  }
  migration(ok: boolean, seconds: number): void {
    this.migrations.inc({ controller: this.c, outcome: ok ? 'ok' : 'failed' });
    if (ok) this.migrationSeconds.observe({ controller: this.c }, seconds);
  }
  allocatorRefusal(reasons: Record<string, number>): void {
    for (const [reason, n] of Object.entries(reasons)) this.refusals.inc({ controller: this.c, reason }, n);
  }
  certificateExpiry(name: string, epochSeconds: number): void {
    this.certExpiry.set({ controller: this.c, certificate: name }, epochSeconds);
  }

  /**
   * Recomputes the inventory gauges from the store: one pass over the hosts (measured at
   * 10,000 hosts in bench/console.bench.ts). Series of clusters that no longer exist vanish.
   */
  async refreshInventory(src: InventorySource): Promise<void> {
    const [hosts, clusters, reserved] = await Promise.all([src.hosts(), src.clusters(), src.reserved()]);
    const ratio = src.cpuRatio();
    const names = new Map(clusters.map((c) => [c.uuid, c.name]));
    const counts = new Map<string, number>();
    const cap = new Map<string, { cpuTotal: number; cpuUsed: number; memTotal: number; memUsed: number; memReserved: number }>();
    for (const c of clusters) cap.set(c.uuid, { cpuTotal: 0, cpuUsed: 0, memTotal: 0, memUsed: 0, memReserved: 0 });
    for (const h of hosts) {
      const key = `${h.clusterUuid}\u0000${h.state}\u0000${h.status}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      let c = cap.get(h.clusterUuid);
      if (!c) cap.set(h.clusterUuid, (c = { cpuTotal: 0, cpuUsed: 0, memTotal: 0, memUsed: 0, memReserved: 0 }));
      c.cpuTotal += (h.cpuNum ?? 0) * ratio;
      c.cpuUsed += h.usedCpu ?? 0;
      c.memTotal += h.totalMemoryCapacity ?? 0;
      c.memUsed += h.usedMemory ?? 0;
      c.memReserved += reserved(h).bytes;
    }
    this.hostsGauge.reset();
    this.cpuGauge.reset();
    this.memGauge.reset();
    for (const [uuid, c] of cap) {
      const l = { cluster: uuid, cluster_name: names.get(uuid) ?? '' };
      // Every combination, zeros included: an alert on a series that vanishes never fires.
      for (const state of HOST_STATES) for (const status of HOST_STATUSES) {
        this.hostsGauge.set({ ...l, state, status }, counts.get(`${uuid}\u0000${state}\u0000${status}`) ?? 0);
      }
      this.cpuGauge.set({ ...l, kind: 'total' }, c.cpuTotal);
      this.cpuGauge.set({ ...l, kind: 'used' }, c.cpuUsed);
      this.memGauge.set({ ...l, kind: 'total' }, c.memTotal);
      this.memGauge.set({ ...l, kind: 'used' }, c.memUsed);
      this.memGauge.set({ ...l, kind: 'reserved' }, c.memReserved);
    }
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}
