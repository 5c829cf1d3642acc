/**
 * Several controllers on one database: membership, the hash ring, and host leases with
 * fencing tokens. Only this module knows there may be more than one controller; on the
 * embedded store the same code runs with a single member, which owns every host.
 *
 * Membership. Each controller has a `controller` row (its uuid is kept in the data dir, so a
 * restarted controller is the same member) and bumps its `beats` counter every `heartbeatMs`.
 * A member is live while its counter keeps moving *as this controller observes it*: liveness
 * is judged on the observer's own clock (a member whose counter has not moved for
 * `deadAfterMs` is dead), so controllers' clocks need not agree. The live members, sorted,
 * make the ring (ring.ts).
 *
 * Leases. A `hostLease` row per host names its owner and a token that grows by one every time
 * the host changes hands. A controller acts on a host only while it holds the lease, and every
 * call it makes to the agent carries the token (x-hk-fence, protocol/agent.ts): the agent
 * refuses a token older than the highest it has seen. So a controller that lost a host (it was
 * declared dead while only slow, or cut from the database) cannot act on it, however late its
 * request arrives, once the new owner has spoken to the agent.
 *
 * Hand-over. Every `reconcileMs` a controller compares the leases with the ring: a host the
 * ring gives to someone else is released (owner null) once no work of ours runs on it
 * (`pin`); a host the ring gives to us whose lease is free, or held by a dead member, is taken
 * (token + 1) in a transaction that checks the lease did not move meanwhile. The new owner then
 * connects the host (HostAgents), which also tells the agent where to push from now on.
 *
 * Losing the database: a controller whose heartbeat has not been written for `detachAfterMs`
 * (less than `deadAfterMs`, so it stops before anyone may take its hosts) detaches: it drops
 * every lease from memory (the rows stay), and HostAgents stops pinging and reconnecting. When
 * a heartbeat lands again it re-reads which leases are still its own and attaches.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HkError } from '../../protocol/errors.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { newUuid } from '../../protocol/values.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import type { Repository, Row } from '../store/repository.ts';
import { DEFAULT_VNODES, Ring } from './ring.ts';

export interface ControllerRow extends Row {
  /** Where other controllers reach its internal API (proxied agent calls). */
  apiUrl: string;
  /** Signs the internal calls other controllers make to this one (the database is the trust root). */
  secret: string;
  beats: number;
  startedAt: number;
  heartbeatAt: number;
}

export interface HostLeaseRow extends Row {
  /** The controller holding the host; null when released. */
  owner: string | null;
  /** Grows by one at every change of owner; the agent refuses older ones. */
  token: number;
  since: number;
}

export interface ClusterOptions {
  /** This controller's member uuid (clusterUuidFile keeps it across restarts). */
  uuid: string;
  apiUrl?: string;
  heartbeatMs?: number;
  deadAfterMs?: number;
  detachAfterMs?: number;
  reconcileMs?: number;
  vnodes?: number;
  /** Leases taken or released per transaction. */
  batch?: number;
}

export interface ClusterListener {
  /** Hosts this controller now holds (connect them). */
  gained(hosts: string[]): void;
  /** Hosts this controller no longer holds (stop acting on them). */
  lost(hosts: string[]): void;
  /** The database is unreachable: act on no host. */
  detached(): void;
  /** Back: `hosts` are still ours. */
  attached(hosts: string[]): void;
  /** Members that died (their flows and jobs are to be taken over). */
  died(members: string[]): void;
}

const noListener: ClusterListener = { gained() {}, lost() {}, detached() {}, attached() {}, died() {} };

