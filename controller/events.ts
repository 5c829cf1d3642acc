/**
 * Domain events (STYLE.md 16): host status and state changes, VM state changes, maintenance
 * started/done/failed, long jobs started/finished.
 *
 * An event belongs to the transaction that made its change, so domain code records it
 * through that transaction: `recordEvent(tx, {...})` writes the event's row in the same
 * commit (the log never shows a change that did not happen, nor misses one that did) and
 * queues it; listeners hear it only once the transaction has committed. The transaction
 * finds the event log through `withCommitHooks`, which core.ts wraps around the repository:
 * that is where the port is injected. A transaction of an unwrapped repository (unit tests
 * that build a service on a bare store) records nothing, at the cost of one WeakMap look-up.
 *
 * The log is bounded: past `cap` rows (plus `slack`, so pruning runs in batches rather than
 * once per event) the oldest are removed in one transaction of their own.
 *
 * Several controllers on one database: a transaction that recorded events also publishes
 * their uuids on the store channel `hk_event` (Tx.notify: only if it commits); every other
 * controller reads those rows and hands them to its own listeners, so a console connected to
 * any controller sees every controller's events live.
 */
import type { EventRow, EventType } from '../protocol/resources.ts';
import { newUuid } from '../protocol/values.ts';
import type { Clock } from './clock.ts';
import type { Logger } from './log.ts';
import { randomBytes } from 'node:crypto';
import type { Repository, Tx } from './store/repository.ts';

export const EVENT_CHANNEL = 'hk_event';
/** Event uuids per notification (a payload must stay under 8,000 bytes). */
const UUIDS_PER_NOTIFY = 150;

export type EventInput = Pick<EventRow, 'type' | 'resourceType' | 'resourceUuid' | 'message'> &
  Partial<Pick<EventRow, 'severity' | 'resourceName' | 'hostUuid' | 'from' | 'to'>>;

export type EventListener = (events: readonly EventRow[]) => void;

interface Pending {
  log: EventLog;
  rows: EventRow[];
}

/** Transactions of wrapped repositories, while they run. */
const open = new WeakMap<object, Pending>();

/** Records an event with the transaction's change; heard by listeners after it commits. */
export async function recordEvent(tx: Tx, e: EventInput): Promise<void> {
  const p = open.get(tx);
  if (!p) return;
  const row: EventRow = {
    uuid: newUuid(), type: e.type, severity: e.severity ?? 'info',
    resourceType: e.resourceType, resourceUuid: e.resourceUuid, resourceName: e.resourceName ?? null,
    hostUuid: e.hostUuid ?? null, from: e.from ?? null, to: e.to ?? null, message: e.message,
    createDate: p.log.clock.now(),
  };
  // An event must never fail the change it reports: a row the store refuses (a store that
  // does not know the kind yet) is logged once and the event is still heard live.
  try {
    await tx.insert<EventRow>('event', row);
  } catch (err) {
    p.log.unstored(err);
  }
  p.rows.push(row);
}

/** Severity of a host status or state change as an operator would rank it. */
export function severityOf(type: EventType, to: string | null): EventRow['severity'] {
  if (type === 'MaintenanceFailed') return 'error';
  if (type === 'HostStatusChanged' && to === 'Disconnected') return 'error';
  if (type === 'VmStateChanged' && to === 'Unknown') return 'warning';
  return 'info';
}

export interface EventLogOptions {
  /** Rows kept (oldest dropped beyond). */
  cap?: number;
  /** Rows allowed past the cap before a prune runs. */
  slack?: number;
}

export class EventLog {
  private readonly listeners = new Set<EventListener>();
  private readonly cap: number;
  private readonly slack: number;
  private rows = 0;
  private pruning: Promise<void> | undefined;
  private repo: Repository | undefined;
  /** Tells this process's notifications from the other controllers'. */
  readonly instance = randomBytes(8).toString('hex');
  private unsubscribe?: () => void;

  constructor(readonly clock: Clock, private readonly log: Logger, opts: EventLogOptions = {}) {
    this.cap = opts.cap ?? 10_000;
    this.slack = opts.slack ?? Math.max(1, Math.floor(this.cap / 20));
  }

  private warned = false;

  /** An event row the store refused (see recordEvent): warned once. */
  unstored(err: unknown): void {
    if (this.warned) return;
    this.warned = true;
    this.log.warn({ err: (err as Error).message }, 'the store refused an event row; events are heard live but not kept');
  }

