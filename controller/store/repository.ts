/**
 * The repository: the only door to persistent state. Narrow on purpose, so that the
 * embedded store (lowdb snapshot + journal) and a PostgreSQL store can both sit behind it
 * without callers changing: every method is async, rows are plain JSON objects keyed by
 * `uuid`, equality lookups are `find`, everything the admin API can ask is `query`.
 *
 * Rows handed out are treated as immutable: change them with `tx.update`, never in place.
 */
import { HkError } from '../../protocol/errors.ts';
import type { QuerySpec } from '../../protocol/query.ts';
import type { Kind, ResourceSpec } from '../../protocol/resources.ts';

export interface Row {
  uuid: string;
}

/** Equality on top-level fields; all must hold. */
export type Where = Record<string, string | number | boolean | null>;

export interface ReadOps {
  get<T extends Row>(kind: Kind, uuid: string): Promise<T | undefined>;
  find<T extends Row>(kind: Kind, where: Where): Promise<T[]>;
  count(kind: Kind, where: Where): Promise<number>;
}

export interface Tx extends ReadOps {
  insert<T extends Row>(kind: Kind, row: T): Promise<T>;
  /** Shallow-merges `patch` into the row; throws if there is none. */
  update<T extends Row>(kind: Kind, uuid: string, patch: Partial<T>): Promise<T>;
  remove(kind: Kind, uuid: string): Promise<void>;
  /**
   * Runs `fn` once the transaction has committed (durably), never if it fails or is retried:
   * the place for events and metrics, which must not fire for a change that did not happen.
   * Hooks run in the order registered, before `transaction()` resolves; one that throws is
   * logged and does not stop the others or fail the (already committed) transaction.
   */
  onCommit(fn: () => void): void;
  /**
   * Publishes `payload` on `channel` to the subscribers of every controller on this store
   * (`Repository.subscribe`), this one's included, once the transaction commits; never if it
   * fails, and once however often a retried `fn` ran. PostgreSQL: NOTIFY inside the
   * transaction (delivered at COMMIT, identical pairs of one transaction folded into one);
   * embedded store: in-process after the commit hooks. `channel` is a lower-case identifier
   * (see NOTIFY_CHANNEL), `payload` under 8000 bytes: say what changed, let the subscriber
   * read the rest from the store.
   */
  notify(channel: string, payload: string): void;
}

export interface QueryResult<T> {
  rows: T[];
  total?: number;
}

export interface Repository extends ReadOps {
  /**
   * Runs `fn` as one atomic, durable change: all its writes land or none do, and the
   * promise resolves only once they are on disk. Writers are serialised (PostgreSQL:
   * SERIALIZABLE); `fn` must not do network I/O (talk to agents outside, then record the
   * outcome in a transaction) nor any other side effect: the PostgreSQL store runs `fn` again
   * when the database reports a serialization failure, so `fn` may run more than once.
   * Side effects that must follow the change go in `tx.onCommit`.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Evaluates an admin query; `scope` adds fixed equality conditions (e.g. tag type). */
  query<T extends Row>(res: ResourceSpec, spec: QuerySpec, scope?: Where): Promise<QueryResult<T>>;
  /** Every row of a kind, in insertion order (start-up scans, small kinds). */
  all<T extends Row>(kind: Kind): Promise<T[]>;
  close(): Promise<void>;
  /**
   * Hears `tx.notify(channel, ...)` of every controller on this store, after commit, in commit
   * order per publisher. Delivery is at most once: a PostgreSQL listener whose connection
   * dropped misses what was published meanwhile, so `resync` is called each time the
   * subscription (re)becomes effective (PostgreSQL: after LISTEN, at first and after every
   * reconnect; the embedded store misses nothing and never calls it): reload from the store
   * whatever the notifications stand for. Both callbacks are called outside any
   * transaction; one that throws is logged. Returns the unsubscribe function.
   */
  subscribe(channel: string, fn: (payload: string) => void, resync?: () => void): () => void;
  /**
   * Whether the store can answer now (PostgreSQL: the last statement or probe reached the
   * database). Absent or always ok on the embedded store. While it is down, calls fail with
   * a StoreUnavailableError (HTTP 503) rather than hang.
   */
  health?(): StoreHealth;
  /** Calls `fn` on every change of `health()` (down -> up, up -> down); returns the unsubscribe function. */
  onHealth?(fn: (h: StoreHealth) => void): () => void;
}

