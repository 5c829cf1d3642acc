/**
 * The PostgreSQL store: the Repository contract (controller/store/repository.ts) over one
 * table of JSONB rows (migrations/001_rows.sql), for controllers that share a database.
 *
 * Transactions are SERIALIZABLE, so that the embedded store's "writers are serialised" holds
 * here too (check-then-insert, as inventory.ts does for a management IP, stays correct with
 * several controllers). PostgreSQL may then abort one of two conflicting transactions with a
 * serialization failure (40001) or a deadlock (40P01); the whole `fn` is run again on a fresh
 * transaction, up to `maxAttempts` times, at once (SSI guarantees that a retried transaction
 * does not fail again on the same, now committed, conflict). That is why `fn` must have no
 * side effects: anything that must follow the change goes in `tx.onCommit`, run after COMMIT.
 *
 * The embedded store lets a caller catch a refused insert (duplicate uuid, unique field) and
 * carry on in the same transaction; PostgreSQL aborts a transaction on any failed statement.
 * So refusals are found without failing a statement: INSERT ... ON CONFLICT DO NOTHING, then
 * ask why nothing was inserted; an update that would break a UNIQUE field is checked first.
 * A statement that fails anyway leaves the transaction unable to commit: if `fn` swallows
 * that error, the transaction still fails with it (never a silent rollback reported as done).
 *
 * The query budget: QUERY_LIMITS' parse-time limits apply unchanged (protocol/query.ts).
 * The embedded store's LIKE step count has no meaning here (PostgreSQL does not hold the
 * controller's event loop); its equivalent is `statement_timeout` on every pooled connection
 * (default 2 s): a query past it is refused with SYS.1007 naming the limit. It applies to
 * every statement, transactions' included; migrations run on a connection of their own
 * without it.
 *
 * Limits: a COMMIT whose answer is lost with the connection is reported as a failure though
 * it may have landed (as with any database client; the later "database lost" work decides
 * what a controller does then). Rows are JSONB, so a string holding U+0000 is refused by PostgreSQL, and a row
 * comes back with its keys in JSONB's order, not the order written. See sql.ts for the
 * query language's two documented differences (characters above U+FFFF).
 */
import pg from 'pg';
import { HkError, invalidArgument } from '../../../protocol/errors.ts';
import type { QuerySpec } from '../../../protocol/query.ts';
import type { Kind, ResourceSpec } from '../../../protocol/resources.ts';
import type { StoreLog } from '../embedded-store.ts';
import { type QueryResult, type ReadOps, type Repository, type Row, runCommitHooks, type Tx, type Where } from '../repository.ts';
import { KINDS, RESOURCE_KINDS, uniqueFields } from '../schema.ts';
import { migrate } from './migrate.ts';
import { compileQuery, kindLit, lit, Params, whereSql } from './sql.ts';

export interface PgStoreOptions {
  log?: StoreLog;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** statement_timeout of every pooled connection, ms (default 2000). */
  statementTimeoutMs?: number;
  /** Runs of one transaction before a serialization failure is given up (default 10). */
  maxAttempts?: number;
}

const warningsOnly: StoreLog = {
  info() {},
  warn: (fields, msg) => process.emitWarning(`${msg} ${JSON.stringify(fields)}`),
};

/** SQLSTATEs after which the whole transaction is run again. */
const RETRYABLE = new Set(['40001', '40P01']);
const isRetryable = (err: unknown) => RETRYABLE.has((err as { code?: string })?.code ?? '');

type Run = (sql: string, params?: unknown[]) => Promise<pg.QueryResult>;

/** get/find/count over one connection (a transaction's) or the pool. */
class Reads implements ReadOps {
  constructor(protected readonly run: Run) {}