  /** Reads how many rows the log holds (once, at start). */
  async start(repo: Repository): Promise<void> {
    this.repo = repo;
    this.rows = await repo.count('event', {});
    this.maybePrune();
    this.unsubscribe = repo.subscribe?.(EVENT_CHANNEL, (payload) => void this.fromPeer(payload));
  }

  /** Another controller committed events: read them and tell our listeners. */
  private async fromPeer(payload: string): Promise<void> {
    let m: { from?: unknown; uuids?: unknown };
    try {
      m = JSON.parse(payload) as typeof m;
    } catch {
      return;
    }
    if (m.from === this.instance || !Array.isArray(m.uuids) || !this.repo) return;
    const rows: EventRow[] = [];
    for (const u of m.uuids.slice(0, UUIDS_PER_NOTIFY)) {
      if (typeof u !== 'string') continue;
      const r = await this.repo.get<EventRow>('event', u).catch(() => undefined);
      if (r) rows.push(r);
    }
    if (rows.length > 0) this.committed(rows);
  }

  /** The uuids of a transaction's events, published with it (withCommitHooks). */
  publish(tx: Tx, rows: readonly EventRow[]): void {
    if (typeof tx.notify !== 'function') return;
    for (let i = 0; i < rows.length; i += UUIDS_PER_NOTIFY) {
      tx.notify(EVENT_CHANNEL, JSON.stringify({ from: this.instance, uuids: rows.slice(i, i + UUIDS_PER_NOTIFY).map((r) => r.uuid) }));
    }
  }

  stop(): void {
    this.unsubscribe?.();
  }

  get listening(): boolean {
    return this.listeners.size > 0;
  }

  /** Hears every committed batch of events; returns the unsubscribe function. */
  on(fn: EventListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Called by the commit hook with the events of one committed transaction. */
  committed(rows: EventRow[]): void {
    this.rows += rows.length;
    for (const fn of this.listeners) {
      try {
        fn(rows);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'event listener failed');
      }
    }
    this.maybePrune();
  }

  private maybePrune(): void {
    if (this.pruning || !this.repo || this.rows <= this.cap + this.slack) return;
    const repo = this.repo;
    this.pruning = (async () => {
      // Oldest first by time (a store's all() need not be insertion order); ties keep their order.
      const rows = (await repo.all<EventRow>('event')).sort((x, y) => x.createDate - y.createDate);
      const drop = rows.slice(0, Math.max(0, rows.length - this.cap));
      if (drop.length > 0) await repo.transaction(async (tx) => { for (const r of drop) await tx.remove('event', r.uuid); });
      this.rows = rows.length - drop.length + (this.rows - rows.length);
    })()
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'pruning the event log failed'))
      .finally(() => {
        this.pruning = undefined;
      });
  }

  /** Waits for a prune in flight (tests, shutdown). */
  async settle(): Promise<void> {
    await this.pruning;
  }
}

export interface CommitHooks {
  events?: EventLog;
  /** Seconds each transaction took, committed or not (the metrics port). */
  transactionSeconds?: (seconds: number, ok: boolean) => void;
}

/**
 * The repository with the post-commit hook: every other method is the store's own (bound, so
 * a store keeping state on `this` works unchanged).
 */
export function withCommitHooks<R extends Repository>(repo: R, hooks: CommitHooks): R {
  const transaction = async <T>(fn: (tx: Tx) => Promise<T>): Promise<T> => {
    const t0 = hooks.transactionSeconds ? process.hrtime.bigint() : 0n;
    let pending: Pending | undefined;
    let ok = false;
    try {
      const out = await repo.transaction(async (tx) => {
        if (hooks.events) {
          // A retried transaction (a store may run fn again) starts its list afresh.
          pending = { log: hooks.events, rows: [] };
          open.set(tx, pending);
        }
        const result = await fn(tx);
        if (pending && pending.rows.length > 0) hooks.events!.publish(tx, pending.rows);
        return result;
      });
      ok = true;
      return out;
    } finally {
      if (hooks.transactionSeconds) hooks.transactionSeconds(Number(process.hrtime.bigint() - t0) / 1e9, ok);
      if (ok && pending && pending.rows.length > 0) hooks.events!.committed(pending.rows);
    }
  };
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(repo, {
    get(target, prop) {
      if (prop === 'transaction') return transaction;
      const v = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      let b = bound.get(prop);
      if (!b) bound.set(prop, (b = (v as (...a: unknown[]) => unknown).bind(target)));
      return b;
    },
  });
}