export interface StoreHealth {
  ok: boolean;
  /** ms since the epoch (the store's clock) when `ok` last changed (or the store opened). */
  since: number;
  /** Why it is down: the last connection error, in words. */
  why?: string;
}

/** What a notification channel may be called: a PostgreSQL identifier that needs no quoting. */
export const NOTIFY_CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
export const NOTIFY_MAX_BYTES = 7999;

/** Refuses a channel or payload that one of the stores could not carry (both check, so tests on the embedded store catch it). */
export function checkNotification(channel: string, payload: string): void {
  if (!NOTIFY_CHANNEL.test(channel)) throw new Error(`notification channel[${channel}] must match ${NOTIFY_CHANNEL}`);
  if (typeof payload !== 'string' || Buffer.byteLength(payload) > NOTIFY_MAX_BYTES) {
    throw new Error(`notification payload on channel[${channel}] must be a string of at most ${NOTIFY_MAX_BYTES} bytes`);
  }
}

/**
 * The store cannot answer for a reason outside the request: the database is unreachable
 * (`unreachable`; then the store's health is down), did not answer in time (`timeout`), is
 * out of connections or kept conflicting (`busy`), or failed otherwise (`error`). Travels
 * with HTTP 503 so that no database failure reaches a client as a 500; `sqlState` keeps
 * PostgreSQL's code (or the socket's errno, ECONNREFUSED...) when there was one.
 *
 * The catalogue (protocol/errors.ts) has no code of its own for this yet: unreachable, busy
 * and error are SYS.1000 with status 503, timeout is SYS.1001 (503 already).
 */
export class StoreUnavailableError extends HkError {
  constructor(
    readonly reason: 'unreachable' | 'timeout' | 'busy' | 'error',
    details: string,
    readonly sqlState?: string,
    options?: { cause?: unknown },
  ) {
    super(reason === 'timeout' ? 'SYS.1001' : 'SYS.1000', details, 503);
    this.name = 'StoreUnavailableError';
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** Subscribers of one store, by channel: delivery and resync with failures logged (both stores use it). */
export class Subscribers {
  private readonly byChannel = new Map<string, Set<{ fn: (payload: string) => void; resync?: () => void }>>();
  constructor(private readonly log: { warn(fields: object, msg: string): void }) {}

  /** Adds one; returns [unsubscribe, whether it is the channel's first]. */
  add(channel: string, fn: (payload: string) => void, resync?: () => void): [() => boolean, boolean] {
    if (!NOTIFY_CHANNEL.test(channel)) throw new Error(`notification channel[${channel}] must match ${NOTIFY_CHANNEL}`);
    let set = this.byChannel.get(channel);
    const first = !set;
    if (!set) this.byChannel.set(channel, (set = new Set()));
    const sub = { fn, resync };
    set.add(sub);
    // Returns whether the channel has no subscriber left.
    return [() => {
      if (!set!.delete(sub) || set!.size > 0) return false;
      if (this.byChannel.get(channel) === set) this.byChannel.delete(channel);
      return true;
    }, first];
  }
  channels(): string[] {
    return [...this.byChannel.keys()];
  }
  deliver(channel: string, payload: string): void {
    for (const s of [...(this.byChannel.get(channel) ?? [])]) {
      try {
        s.fn(payload);
      } catch (err) {
        this.log.warn({ channel, err: (err as Error).message }, 'a notification subscriber failed');
      }
    }
  }
  /** Calls `resync` of the channel's subscribers (every channel's when none is named). */
  resync(channel?: string): void {
    for (const ch of channel === undefined ? this.channels() : [channel]) {
      for (const s of [...(this.byChannel.get(ch) ?? [])]) {
        try {
          s.resync?.();
        } catch (err) {
          this.log.warn({ channel: ch, err: (err as Error).message }, 'a notification subscriber failed to resync');
        }
      }
    }
  }
}

/** Runs after-commit hooks (see Tx.onCommit): every one, in order; failures are logged. */
export function runCommitHooks(hooks: readonly (() => void)[], log: { warn(fields: object, msg: string): void }): void {
  for (const fn of hooks) {
    try {
      fn();
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'an after-commit hook failed');
    }
  }
}