  async get<T extends Row>(kind: Kind, uuid: string): Promise<T | undefined> {
    const r = await this.run(`SELECT data FROM hk_row WHERE kind = ${kindLit(kind)} AND uuid = $1`, [uuid]);
    return r.rows[0]?.data as T | undefined;
  }
  async find<T extends Row>(kind: Kind, where: Where): Promise<T[]> {
    const P = new Params();
    const r = await this.run(`SELECT a.data FROM hk_row a WHERE ${whereSql(kind, where, 'a', P)} ORDER BY a.ord`, P.values);
    return r.rows.map((x) => x.data as T);
  }
  async count(kind: Kind, where: Where): Promise<number> {
    const P = new Params();
    const r = await this.run(`SELECT count(*)::int AS n FROM hk_row a WHERE ${whereSql(kind, where, 'a', P)}`, P.values);
    return r.rows[0].n as number;
  }
}

class PgTx extends Reads implements Tx {
  readonly hooks: (() => void)[] = [];
  /** The first statement that failed: the transaction can no longer commit. */
  failure: unknown;

  constructor(client: pg.PoolClient) {
    super(async (sql, params) => {
      try {
        return await client.query(sql, params);
      } catch (err) {
        this.failure ??= err;
        throw err;
      }
    });
  }

  onCommit(fn: () => void): void {
    this.hooks.push(fn);
  }

  async insert<T extends Row>(kind: Kind, row: T): Promise<T> {
    const r = await this.run(
      `INSERT INTO hk_row (kind, uuid, data) VALUES (${kindLit(kind)}, $1, $2::jsonb) ON CONFLICT DO NOTHING`,
      [row.uuid, JSON.stringify(row)],
    );
    if (r.rowCount === 1) return row;
    // Nothing inserted: say which rule refused it, with the embedded store's words.
    if (await this.get(kind, row.uuid)) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}] already exists`);
    if (KINDS[kind].resource) {
      const other = await this.run(
        `SELECT kind FROM hk_row WHERE uuid = $1 AND kind IN (${RESOURCE_KINDS.map(lit).join(', ')})`, [row.uuid],
      );
      if (other.rows[0]) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}]: the uuid is already used by a ${other.rows[0].kind}`);
    }
    await this.checkUnique(kind, row);
    throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}] conflicts with a row written meanwhile`);
  }

  async update<T extends Row>(kind: Kind, uuid: string, patch: Partial<T>): Promise<T> {
    const rec = patch as Record<string, unknown>;
    const unique = uniqueFields(kind).filter((f) => rec[f] !== undefined && rec[f] !== null);
    if (unique.length > 0) await this.checkUnique(kind, { ...rec, uuid } as Row, unique);
    // A key set to undefined leaves the row, as `{...cur, ...patch}` written as JSON does.
    const gone = Object.keys(rec).filter((k) => rec[k] === undefined);
    const r = await this.run(
      `UPDATE hk_row SET data = (data || $2::jsonb) - $3::text[] WHERE kind = ${kindLit(kind)} AND uuid = $1 RETURNING data`,
      [uuid, JSON.stringify({ ...rec, uuid }), gone],
    );
    if (r.rowCount === 0) throw new HkError('SYS.1007', `${kind}[uuid:${uuid}] is not found`, 404);
    return r.rows[0].data as T;
  }

  async remove(kind: Kind, uuid: string): Promise<void> {
    await this.run(`DELETE FROM hk_row WHERE kind = ${kindLit(kind)} AND uuid = $1`, [uuid]);
  }

  /** Refuses `row` when another row of the kind holds one of its unique values. */
  private async checkUnique(kind: Kind, row: Row, fields = uniqueFields(kind)): Promise<void> {
    const rec = row as unknown as Record<string, string | number | boolean | null>;
    for (const f of fields) {
      const v = rec[f];
      if (v === null || v === undefined) continue;
      const other = (await this.find(kind, { [f]: v })).find((r) => r.uuid !== row.uuid);
      if (other) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}]: ${f}[${v}] is already used by ${kind}[uuid:${other.uuid}]`);
    }
  }
}

