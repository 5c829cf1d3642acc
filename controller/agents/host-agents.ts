/**
 * The command channel to every agent: the connect flow, the tracker (pings, heartbeats,
 * Disconnected on failure), automatic reconnect with capped backoff, start-up loading with
 * a grace window, and the mass-failure brake. ZStack's HostTrackImpl + KVMHost.connectHook,
 * with the improvements its notes ask for (zstack-notes.md sections 3 and 10).
 *
 * How the settings relate: a host is pinged every `ping.interval` s (jittered so hosts are
 * not pinged in lock-step), each ping may take `ping.timeout` s (keep it below the interval),
 * at most `ping.parallelismDegree` pings are in flight and at most one per host. Between
 * pings the channel's heartbeats (every 600 ms, longer for large fleets: heartbeatPeriodFor)
 * tell within 2.5 periods that a host went silent, and a closed channel tells at once that an
 * agent died.
 */
import { type MetricsPort, noMetrics } from '../metrics.ts';
import { randomBytes } from 'node:crypto';
import {
  AGENT_PATHS, AGENT_PORT, type AgentErrorCode, type AgentIdentity, type AgentVm, type CapacityRsp, type ConnectRsp, type FactRsp, HEARTBEAT_MS, heartbeatDeadline, heartbeatPeriodFor, type HostFacts,
  type PingRsp, type VmListRsp,
} from '../../protocol/agent.ts';
import { checkFacts } from '../../protocol/agent-schemas.ts';
import { backoffDelay } from '../../protocol/backoff.ts';
import { HkError, operationError } from '../../protocol/errors.ts';
import { inMaintenance } from '../../protocol/states.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { metadataTag } from '../../protocol/tags.ts';
import { plainIPv4 } from '../../protocol/values.ts';
import { type Clock, sleep } from '../clock.ts';
import { runFlow, type Step } from '../flow.ts';
import type { Logger } from '../log.ts';
import type { GlobalConfigs } from '../services/configs.ts';
import type { Hosts } from '../services/hosts.ts';
import { hostRef } from '../services/inventory.ts';
import type { JobHandle } from '../services/jobs.ts';
import { applyHostFacts } from '../services/facts.ts';
import { applyAgentReport } from '../services/vms.ts';
import type { Repository, Tx } from '../store/repository.ts';
import { type Channel, openChannel } from './channel.ts';
import { AgentClient, AgentError, type AgentTarget } from './client.ts';
import type { ControllerTls } from '../pki/ca.ts';
import type { Cluster, HostLeaseRow } from '../cluster/cluster.ts';
import { PeerCalls } from '../cluster/peer-calls.ts';
import { liveness } from './liveness.ts';
import { Semaphore } from '../semaphore.ts';


interface Tracked {
  uuid: string;
  identity: AgentIdentity;
  channel?: Channel;
  cancelPing?: () => void;
  pingInFlight: boolean;
  watchingSince: number;
}

interface Reconnecting {
  attempt: number;
  cancel: () => void;
}

export interface HostAgentsOptions {
  /** HOSTKEEPER_ADVERTISE_URL: how agents reach the controller; derived per host when unset. */
  advertiseUrl?: string;
  /** Bound on concurrent agent calls from this controller. */
  globalLimit?: number;
  /** Silence allowed after start-up before hosts are declared Disconnected. */
  startupGraceMs?: number;
  /** Period of the heartbeat check. */
  checkEveryMs?: number;
  /** The controller's TLS identity for calls to agents (core passes its Pki); null: plain HTTP, bench/ only. */
  tls?: ControllerTls | null;
  /**
   * Membership and host leases (controller/cluster/): this controller connects, pings and
   * calls only the hosts it holds, under its lease token; calls for other hosts go to their
   * holder. Absent (unit tests): every host is ours, calls carry no token.
   */
  cluster?: Cluster;
}

/** Per host: how often this controller pinged it, and when first and last (tests count double pinging). */
export interface PingRecord {
  count: number;
  first: number;
  last: number;
}

