/**
 * The repository: the only door to persistent state. Narrow on purpose, so that the
 * embedded store (lowdb snapshot + journal) and a PostgreSQL store can both sit behind it
 * without callers changing: every method is async, rows are plain JSON objects keyed by
 * `uuid`, equality lookups are `find`, everything the admin API can ask is `query`.
 *
 * Rows handed out are treated as immutable: change them with `tx.update`, never in place.
 */
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