export class PgStore extends Reads implements Repository {
  /** Transactions run again after a serialization failure (for tests and the bench). */
  retries = 0;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly opts: Required<Omit<PgStoreOptions, 'poolSize'>>,
  ) {
    super((sql, params) => pool.query(sql, params));
  }

  /** Connects, applies missing migrations (under the advisory lock) and opens the pool. */
  static async open(url: string, opts: PgStoreOptions = {}): Promise<PgStore> {
    const log = opts.log ?? warningsOnly;
    const client = new pg.Client({ connectionString: url, application_name: 'hostkeeper-migrate' });
    try {
      await client.connect();
    } catch (err) {
      throw new Error(`database ${redact(url)} cannot be reached: ${(err as Error).message}`);
    }
    try {
      const applied = await migrate(client);
      if (applied.length > 0) log.info({ applied }, 'applied database migrations');
    } finally {
      await client.end();
    }
    const statementTimeoutMs = opts.statementTimeoutMs ?? 2000;
    const pool = new pg.Pool({
      connectionString: url, max: opts.poolSize ?? 10, statement_timeout: statementTimeoutMs, application_name: 'hostkeeper',
    });
    // An idle connection the server drops must not crash the process; the next use reconnects.
    pool.on('error', (err) => log.warn({ err: err.message }, 'database connection lost'));
    return new PgStore(pool, { log, statementTimeoutMs, maxAttempts: opts.maxAttempts ?? 10 });
  }

  async all<T extends Row>(kind: Kind): Promise<T[]> {
    const r = await this.run(`SELECT data FROM hk_row WHERE kind = ${kindLit(kind)} ORDER BY ord`);
    return r.rows.map((x) => x.data as T);
  }

  async query<T extends Row>(res: ResourceSpec, spec: QuerySpec, scope?: Where): Promise<QueryResult<T>> {
    const q = compileQuery(res, spec, scope);
    const out: QueryResult<T> = { rows: [] };
    try {
      // The page's two parameters follow the conditions'.
      const n = q.params.values.length;
      const page = `LIMIT $${n + 1} OFFSET $${n + 2}`;
      const withPage = [...q.params.values, spec.limit, spec.start];
      if (spec.count) {
        const r = await this.run(`SELECT count(*)::int AS n ${q.from}`, q.params.values);
        out.total = r.rows[0].n as number;
      } else if (spec.replyWithCount) {
        // Page and total in one statement, so from one snapshot, as the embedded store counts
        // the rows it pages through (two statements could disagree under concurrent writes).
        // The page travels as one array, ordered by the aggregate itself: a subquery's order
        // is not guaranteed to survive the outer query.
        const r = await this.run(
          `SELECT (SELECT count(*)::int ${q.from}) AS n, ` +
            `(SELECT coalesce(jsonb_agg(p.data ORDER BY p.i), '[]'::jsonb) FROM (SELECT a.data, row_number() OVER (ORDER BY ${q.order}) AS i ${q.from} ORDER BY ${q.order} ${page}) p) AS rows`,
          withPage,
        );
        out.total = r.rows[0].n as number;
        out.rows = r.rows[0].rows as T[];
      } else {
        const r = await this.run(`SELECT a.data ${q.from} ORDER BY ${q.order} ${page}`, withPage);
        out.rows = r.rows.map((x) => x.data as T);
      }
    } catch (err) {
      if ((err as { code?: string }).code === '57014') {
        throw invalidArgument(
          `query ran past the store's statement_timeout of ${this.opts.statementTimeoutMs} ms (the limit); narrow it with an equality on an indexed field (uuid, managementIp, clusterUuid, zoneUuid, state, status) or a pattern anchored at the start`,
        );
      }
      throw err;
    }
    return out;
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new Error('store is closed');
      const client = await this.pool.connect();
      const tx = new PgTx(client);
      let dropped: unknown;
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        let result: T;
        try {
          result = await fn(tx);
        } catch (err) {
          // A statement's failure is the cause even when fn wrapped or replaced it.
          throw tx.failure ?? err;
        }
        if (tx.failure) throw tx.failure;
        await client.query('COMMIT');
        client.release();
        runCommitHooks(tx.hooks, this.opts.log);
        return result;
      } catch (err) {
        // A connection that cannot even roll back is discarded, not returned to the pool.
        await client.query('ROLLBACK').catch((e: unknown) => (dropped = e ?? new Error('rollback failed')));
        client.release(dropped ? (dropped as Error) : undefined);
        if (isRetryable(err) && attempt < this.opts.maxAttempts) {
          this.retries++;
          continue;
        }
        throw err;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}