export class HostAgents {
  readonly client: AgentClient;
  private readonly pingLimit: Semaphore;
  /** Connect flows at once: start-up, registration and reconnect storms all queue here. */
  private readonly connectLimit: Semaphore;
  private readonly tracked = new Map<string, Tracked>();
  private readonly reconnecting = new Map<string, Reconnecting>();
  private readonly connecting = new Map<string, Promise<HostRow>>();
  /** connect() calls waiting for the host's queue. */
  private readonly queuedConnects = new Map<string, Promise<HostRow>>();
  private readonly drops: number[] = [];
  private braking = false;
  private listenPort = 0;
  private agentListenPort = 0;
  private stopped = false;
  private cancelCheck?: () => void;
  private lastCheck = 0;
  private beatMs = HEARTBEAT_MS;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly graceMs: number;
  /** Set by the VM operations: a VM with an operation running ignores pushes meanwhile. */
  vmBusy: (vmUuid: string) => boolean = () => false;
  /** The metrics port (core.ts sets it): pings, connects, channels, heartbeats, the brake. */
  metrics: MetricsPort = noMetrics;
  private readonly checkEveryMs: number;
  private startedAt: number;
  private readonly cluster?: Cluster;
  private readonly peers?: PeerCalls;
  /** Per-host ping record (GET /zstack/internal/pings). */
  readonly pings = new Map<string, PingRecord>();

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly configs: GlobalConfigs,
    private readonly hosts: Hosts,
    private readonly opts: HostAgentsOptions = {},
  ) {
    this.client = new AgentClient(() => clock.now(), opts.globalLimit ?? 200, configs.getInt('kvm', 'host.syncLevel'), opts.tls ?? null);
    this.pingLimit = new Semaphore(configs.getInt('host', 'ping.parallelismDegree'));
    // As many flows as agent calls may be in flight: more would only interleave their steps,
    // so that every host waits for all of them (measured: restart of 10,000 hosts 60 s -> 37 s).
    this.connectLimit = new Semaphore(opts.globalLimit ?? 200);
    this.graceMs = opts.startupGraceMs ?? 2 * 60_000;
    this.checkEveryMs = opts.checkEveryMs ?? 200;
    this.startedAt = clock.now();
    this.cluster = opts.cluster;
    if (this.cluster) {
      this.peers = new PeerCalls(this.cluster, () => clock.now());
      this.cluster.listener = {
        gained: (hosts) => this.onGained(hosts),
        lost: (hosts) => this.onLost(hosts),
        detached: () => this.onDetached(),
        attached: (hosts) => {
          this.onGained(hosts);
          this.onReattached?.();
        },
        died: (members) => this.onMembersDied?.(members),
      };
    }
    this.unsubscribe.push(
      configs.onChange('host', 'ping.parallelismDegree', (v) => this.pingLimit.setLimit(Number(v))),
      configs.onChange('kvm', 'host.syncLevel', (v) => this.client.setPerHostLimit(Number(v))),
      configs.onChange('host', 'ping.interval', () => {
        for (const t of this.tracked.values()) this.schedulePing(t, true);
      }),
      configs.onChange('host', 'connection.autoReconnectOnError', (v) => {
        if (v === 'false') this.cancelReconnects();
        else void this.reconnectDisconnected();
      }),
    );
  }

  setListenPort(port: number): void {
    this.listenPort = port;
  }

  /** The controller's own ports (admin API, agent TLS): a host may not claim them on our addresses. */
  get ownPorts(): number[] {
    return [this.listenPort, this.agentListenPort].filter((p) => p > 0);
  }

  /** The TLS port agents push to (HOSTKEEPER_AGENT_PORT): what ConnectCmd tells them. */
  setAgentPort(port: number): void {
    this.agentListenPort = port;
  }

  /**
   * Where this agent should push: the controller's TLS agent port, on the advertised host
   * (HOSTKEEPER_ADVERTISE_URL's host) or the address our connection to it came from. Plain
   * HTTP (bench/ only) keeps the admin URL.
   */
  private controllerUrlFor(localAddress: string): string {
    if (!this.client.tls) return this.opts.advertiseUrl ?? `http://${plainIPv4(localAddress)}:${this.listenPort}`;
    const host = this.opts.advertiseUrl ? new URL(this.opts.advertiseUrl).hostname : plainIPv4(localAddress);
    return `https://${host}:${this.agentListenPort}`;
  }

  private get intervalMs(): number {
    return this.configs.getInt('host', 'ping.interval') * 1000;
  }
  private get timeoutMs(): number {
    return this.configs.getInt('host', 'ping.timeout') * 1000;
  }

  static target(h: HostRow): AgentTarget {
    if (!h.agentSecret) {
      throw operationError(`${hostRef(h)} has no agent credentials yet: add it with AddKVMHost (deploys the agent) or start its agent with a bootstrap token`);
    }
    // Once the controller issued the host a certificate, its agent must present one from our CA.
    return { uuid: h.uuid, managementIp: h.managementIp, agentPort: h.agentPort ?? AGENT_PORT, secret: h.agentSecret, certified: h.agentCertNotAfter !== undefined };
  }

  /** The host's address and credentials, with our lease token when several controllers share it. */
  targetOf(h: HostRow): AgentTarget {
    const t = HostAgents.target(h);
    const fence = this.cluster?.tokenOf(h.uuid);
    return fence === undefined ? t : { ...t, fence };
  }

  /** True when this controller may act on the host (holds its lease, or is the only controller). */
  holds(uuid: string): boolean {
    return !this.cluster || this.cluster.holds(uuid);
  }

  /** Set by core: members that died (their flows and jobs are taken over). */
  onMembersDied?: (members: string[]) => void;
  /** Set by core: the database is back after a loss (flows it cut are resumed). */
  onReattached?: () => void;

  /**
   * One call to a host's agent for the VM operations and flows: direct when we hold the host,
   * else through the controller that holds it (controller/cluster/peer-calls.ts), which makes
   * it under its own token. An agent refusing our token (another controller took the host)
   * drops the host from what we hold.
   */
  async callHost<T extends { success: boolean }>(host: HostRow, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const c = this.cluster;
    if (!c || !this.peers) return (await this.client.call<T>(this.targetOf(host), path, body, timeoutMs)).body;
    // Three rounds cover the races: the holder changes between our look and our call.
    for (let round = 0; ; round++) {
      if (c.holds(host.uuid)) {
        try {
          return (await this.client.call<T>(this.targetOf(host), path, body, timeoutMs)).body;
        } catch (err) {
          if (!(err instanceof AgentError && err.code === 'FENCED') || round >= 2) throw err;
          await c.fenced(host.uuid);
          continue;
        }
      }
      const holder = await c.holderOf(host.uuid);
      if (holder && holder.uuid !== c.uuid) {
        const a = await this.peers.call<T>(holder, host.uuid, path, body, timeoutMs);
        if (a.success) return a.body;
        const f = a.failure;
        // The peer let the host go meanwhile: look again.
        if (round < 2 && /no longer holds/.test(f.message)) continue;
        throw new AgentError(f.kind, f.message, { status: f.status, code: f.code as AgentErrorCode | undefined });
      }
      // Nobody live holds it (its holder stopped, or it was never connected): take it, and
      // connect it like any host we gain, so that it is pinged.
      if (round >= 2) throw new AgentError('unreachable', `no controller holds host[uuid:${host.uuid}] at the moment: try again`);
      await c.acquire(host.uuid).then(() => {
        if (c.started) this.onGained([host.uuid]);
      }, () => undefined);
    }
  }

  /** A peer controller's call for a host we hold (api/internal.ts). */
  async callForPeer(hostUuid: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    if (!this.holds(hostUuid)) throw new AgentError('unreachable', `controller[uuid:${this.cluster?.uuid}] no longer holds host[uuid:${hostUuid}]`);
    const host = await this.hosts.mustGet(hostUuid);
    try {
      return (await this.client.call(this.targetOf(host), path, body, timeoutMs)).body;
    } catch (err) {
      if (err instanceof AgentError && err.code === 'FENCED') await this.cluster?.fenced(hostUuid);
      throw err;
    }
  }

  // ---- hand-over (several controllers) -------------------------------------------------------

  private onGained(hosts: string[]): void {
    if (this.stopped) return;
    void (async () => {
      for (const uuid of hosts) {
        const h = await this.repo.get<HostRow>('host', uuid).catch(() => undefined);
        if (!h || !h.agentSecret || inMaintenance(h.state) || (h.deployPhase ?? 'done') !== 'done' || this.tracked.has(uuid)) continue;
        void this.connect(uuid).catch((err) => this.afterFailedConnect(uuid, err));
      }
    })();
  }

  private onLost(hosts: string[]): void {
    for (const uuid of hosts) {
      this.untrack(uuid);
      this.cancelReconnect(uuid);
    }
  }

  /** The database is gone: act on no host (statuses cannot be recorded; the holders decide later). */
  private onDetached(): void {
    this.cancelReconnects();
    for (const uuid of [...this.tracked.keys()]) this.untrack(uuid);
  }

  /**
   * Inside a transaction about a host: true when another controller holds its lease now, so
   * that a controller that lost the host records nothing about it (the database side of
   * fencing; the agent refuses its calls).
   */
  private async leaseLost(tx: Tx, uuid: string): Promise<boolean> {
    if (!this.cluster) return false;
    return (await tx.get<HostLeaseRow>('hostLease', uuid))?.owner !== this.cluster.uuid;
  }

  /** An agent refused our lease token: forget the host (its holder acts on it). */
  private async ifFenced(uuid: string, err: unknown): Promise<boolean> {
    if (!(err instanceof AgentError && err.code === 'FENCED')) return false;
    await this.cluster?.fenced(uuid);
    this.untrack(uuid);
    return true;
  }

  private notePing(uuid: string): void {
    const now = this.clock.now();
    const r = this.pings.get(uuid);
    if (r) {
      r.count++;
      r.last = now;
    } else {
      this.pings.set(uuid, { count: 1, first: now, last: now });
    }
  }

  isTracked(uuid: string): boolean {
    return this.tracked.has(uuid);
  }
  get trackedCount(): number {
    return this.tracked.size;
  }

  // ---- connect -----------------------------------------------------------------------------

  /**
   * Connects a host: the named steps of the connect flow, in the host's queue, one at a time
   * per host (a second caller shares the first one's attempt). Resolves with the Connected
   * host; on failure the host is Disconnected with the reason and the error is HOST.1003.
   */
  connect(uuid: string, job?: JobHandle): Promise<HostRow> {
    const pending = this.queuedConnects.get(uuid) ?? this.connecting.get(uuid);
    if (pending) return pending;
    const p = this.hosts.queue.run(uuid, () => {
      this.queuedConnects.delete(uuid);
      return this.connectHeld(uuid, job);
    });
    this.queuedConnects.set(uuid, p);
    void p.catch(() => undefined).finally(() => {
      if (this.queuedConnects.get(uuid) === p) this.queuedConnects.delete(uuid);
    });
    return p;
  }

  /**
   * The connect flow for a caller that already holds the host's queue (deployment runs its
   * steps and then this in one turn of the queue). Shares an attempt already running, never
   * one still waiting for the queue (that one waits for this caller).
   */
  connectHeld(uuid: string, job?: JobHandle): Promise<HostRow> {
    const running = this.connecting.get(uuid);
    if (running) return running;
    const p = this.connectLimit.run(() => this.doConnect(uuid, job)).finally(() => this.connecting.delete(uuid));
    this.connecting.set(uuid, p);
    return p;
  }

  private async doConnect(uuid: string, job?: JobHandle): Promise<HostRow> {
    const host = await this.hosts.mustGet(uuid);
    if (inMaintenance(host.state)) {
      throw operationError(`${hostRef(host)} is in state[${host.state}], cannot perform required operation: enable or disable it first`);
    }
    // Several controllers: only the lease holder connects a host, and says so with its token.
    await this.cluster?.acquire(uuid);
    const unpin = this.cluster?.pin(uuid);
    try {
      return await this.connectLeased(host, job);
    } finally {
      unpin?.();
    }
  }

  private async connectLeased(host: HostRow, job?: JobHandle): Promise<HostRow> {
    const uuid = host.uuid;
    const target = this.targetOf(host);
    this.untrack(uuid);
    const timeout = this.timeoutMs;
    // Metrics only (a duration, not a timer): a host that connected before is a reconnect.
    const t0 = performance.now();
    const kind = host.bootId ? 'reconnect' : 'connect';
    const session = AgentClient.session();
    const ctx: { controllerUrl?: string; identity?: AgentIdentity; facts?: HostFacts; cap?: CapacityRsp['capacity']; vms?: VmListRsp['vms']; channel?: Channel } = {};
    const steps: Step<typeof ctx>[] = [
      {
        name: 'mark-connecting',
        run: async () => {
          await this.repo.transaction(async (tx) => {
            if (await this.leaseLost(tx, uuid)) throw new AgentError('refused', 'another controller holds the host now');
            await this.hosts.applyStatusEvent(tx, uuid, 'connecting', 'connecting');
          });
        },
      },
      {
        name: 'reach-agent',
        run: async () => {
          const r = await this.client.call(target, AGENT_PATHS.echo, {}, timeout, session);
          ctx.controllerUrl = this.controllerUrlFor(r.localAddress);
        },
      },
      {
        name: 'exchange-identity',
        run: async () => {
          const r = await this.client.call<ConnectRsp>(target, AGENT_PATHS.connect, { hostUuid: uuid, controllerUrl: ctx.controllerUrl }, timeout, session);
          if (r.body.hostUuid !== uuid) throw new AgentError('bad-answer', `agent answered connect as host[uuid:${r.body.hostUuid}], not ${uuid}`);
          ctx.identity = { hostUuid: r.body.hostUuid, agentVersion: r.body.agentVersion, bootId: r.body.bootId, instanceId: r.body.instanceId };
        },
      },
      {
        name: 'collect-facts',
        run: async () => {
          // Validated like admin input: an agent could otherwise store anything as a tag.
          ctx.facts = checkFacts((await this.client.call<FactRsp>(target, AGENT_PATHS.fact, {}, timeout, session)).body.facts);
        },
      },
      {
        name: 'read-capacity',
        run: async () => {
          ctx.cap = (await this.client.call<CapacityRsp>(target, AGENT_PATHS.capacity, {}, timeout, session)).body.capacity;
        },
      },
      {
        name: 'sync-vms',
        run: async () => {
          ctx.vms = (await this.client.call<VmListRsp>(target, AGENT_PATHS.vmList, {}, timeout, session)).body.vms;
        },
      },
      {
        name: 'open-channel',
        run: async () => {
          ctx.channel = await this.channelTo(target, timeout);
        },
        rollback: async () => ctx.channel?.close(),
      },
      {
        name: 'mark-connected',
        run: async () => {
          await this.repo.transaction(async (tx) => {
            if (await this.leaseLost(tx, uuid)) throw new AgentError('refused', 'another controller holds the host now');
            const now = this.clock.now();
            await applyHostFacts(tx, uuid, ctx.facts!, now);
            const c = ctx.cap!;
            const h = await tx.update<HostRow>('host', uuid, {
              cpuNum: c.cpuNum, cpuSockets: c.cpuSockets, totalMemoryCapacity: c.totalMemory,
              totalPhysicalMemory: c.totalMemory, availablePhysicalMemory: c.availablePhysicalMemory,
              bootId: ctx.identity!.bootId, instanceId: ctx.identity!.instanceId, agentVersion: ctx.identity!.agentVersion,
            });
            // The agent is the truth about what runs on its host; capacity follows from it.
            await applyAgentReport(tx, this.configs, now, h, ctx.vms!, true);
            await this.hosts.applyStatusEvent(tx, uuid, 'connected', '');
          });
        },
      },
    ];
    try {
      await runFlow(`connect-host-${uuid}`, steps, ctx, this.log, (current, total, step) => job?.progress({ current, total, step }));
    } catch (err) {
      this.metrics.connect(kind, false, (performance.now() - t0) / 1000);
      session.destroy();
      const reason = err instanceof Error ? err.message : String(err);
      if (await this.ifFenced(uuid, err)) throw new HkError('HOST.1003', `host[uuid:${uuid}] is held by another controller now: ${reason}`);
      await this.repo.transaction(async (tx) => {
        if (!(await this.leaseLost(tx, uuid))) await this.hosts.applyStatusEvent(tx, uuid, 'disconnected', reason);
      }).catch(() => undefined);
      if (err instanceof HkError) throw err;
      throw new HkError('HOST.1003', `connection error for KVM host[uuid:${uuid}, ip:${host.managementIp}]: ${reason}`);
    }
    session.destroy();
    this.track(uuid, ctx.identity!, ctx.channel!);
    this.metrics.connect(kind, true, (performance.now() - t0) / 1000);
    return this.hosts.mustGet(uuid);
  }

  /**
   * Opens the host's channel. Its callbacks are made here, not in the connect flow: a closure
   * keeps its whole enclosing scope, and the connect flow's holds the flow's context (facts, VM
   * list, capacity), the host row and its keep-alive pool, which the channel would then keep
   * for as long as the host is Connected. bench/memory.bench.ts, with the channel's own changes
   * (channel.ts, openChannel): JS heap 28.5 -> 19.4 KB per host; the snapshot lost one
   * http.Agent per host and about half of the per-host closures, contexts and plain objects.
   */
  private channelTo(target: AgentTarget, timeoutMs: number): Promise<Channel> {
    const uuid = target.uuid;
    return openChannel({ ...target, tls: this.client.tls }, this.now, timeoutMs, (why) => this.onChannelLost(uuid, why), (vmUuid, vm) => this.onVmPush(uuid, vmUuid, vm));
  }

  /** The controller clock, as one function shared by every channel. */
  private readonly now = (): number => this.clock.now();

  /**
   * An agent pushed a VM change over the channel: recorded at once, unless an operation on
   * that VM is running (its own answer settles the row; see flows/vm-ops.ts) or a migration
   * of it is in flight (settled by asking both ends).
   */
  private onVmPush(hostUuid: string, vmUuid: string, vm: AgentVm | null): void {
    if (this.stopped || this.vmBusy(vmUuid)) return;
    void this.repo.transaction(async (tx) => {
      const host = await tx.get<HostRow>('host', hostUuid);
      if (!host || host.status !== 'Connected' || (await this.leaseLost(tx, hostUuid))) return;
      await applyAgentReport(tx, this.configs, this.clock.now(), host, vm ? [vm] : [], false, vm ? [] : [vmUuid]);
    }).catch((err) => this.log.warn({ host: hostUuid, vm: vmUuid, err: (err as Error).message }, 'could not record a VM change pushed by the agent'));
  }

  // ---- tracking ----------------------------------------------------------------------------

  private track(uuid: string, identity: AgentIdentity, channel: Channel): void {
    this.untrack(uuid);
    this.cancelReconnect(uuid);
    const t: Tracked = { uuid, identity, channel, pingInFlight: false, watchingSince: this.clock.now() };
    this.tracked.set(uuid, t);
    this.adaptHeartbeat(channel);
    this.schedulePing(t, true);
    this.ensureChecker();
  }

  untrack(uuid: string): void {
    const t = this.tracked.get(uuid);
    if (!t) return;
    this.tracked.delete(uuid);
    t.cancelPing?.();
    t.channel?.close();
    this.adaptHeartbeat();
  }

  /** A deleted host: stop watching and reconnecting it, and drop its per-host call limit. */
  forgetHost(uuid: string): void {
    this.untrack(uuid);
    this.cancelReconnect(uuid);
    this.client.forget(uuid);
  }

  /** The heartbeat period this controller asks of its agents (protocol/agent.ts). */
  get heartbeatMs(): number {
    return this.beatMs;
  }

  /**
   * Keeps the heartbeat load within HEARTBEAT_BUDGET_PER_S as the fleet grows and shrinks:
   * a new channel gets the current period; all channels get a new one when the fleet moved
   * it by a quarter (so a start-up of 10,000 hosts re-tells them ~7 times, not at every
   * host, and a fleet hovering at a step does not flap).
   */
  private adaptHeartbeat(fresh?: Channel): void {
    const want = heartbeatPeriodFor(this.tracked.size);
    const grow = want >= this.beatMs * 1.25;
    // Shrink only when even a quarter more hosts would still want less.
    const shrink = heartbeatPeriodFor(Math.ceil(this.tracked.size * 1.25)) < this.beatMs;
    if (grow || shrink) {
      this.beatMs = want;
      this.log.info({ hosts: this.tracked.size, heartbeatMs: want }, 'heartbeat period changed');
      for (const t of this.tracked.values()) this.tellHeartbeat(t.channel);
    } else if (fresh) {
      this.tellHeartbeat(fresh);
    }
  }

  private tellHeartbeat(ch: Channel | undefined): void {
    ch?.setHeartbeat(this.beatMs, (apply, afterMs) => this.clock.setTimer(afterMs, apply));
  }

  /** Next ping: spread over a whole interval the first time, then the interval +-10%. */
  private schedulePing(t: Tracked, first = false): void {
    t.cancelPing?.();
    const iv = this.intervalMs;
    const delay = first ? Math.random() * iv : iv * (0.9 + Math.random() * 0.2);
    t.cancelPing = this.clock.setTimer(delay, () => {
      void this.pingTracked(t.uuid).finally(() => {
        const cur = this.tracked.get(t.uuid);
        if (cur === t && !this.stopped) this.schedulePing(t);
      });
    });
  }

  /**
   * One ping of a tracked host: over its channel when open, else over HTTP; one retry over
   * HTTP before the host is declared Disconnected. Hosts in (Pre)Maintenance are skipped.
   */
  async pingTracked(uuid: string): Promise<void> {
    const t = this.tracked.get(uuid);
    if (!t || t.pingInFlight) return;
    if (!this.holds(uuid)) return this.untrack(uuid);
    // The store unreachable: no ping this round (the cluster detaches us if it lasts).
    const host = await this.repo.get<HostRow>('host', uuid).catch(() => null);
    if (host === null) return;
    if (!host) return this.untrack(uuid);
    if (inMaintenance(host.state)) return;
    const t0 = performance.now();
    t.pingInFlight = true;
    this.notePing(uuid);
    try {
      const identity = await this.pingLimit.run(async () => {
        const timeout = this.timeoutMs;
        try {
          if (t.channel?.open) return await t.channel.ping(timeout);
          return await this.httpPing(host, timeout);
        } catch {
          return await this.httpPing(host, timeout);
        }
      });
      this.metrics.ping(true, (performance.now() - t0) / 1000);
      if (this.tracked.get(uuid) !== t) return;
      t.channel && (t.channel.lastSeen = this.clock.now());
      const changed = this.identityChange(t.identity, identity, uuid);
      if (changed) {
        this.log.warn({ host: uuid, why: changed }, 'agent identity changed: full reconnect');
        this.untrack(uuid);
        void this.connect(uuid).catch((err) => this.afterFailedConnect(uuid, err));
      }
    } catch (err) {
      this.metrics.ping(false, (performance.now() - t0) / 1000);
      if (await this.ifFenced(uuid, err)) return;
      if (this.tracked.get(uuid) === t) await this.declareDown(uuid, `ping failed: ${(err as Error).message}`);
    } finally {
      t.pingInFlight = false;
    }
  }

  /** A ping over plain HTTP (no channel): the agent's identity. */
  private async httpPing(host: HostRow, timeoutMs: number): Promise<PingRsp> {
    return (await this.client.call<PingRsp>(this.targetOf(host), AGENT_PATHS.ping, { hostUuid: host.uuid }, timeoutMs)).body;
  }

  private identityChange(was: AgentIdentity, now: AgentIdentity, uuid: string): string | undefined {
    if (now.hostUuid !== uuid) return `agent reports host uuid ${now.hostUuid ?? 'none'} (agent restarted or taken over)`;
    if (now.bootId !== was.bootId) return 'host rebooted (boot id changed)';
    if (now.instanceId !== was.instanceId) return 'agent restarted (instance id changed)';
    return undefined;
  }

  /** The channel closed: check with a quick HTTP ping before declaring the host down. */
  private onChannelLost(uuid: string, why: string): void {
    const t = this.tracked.get(uuid);
    if (!t || this.stopped) return;
    t.channel = undefined;
    void (async () => {
      const host = await this.repo.get<HostRow>('host', uuid).catch(() => undefined);
      if (!host || this.tracked.get(uuid) !== t) return;
      try {
        const target = this.targetOf(host);
        const pong = await this.httpPing(host, Math.min(this.timeoutMs, 2000));
        if (this.tracked.get(uuid) !== t) return;
        const changed = this.identityChange(t.identity, pong, uuid);
        if (changed) throw new Error(changed);
        t.channel = await this.channelTo(target, this.timeoutMs);
        this.tellHeartbeat(t.channel);
      } catch (err) {
        if (await this.ifFenced(uuid, err)) return;
        if (this.tracked.get(uuid) === t) await this.declareDown(uuid, `${why}; ${(err as Error).message}`);
      }
    })();
  }

  private ensureChecker(): void {
    if (this.cancelCheck || this.stopped) return;
    this.lastCheck = this.clock.now();
    const tick = () => {
      this.cancelCheck = undefined;
      if (this.stopped) return;
      this.checkHeartbeats();
      if (this.tracked.size > 0) this.cancelCheck = this.clock.setTimer(this.checkEveryMs, tick);
    };
    this.cancelCheck = this.clock.setTimer(this.checkEveryMs, tick);
  }

  /**
   * Declares Disconnected the hosts whose channel went silent. If this check itself ran late
   * (the controller's own event loop stalled), heartbeats may be waiting unread in the
   * sockets: the lateness is granted as grace rather than blamed on the hosts.
   */
  checkHeartbeats(): void {
    const now = this.clock.now();
    // Timer jitter of a few ms is normal; a tick late by more than a whole period means the
    // controller itself stalled, and that much time is added to every host's allowance.
    const late = now - this.lastCheck - this.checkEveryMs;
    this.lastCheck = now;
    let open = 0;
    let beats = 0;
    for (const t of this.tracked.values()) {
      if (!t.channel?.open) continue;
      open++;
      beats += t.channel.beats;
      t.channel.beats = 0;
      if (late > this.checkEveryMs) t.channel.lastSeen = Math.min(now, t.channel.lastSeen + late);
      const l = liveness({ now, lastSeen: t.channel.lastSeen, watchingSince: t.watchingSince, deadlineMs: t.channel.deadlineMs, graceMs: 0 });
      if (l === 'silent') {
        const ch = t.channel;
        void this.declareDown(t.uuid, `no heartbeat for ${now - ch.lastSeen} ms`);
      }
    }
    this.metrics.channels(open);
    this.metrics.heartbeat(beats);
  }

  /**
   * Marks a host Disconnected and, unless the brake holds or auto-reconnect is off, starts
   * reconnecting it. Counts the drop for the mass-failure brake.
   */
  async declareDown(uuid: string, reason: string): Promise<void> {
    if (!this.tracked.has(uuid)) return;
    this.untrack(uuid);
    // A host we no longer hold is its new holder's to judge.
    if (!this.holds(uuid)) return;
    // Counted when decided, before it is recorded: whoever sees the host Disconnected also
    // sees the brake that drop engaged (a slow commit made the brake test flaky).
    this.noteDrop(this.tracked.size + 1);
    await this.repo.transaction(async (tx) => {
      if (!(await this.leaseLost(tx, uuid))) await this.hosts.applyStatusEvent(tx, uuid, 'disconnected', reason);
    }).catch((err) => {
      this.log.warn({ host: uuid, err: (err as Error).message }, 'could not record Disconnected');
    });
    this.scheduleReconnect(uuid);
  }

  /**
   * Brake against our own blindness (STYLE.md 11): when more than half of the hosts this
   * controller watched dropped within 2 ping intervals... the likelier story is that this
   * controller was cut off. Statuses are still recorded, but automatic reconnects stop
   * until hosts are heard from again (a reconnect probe succeeds or an admin reconnects).
   */
  private noteDrop(watched: number): void {
    const now = this.clock.now();
    const window = Math.max(10_000, 2 * heartbeatDeadline(this.beatMs));
    this.drops.push(now);
    while (this.drops.length > 0 && now - this.drops[0]! > window) this.drops.shift();
    const population = Math.max(watched, this.drops.length + this.tracked.size);
    if (!this.braking && population >= 4 && this.drops.length > population / 2) {
      this.braking = true;
      this.metrics.brake(true);
      this.log.error({ dropped: this.drops.length, of: population }, 'more than half of the hosts dropped at once: this controller is likely the one cut off; automatic reconnects are held');
    }
  }

  get brakeHeld(): boolean {
    return this.braking;
  }

  // ---- reconnect ---------------------------------------------------------------------------

  /**
   * `forced`: retries allowed even with autoReconnectOnError off (the first connect after a
   * registration, which races the agent storing its secret and certificate: that is the
   * registration finishing, not a reconnect after an error).
   */
  private scheduleReconnect(uuid: string, attempt = 0, forced = 0): void {
    if (this.stopped || (!this.configs.getBool('host', 'connection.autoReconnectOnError') && forced <= 0)) return;
    this.cancelReconnect(uuid);
    // 1 s, 2 s, 4 s ... capped at the ping interval; jittered so a fleet does not come back in step.
    const delay = backoffDelay({ initialMs: 1000, maxMs: this.intervalMs, jitter: 0.25 }, attempt);
    const cancel = this.clock.setTimer(delay, () => {
      this.reconnecting.delete(uuid);
      void this.tryReconnect(uuid, attempt, forced - 1);
    });
    this.reconnecting.set(uuid, { attempt, cancel });
  }

  private async tryReconnect(uuid: string, attempt: number, forced = 0): Promise<void> {
    if (!this.holds(uuid)) return;
    let host: HostRow | undefined;
    try {
      host = await this.repo.get<HostRow>('host', uuid);
    } catch {
      return this.scheduleReconnect(uuid, attempt + 1, forced); // the store is unreachable: later
    }
    if (!host || inMaintenance(host.state) || this.tracked.has(uuid)) return;
    if (this.braking) {
      // Probe only: one answer means we can see hosts again.
      try {
        await this.httpPing(host, this.timeoutMs);
        this.braking = false;
        this.metrics.brake(false);
        this.drops.length = 0;
        this.log.warn({ host: uuid }, 'hosts answer again: releasing the mass-failure brake');
        void this.reconnectDisconnected();
      } catch {
        return this.scheduleReconnect(uuid, attempt + 1);
      }
    }
    try {
      await this.connect(uuid);
    } catch (err) {
      this.afterFailedConnect(uuid, err, attempt + 1, forced);
    }
  }

  /**
   * After the first connect following a registration failed: retry with capped backoff, up to
   * REGISTRATION_RETRIES times even when auto-reconnect is off (see scheduleReconnect).
   */
  retryLater(uuid: string, err: unknown): void {
    this.afterFailedConnect(uuid, err, 0, HostAgents.REGISTRATION_RETRIES);
  }

  /** 1 + 2 + 4 + 8 s: an agent that has not stored its credentials by then is not coming. */
  static readonly REGISTRATION_RETRIES = 4;

  /**
   * One sweep: pings every tracked host once, bounded by ping.parallelismDegree (benchmarks
   * and diagnostics; the tracker itself spreads pings over the interval).
   */
  async pingAll(): Promise<number> {
    const uuids = [...this.tracked.keys()];
    await Promise.all(uuids.map((u) => this.pingTracked(u)));
    return uuids.length;
  }

  private afterFailedConnect(uuid: string, err: unknown, attempt = 0, forced = 0): void {
    this.log.info({ host: uuid, attempt, err: (err as Error).message }, 'reconnect failed');
    if (err instanceof HkError && err.code === 'SYS.1006') return; // maintenance or no credentials
    this.scheduleReconnect(uuid, attempt, forced);
  }

  cancelReconnect(uuid: string): void {
    this.reconnecting.get(uuid)?.cancel();
    this.reconnecting.delete(uuid);
  }

  private cancelReconnects(): void {
    for (const uuid of [...this.reconnecting.keys()]) this.cancelReconnect(uuid);
  }

  /** Starts reconnecting every Disconnected host that can be (auto-reconnect turned on). */
  async reconnectDisconnected(): Promise<void> {
    const down = await this.repo.find<HostRow>('host', { status: 'Disconnected' }).catch((err) => {
      this.log.warn({ err: (err as Error).message }, 'cannot list the Disconnected hosts to reconnect');
      return [] as HostRow[];
    });
    for (const h of down) {
      if (h.agentSecret && !inMaintenance(h.state) && !this.reconnecting.has(h.uuid) && this.holds(h.uuid)) this.scheduleReconnect(h.uuid);
    }
  }

  // ---- start-up ----------------------------------------------------------------------------

  /**
   * Connects every host at start-up: all at once (bounded by the global limit) when
   * `load.all`, else `load.parallelismDegree` at a time. During the grace window a failed
   * connect is retried instead of leaving the host Disconnected: agents may come up after us.
   */
  async loadAll(): Promise<void> {
    this.startedAt = this.clock.now();
    // Hosts whose deployment a restart cut are the deployer's (resumeAfterRestart).
    // Several controllers: the hosts whose lease we hold (Cluster.start took our share).
    const all = (await this.repo.all<HostRow>('host')).filter((h) => h.agentSecret && !inMaintenance(h.state) && (h.deployPhase ?? 'done') === 'done' && (this.holds(h.uuid) || !this.cluster?.started));
    if (all.length === 0) return;
    const degree = this.configs.getBool('host', 'load.all') ? all.length : this.configs.getInt('host', 'load.parallelismDegree');
    const limit = new Semaphore(degree);
    this.log.info({ hosts: all.length, parallelism: Math.min(degree, all.length) }, 'connecting hosts');
    await Promise.all(all.map((h) => limit.run(() => this.connectWithGrace(h.uuid))));
    this.log.info({ hosts: all.length, connected: this.tracked.size }, 'start-up connect done');
  }

  private async connectWithGrace(uuid: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.connect(uuid);
        return;
      } catch (err) {
        const inGrace = this.clock.now() < this.startedAt + this.graceMs;
        if (!inGrace || this.stopped || (err instanceof HkError && err.code === 'SYS.1006')) {
          this.afterFailedConnect(uuid, err, attempt);
          return;
        }
        await sleep(this.clock, backoffDelay({ initialMs: 1000, maxMs: this.intervalMs }, attempt));
      }
    }
  }

  /** A new per-host secret (bootstrap registration; deployment writes one too). */
  static newSecret(): string {
    return randomBytes(32).toString('hex');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelCheck?.();
    this.cancelReconnects();
    for (const uuid of [...this.tracked.keys()]) this.untrack(uuid);
    for (const u of this.unsubscribe) u();
    await Promise.allSettled([...this.connecting.values()]);
  }
}