/** The member uuid of the controller using `dataDir`: made once, kept in `<dataDir>/controller-uuid`. */
export async function memberUuid(dataDir: string): Promise<string> {
  const file = join(dataDir, 'controller-uuid');
  try {
    const text = (await readFile(file, 'utf8')).trim();
    if (/^[0-9a-f]{32}$/.test(text)) return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const uuid = newUuid();
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await writeFile(`${file}.tmp`, `${uuid}\n`, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
  return uuid;
}

export class Cluster {
  readonly uuid: string;
  private readonly o: Required<Omit<ClusterOptions, 'uuid' | 'apiUrl'>> & { apiUrl: string };
  private ring: Ring;
  private readonly seen = new Map<string, { beats: number; changedAt: number; row: ControllerRow }>();
  private liveSet = new Set<string>();
  /** host uuid -> token, for the leases this controller holds. */
  private readonly held = new Map<string, number>();
  private readonly pins = new Map<string, number>();
  private beats = 0;
  private secret = randomBytes(32).toString('hex');
  private lastBeatOk = 0;
  private isDetached = false;
  private isStarted = false;
  private stopped = false;
  private cancelBeat?: () => void;
  private cancelReconcile?: () => void;
  private reconciling?: Promise<void>;
  listener: ClusterListener = noListener;
  /** Counters for tests and metrics. */
  readonly stats = { taken: 0, released: 0, reconciles: 0 };

  constructor(private readonly repo: Repository, private readonly clock: Clock, private readonly log: Logger, opts: ClusterOptions) {
    this.uuid = opts.uuid;
    this.o = {
      apiUrl: opts.apiUrl ?? '', heartbeatMs: opts.heartbeatMs ?? 1000, deadAfterMs: opts.deadAfterMs ?? 5000,
      // 20 leases per transaction: a SERIALIZABLE transaction that reads more rows than
      // PostgreSQL's max_pred_locks_per_transaction (64) has its read locks promoted to whole
      // pages and the relation, and then conflicts with every other writer: at 500 and 100
      // per transaction, releases and takes of three controllers failed (40001) ten times
      // running for minutes under load (bench/cluster.bench.ts, 3,000 hosts).
      detachAfterMs: opts.detachAfterMs ?? 3000, reconcileMs: opts.reconcileMs ?? 2000, vnodes: opts.vnodes ?? DEFAULT_VNODES, batch: opts.batch ?? 20,
    };
    if (this.o.detachAfterMs >= this.o.deadAfterMs) throw new Error('cluster: detachAfterMs must be below deadAfterMs');
    this.ring = new Ring([this.uuid], this.o.vnodes);
  }

  setApiUrl(url: string): void {
    this.o.apiUrl = url;
  }

  /** Joins: writes our row, reads who holds what, takes our share, starts the timers. */
  async start(): Promise<void> {
    const now = this.clock.now();
    await this.repo.transaction(async (tx) => {
      const mine = await tx.get<ControllerRow>('controller', this.uuid);
      this.beats = (mine?.beats ?? 0) + 1;
      const row: ControllerRow = { uuid: this.uuid, apiUrl: this.o.apiUrl, secret: this.secret, beats: this.beats, startedAt: now, heartbeatAt: now };
      if (mine) await tx.update<ControllerRow>('controller', this.uuid, row);
      else await tx.insert<ControllerRow>('controller', row);
    });
    this.lastBeatOk = now;
    this.isStarted = true;
    await this.readMembers();
    for (const l of await this.repo.find<HostLeaseRow>('hostLease', { owner: this.uuid })) this.held.set(l.uuid, l.token);
    await this.reconcile();
    this.scheduleBeat();
    this.scheduleReconcile();
  }

  // ---- what the rest of the controller asks -------------------------------------------------

  /** start() ran: the timers share the hosts (unit tests use connect alone, which takes leases). */
  get started(): boolean {
    return this.isStarted;
  }

  get detached(): boolean {
    return this.isDetached;
  }

  /** The live members, this one included. */
  get members(): string[] {
    return [...this.liveSet].sort();
  }

  isLive(member: string): boolean {
    return member === this.uuid ? !this.isDetached : this.liveSet.has(member);
  }

  /** The member the ring gives `hostUuid` to. */
  ringOwner(hostUuid: string): string {
    return this.ring.ownerOf(hostUuid) ?? this.uuid;
  }

  holds(hostUuid: string): boolean {
    return !this.isDetached && this.held.has(hostUuid);
  }

  /** Our token on the host, or undefined when we do not hold it. */
  tokenOf(hostUuid: string): number | undefined {
    return this.isDetached ? undefined : this.held.get(hostUuid);
  }

  get heldHosts(): string[] {
    return this.isDetached ? [] : [...this.held.keys()];
  }

  /** The controller holding `hostUuid`, as the database says (undefined: nobody, or a dead member). */
  async holderOf(hostUuid: string): Promise<ControllerRow | undefined> {
    const l = await this.repo.get<HostLeaseRow>('hostLease', hostUuid);
    if (!l?.owner || !this.isLive(l.owner)) return undefined;
    return this.seen.get(l.owner)?.row ?? (await this.repo.get<ControllerRow>('controller', l.owner));
  }

  /** The secret other controllers sign their internal calls to us with. */
  get callSecret(): string {
    return this.secret;
  }

  /** Work on `hostUuid` is running here: the lease is not released until every pin is undone. */
  pin(hostUuid: string): () => void {
    this.pins.set(hostUuid, (this.pins.get(hostUuid) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.pins.get(hostUuid) ?? 1) - 1;
      if (n <= 0) this.pins.delete(hostUuid);
      else this.pins.set(hostUuid, n);
    };
  }

  /**
   * Takes the host's lease now if it is free, ours, or held by a dead member (a host just
   * added or registered here, a reconnect asked of us). Returns the token; refuses, naming
   * the holder, when a live controller holds it.
   */
  async acquire(hostUuid: string): Promise<number> {
    if (this.isDetached) throw new HkError('SYS.1000', `controller[uuid:${this.uuid}] has lost its database: it acts on no host until the database is back`);
    const have = this.held.get(hostUuid);
    if (have !== undefined) return have;
    const taken = await this.take([hostUuid], true);
    const token = taken.get(hostUuid);
    if (token === undefined) {
      const l = await this.repo.get<HostLeaseRow>('hostLease', hostUuid);
      throw new HkError('SYS.1006', `host[uuid:${hostUuid}] is held by controller[uuid:${l?.owner}]: it acts on the host`);
    }
    return token;
  }

  /** An agent refused our token: someone else holds the host now. */
  async fenced(hostUuid: string): Promise<void> {
    if (!this.held.delete(hostUuid)) return;
    this.log.warn({ host: hostUuid }, 'an agent refused our lease token: another controller holds the host');
    this.listener.lost([hostUuid]);
  }

  // ---- heartbeat and membership -------------------------------------------------------------

  private scheduleBeat(): void {
    if (this.stopped) return;
    this.cancelBeat = this.clock.setTimer(this.o.heartbeatMs, () => void this.beat().finally(() => this.scheduleBeat()));
  }

  private scheduleReconcile(): void {
    if (this.stopped) return;
    this.cancelReconcile = this.clock.setTimer(this.o.reconcileMs, () => void this.reconcile().finally(() => this.scheduleReconcile()));
  }

  /** One heartbeat: write ours, read the others'. Public for tests driving the clock. */
  async beat(): Promise<void> {
    const now = this.clock.now();
    try {
      this.beats++;
      await this.repo.transaction(async (tx) => {
        const mine = await tx.get<ControllerRow>('controller', this.uuid);
        // Someone removed our row (we were dead long enough to be swept): write it again.
        const row = { uuid: this.uuid, apiUrl: this.o.apiUrl, secret: this.secret, beats: this.beats, startedAt: mine?.startedAt ?? now, heartbeatAt: now };
        if (mine) await tx.update<ControllerRow>('controller', this.uuid, row);
        else await tx.insert<ControllerRow>('controller', row);
      });
      this.lastBeatOk = this.clock.now();
      await this.readMembers();
      if (this.isDetached) await this.attach();
    } catch (err) {
      if (!this.isDetached && this.clock.now() - this.lastBeatOk >= this.o.detachAfterMs) this.detach((err as Error).message);
    }
  }

  private detach(why: string): void {
    this.isDetached = true;
    this.log.error({ why }, 'cannot write to the database: acting on no host until it is back');
    this.listener.detached();
  }

  private async attach(): Promise<void> {
    const mine = await this.repo.find<HostLeaseRow>('hostLease', { owner: this.uuid });
    this.held.clear();
    for (const l of mine) this.held.set(l.uuid, l.token);
    this.isDetached = false;
    this.log.warn({ hosts: this.held.size }, 'the database is back: acting on our hosts again');
    this.listener.attached([...this.held.keys()]);
    void this.reconcile();
  }

  private async readMembers(): Promise<void> {
    const now = this.clock.now();
    const rows = await this.repo.all<ControllerRow>('controller');
    const live = new Set<string>([this.uuid]);
    const died: string[] = [];
    for (const r of rows) {
      const s = this.seen.get(r.uuid);
      // First sight: trust its own heartbeat time for how fresh it is (at most now).
      if (!s) this.seen.set(r.uuid, { beats: r.beats, changedAt: Math.min(now, r.heartbeatAt), row: r });
      else if (s.beats !== r.beats) this.seen.set(r.uuid, { beats: r.beats, changedAt: now, row: r });
      const cur = this.seen.get(r.uuid)!;
      if (r.uuid !== this.uuid && now - cur.changedAt < this.o.deadAfterMs) live.add(r.uuid);
      else if (r.uuid !== this.uuid && this.liveSet.has(r.uuid)) died.push(r.uuid);
    }
    const changed = live.size !== this.liveSet.size || [...live].some((m) => !this.liveSet.has(m));
    if (changed) {
      this.log.warn({ members: [...live].sort(), died }, 'controllers changed: the hosts are shared again');
      this.liveSet = live;
      this.ring = new Ring([...live], this.o.vnodes);
      void this.reconcile();
    }
    if (died.length > 0) this.listener.died(died);
    // Rows of members dead for a day are clutter (a later start with that uuid writes it again).
    const stale = rows.filter((r) => r.uuid !== this.uuid && now - this.seen.get(r.uuid)!.changedAt > 24 * 3600_000);
    if (stale.length > 0 && this.ring.ownerOf(stale[0]!.uuid) === this.uuid) {
      await this.repo.transaction(async (tx) => { for (const r of stale) await tx.remove('controller', r.uuid); }).catch(() => undefined);
    }
  }

  // ---- reconcile: leases against the ring ---------------------------------------------------

  /** Compares every lease with the ring: releases what is no longer ours, takes what is. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.doReconcile().catch((err) => {
      this.log.warn({ err: (err as Error).message }, 'could not compare host leases with the ring');
    }).finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async doReconcile(): Promise<void> {
    if (this.isDetached || this.stopped) return;
    this.stats.reconciles++;
    const leases = await this.repo.all<HostLeaseRow>('hostLease');
    const byHost = new Map(leases.map((l) => [l.uuid, l]));
    const release: string[] = [];
    const take: string[] = [];
    const lost: string[] = [];
    const regained: string[] = [];
    for (const l of leases) {
      const want = this.ringOwner(l.uuid) === this.uuid;
      if (l.owner === this.uuid) {
        if (!want && !this.pins.has(l.uuid)) release.push(l.uuid);
        else if (!this.held.has(l.uuid)) {
          // Ours in the database but not in memory (a release whose write failed, say): act on it again.
          this.held.set(l.uuid, l.token);
          regained.push(l.uuid);
        }
      } else {
        if (this.held.has(l.uuid)) lost.push(l.uuid);
        if (want && (l.owner === null || !this.isLive(l.owner))) take.push(l.uuid);
      }
    }
    // Hosts with no lease yet (never connected under a lease, or from before leases existed).
    // Every 15th round (and the first): the host list too, for hosts without a lease and
    // leases of deleted hosts (removed by whoever the ring gives them to).
    if (this.stats.reconciles === 1 || byHost.size === 0 || this.stats.reconciles % 15 === 0) {
      const hosts = new Set<string>();
      for (const h of await this.repo.all<HostRow>('host')) {
        hosts.add(h.uuid);
        if (!byHost.has(h.uuid) && this.ringOwner(h.uuid) === this.uuid) take.push(h.uuid);
      }
      const gone = leases.filter((l) => !hosts.has(l.uuid) && this.ringOwner(l.uuid) === this.uuid).map((l) => l.uuid);
      if (gone.length > 0) {
        await this.repo.transaction(async (tx) => {
          for (const h of gone) if (!(await tx.get('host', h)) && (await tx.get('hostLease', h))) await tx.remove('hostLease', h);
        });
        for (const h of gone) {
          this.held.delete(h);
          byHost.delete(h);
        }
        for (let i = release.length - 1; i >= 0; i--) if (gone.includes(release[i]!)) release.splice(i, 1);
      }
    }
    for (const h of [...this.held.keys()]) if (!byHost.has(h)) this.held.delete(h);
    if (lost.length > 0) {
      for (const h of lost) this.held.delete(h);
      this.listener.lost(lost);
    }
    if (regained.length > 0) this.listener.gained(regained);
    if (release.length > 0) await this.release(release);
    if (take.length > 0) {
      const got = await this.take(take, false);
      if (got.size > 0) this.listener.gained([...got.keys()]);
    }
  }

  /**
   * Takes the leases of `hosts` that are still free, ours, or a dead member's (checked again
   * inside each transaction), `batch` per transaction. `any`: also hosts the ring gives to
   * another live member (an explicit acquire). Returns host -> token for those taken.
   */
  private async take(hosts: string[], any: boolean): Promise<Map<string, number>> {
    const got = new Map<string, number>();
    for (let i = 0; i < hosts.length; i += this.o.batch) {
      const chunk = hosts.slice(i, i + this.o.batch);
      const now = this.clock.now();
      // A chunk that fails (a conflict) ends this round: what the earlier chunks took is kept
      // and returned (so it is connected); the rest is tried again at the next round.
      const part = await this.repo.transaction(async (tx) => {
        const out = new Map<string, number>();
        for (const h of chunk) {
          if (!(await tx.get('host', h))) continue;
          const l = await tx.get<HostLeaseRow>('hostLease', h);
          if (l?.owner === this.uuid) {
            out.set(h, l.token);
            continue;
          }
          if (l?.owner && this.isLive(l.owner)) continue;
          if (!any && this.ringOwner(h) !== this.uuid) continue;
          const token = (l?.token ?? 0) + 1;
          if (l) await tx.update<HostLeaseRow>('hostLease', h, { owner: this.uuid, token, since: now });
          else await tx.insert<HostLeaseRow>('hostLease', { uuid: h, owner: this.uuid, token, since: now });
          out.set(h, token);
        }
        return out;
      }).catch((err) => {
        if (any) throw err;
        this.log.warn({ hosts: chunk.length, err: (err as Error).message }, 'could not take host leases this round');
        return undefined;
      });
      if (!part) break;
      for (const [h, t] of part) {
        if (!this.held.has(h)) this.stats.taken++;
        this.held.set(h, t);
        got.set(h, t);
      }
    }
    return got;
  }

  private async release(hosts: string[]): Promise<void> {
    // Stop acting first, then say so in the database: never two actors, at worst none for a moment.
    for (const h of hosts) this.held.delete(h);
    this.listener.lost(hosts);
    for (let i = 0; i < hosts.length; i += this.o.batch) {
      const chunk = hosts.slice(i, i + this.o.batch);
      const now = this.clock.now();
      try {
        await this.repo.transaction(async (tx) => {
          for (const h of chunk) {
            const l = await tx.get<HostLeaseRow>('hostLease', h);
            if (l?.owner === this.uuid) await tx.update<HostLeaseRow>('hostLease', h, { owner: null, since: now });
          }
        });
      } catch (err) {
        // Still ours in the database, so nobody else may take them: act on them again rather
        // than leave them unwatched until the next round (measured: minutes under load).
        const back = hosts.slice(i);
        const rows = await Promise.all(back.map((h) => this.repo.get<HostLeaseRow>('hostLease', h).catch(() => undefined)));
        const ours = rows.filter((l): l is HostLeaseRow => l?.owner === this.uuid);
        for (const l of ours) this.held.set(l.uuid, l.token);
        this.log.warn({ hosts: back.length, err: (err as Error).message }, 'could not release hosts; acting on them again until the next round');
        if (ours.length > 0) this.listener.gained(ours.map((l) => l.uuid));
        return;
      }
      this.stats.released += chunk.length;
    }
    this.log.info({ hosts: hosts.length }, 'released hosts the ring gives to other controllers');
  }

  /** Stops the timers; the leases stay ours (a restart with the same uuid keeps them). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelBeat?.();
    this.cancelReconcile?.();
    await this.reconciling;
  }
}
