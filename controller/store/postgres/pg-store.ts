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
 * Losing the database: a statement or connect that fails with a connection-class error
 * (ECONNREFUSED, ECONNRESET, SQLSTATE class 08, 57P01-57P03 shutdown, a connection timeout)
 * marks the store down (`health()`, `onHealth`) and fails with a StoreUnavailableError
 * ("database unreachable: ...", HTTP 503); any statement that succeeds marks it up again.
 * Calls are not refused while down: each one tries (a stopped server refuses at once; a
 * silent one is cut by `connectTimeoutMs`, and an answer that never comes by the client-side
 * read timeout, statement_timeout + 1 s), so none hangs. Every other database error also
 * becomes a StoreUnavailableError or, for a value the database refuses (SQLSTATE class 22),
 * SYS.1007: no database failure reaches a client as a 500.
 *
 * Notifications (tx.notify, subscribe): NOTIFY inside the transaction, so PostgreSQL sends
 * them at COMMIT and never for a rollback; LISTEN on one dedicated connection (not pooled:
 * a pooled one would be handed to transactions). That connection is also the store's monitor:
 * when it drops (the server stopped, or its backend was terminated) it is opened again, every
 * `retryMs` doubling to `retryMaxMs`; a failed attempt marks the store down, the first that
 * succeeds marks it up, LISTENs every channel again and calls the subscribers' `resync`, since
 * what was published while nobody listened is lost (NOTIFY is not queued for absent listeners).
 * Limit: a connection cut without a FIN or RST (a network partition) is noticed by the next
 * statement that times out, not by the listener (TCP keepalive takes minutes).
 *
 * Limits: a COMMIT whose answer is lost with the connection is reported as a failure though
 * it may have landed (as with any database client); its message says so. Nothing acknowledged
 * is lost: a transaction resolves only after COMMIT answered. Rows are JSONB, so a string holding U+0000 is refused by PostgreSQL, and a row
 * comes back with its keys in JSONB's order, not the order written. See sql.ts for the
 * query language's two documented differences (characters above U+FFFF).
 */
import pg from 'pg';
import { HkError, invalidArgument } from '../../../protocol/errors.ts';
import type { QuerySpec } from '../../../protocol/query.ts';
import type { Kind, ResourceSpec } from '../../../protocol/resources.ts';
import type { StoreLog } from '../embedded-store.ts';
import {
  checkNotification, type QueryResult, type ReadOps, type Repository, type Row, runCommitHooks, type StoreHealth, StoreUnavailableError,
  Subscribers, type Tx, type Where,
} from '../repository.ts';
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
  /** ms to open a connection before the database counts as unreachable (default 5000). */
  connectTimeoutMs?: number;
  /** First wait before the listening connection is opened again, ms (default 100); doubles up to retryMaxMs (default 1000). */
  retryMs?: number;
  retryMaxMs?: number;
  /** The clock of health().since (default Date.now). */
  now?: () => number;
}

const warningsOnly: StoreLog = {
  info() {},
  warn: (fields, msg) => process.emitWarning(`${msg} ${JSON.stringify(fields)}`),
};

/** SQLSTATEs after which the whole transaction is run again. */
const RETRYABLE = new Set(['40001', '40P01']);
const isRetryable = (err: unknown) => RETRYABLE.has((err as { code?: string })?.code ?? '');

/** Socket errors that mean the server cannot be reached (not that it refused a statement). */
const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN',
]);
/** pg's own words when a connection dies or never answers (these errors carry no code). */
const CONNECTION_MESSAGES = /^(Connection terminated|Client has encountered a connection error|Query read timeout)/;

/** The SQLSTATE (or errno code) of a database error, raw or already mapped. */
export function sqlStateOf(err: unknown): string | undefined {
  if (err instanceof StoreUnavailableError) return err.sqlState;
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : undefined;
}

/**
 * Whether `err` says the database cannot be reached: a socket error, SQLSTATE class 08
 * (connection exception), 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect
 * now (starting or stopping), or pg's "connection terminated" / read timeout.
 */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return err.reason === 'unreachable';
  const code = sqlStateOf(err) ?? '';
  if (CONNECTION_ERRNOS.has(code) || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03') return true;
  if (err instanceof AggregateError) return err.errors.some(isConnectionError);
  return code === '' && err instanceof Error && CONNECTION_MESSAGES.test(err.message);
}

/** The error in one line for health().why and messages: its text and code. */
function describe(err: unknown): string {
  const e = err as Error & { code?: string };
  let msg = e?.message || (err instanceof AggregateError ? err.errors.map((x) => (x as Error).message).join('; ') : String(err));
  if (e?.code && !msg.includes(e.code)) msg += ` (${e.code})`;
  return msg.split('\n')[0]!;
}

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
  /** tx.notify's [channel, payload] pairs, sent as NOTIFY just before COMMIT. */
  readonly notes: [string, string][] = [];
  /** The first statement that failed (as pg threw it): the transaction can no longer commit. */
  failure: unknown;

  /** `mapError` turns a database error into what callers see (StoreUnavailableError, ...). */
  constructor(client: pg.PoolClient, mapError: (err: unknown) => unknown) {
    super(async (sql, params) => {
      try {
        return await client.query(sql, params);
      } catch (err) {
        this.failure ??= err;
        throw mapError(err);
      }
    });
  }

  onCommit(fn: () => void): void {
    this.hooks.push(fn);
  }

  notify(channel: string, payload: string): void {
    checkNotification(channel, payload);
    this.notes.push([channel, payload]);
  }

  /** The NOTIFYs, in the order given; PostgreSQL delivers them at COMMIT, to nobody on ROLLBACK. */
  async sendNotes(): Promise<void> {
    for (const [channel, payload] of this.notes) await this.run('SELECT pg_notify($1, $2)', [channel, payload]);
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
  private state: StoreHealth;
  private readonly healthFns = new Set<(h: StoreHealth) => void>();
  private readonly subscribers: Subscribers;
  /** The dedicated LISTEN connection while it is open, and the channels it listens on. */
  private listener: pg.Client | undefined;
  private listened = new Set<string>();
  /** LISTEN/UNLISTEN statements and new subscribers' resyncs, one at a time. */
  private listenChain: Promise<void> = Promise.resolve();
  /** The reconnect loop while it runs (one at a time), and its pending wait. */
  private keeping: Promise<void> | undefined;
  private wait: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    private readonly opts: Required<Omit<PgStoreOptions, 'poolSize'>>,
  ) {
    // Every read through the pool: a success proves the database is there, a failure is mapped.
    let self: PgStore | undefined;
    super(async (sql, params) => {
      try {
        const r = await pool.query(sql, params);
        self!.markUp();
        return r;
      } catch (err) {
        throw self!.failed(err);
      }
    });
    self = this;
    this.state = { ok: true, since: opts.now() };
    this.subscribers = new Subscribers(opts.log);
  }

  /** Connects, applies missing migrations (under the advisory lock) and opens the pool and the listening connection. */
  static async open(url: string, opts: PgStoreOptions = {}): Promise<PgStore> {
    const log = opts.log ?? warningsOnly;
    const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    const client = new pg.Client({ connectionString: url, application_name: 'hostkeeper-migrate', connectionTimeoutMillis: connectTimeoutMs });
    try {
      await client.connect();
    } catch (err) {
      throw new Error(`database ${redact(url)} cannot be reached: ${describe(err)}`);
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
      connectionTimeoutMillis: connectTimeoutMs, keepAlive: true,
      // The server cancels a statement at statement_timeout; this second bound is for an
      // answer that never comes (the server gone silent): the connection is dropped.
      ...(statementTimeoutMs > 0 ? { query_timeout: statementTimeoutMs + 1000 } : {}),
    });
    // An idle connection the server drops must not crash the process; the next use reconnects.
    pool.on('error', (err) => log.warn({ err: err.message }, 'database connection lost'));
    const store = new PgStore(pool, url, {
      log, statementTimeoutMs, maxAttempts: opts.maxAttempts ?? 10, connectTimeoutMs,
      retryMs: opts.retryMs ?? 100, retryMaxMs: opts.retryMaxMs ?? 1000, now: opts.now ?? Date.now,
    });
    try {
      await store.openListener();
    } catch (err) {
      await store.close();
      throw new Error(`database ${redact(url)} cannot be reached: ${describe(err)}`);
    }
    return store;
  }

  // ---- health ------------------------------------------------------------------------

  health(): StoreHealth {
    return { ...this.state };
  }

  onHealth(fn: (h: StoreHealth) => void): () => void {
    this.healthFns.add(fn);
    return () => void this.healthFns.delete(fn);
  }

  private setHealth(ok: boolean, why?: string): void {
    if (this.state.ok === ok || this.closed) return;
    this.state = ok ? { ok, since: this.opts.now() } : { ok, since: this.opts.now(), why };
    if (ok) this.opts.log.info({}, 'database reachable again');
    else this.opts.log.warn({ err: why }, 'database unreachable');
    const h = this.health();
    for (const fn of [...this.healthFns]) {
      try {
        fn(h);
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, 'a store health listener failed');
      }
    }
    // Down: the reconnect loop probes until the database answers again.
    if (!ok) this.keep();
  }

  private markUp(): void {
    if (!this.state.ok) this.setHealth(true);
  }

  /**
   * What a caller sees for a database error (also marks the store down for a connection-class
   * one). HkErrors (the domain's refusals) and errors that are not the database's pass unchanged.
   */
  private failed(err: unknown, during?: 'commit'): unknown {
    if (err instanceof HkError) return err;
    const code = sqlStateOf(err);
    const why = describe(err);
    if (isConnectionError(err)) {
      this.setHealth(false, why);
      const tail = during === 'commit' ? '; the connection was lost during COMMIT, so the change may or may not have been applied: read it back before repeating it' : '';
      return new StoreUnavailableError('unreachable', `database unreachable: ${why}${tail}`, code, { cause: err });
    }
    if (code === '57014') {
      return new StoreUnavailableError('timeout', `the database did not answer within statement_timeout (${this.opts.statementTimeoutMs} ms)`, code, { cause: err });
    }
    if (err instanceof Error && err.message === 'timeout exceeded when trying to connect') {
      return new StoreUnavailableError('busy', `database busy: no free connection within ${this.opts.connectTimeoutMs} ms`, undefined, { cause: err });
    }
    if (code && RETRYABLE.has(code)) {
      return new StoreUnavailableError('busy', `database busy: the transaction conflicted with concurrent ones ${this.opts.maxAttempts} times: ${why}`, code, { cause: err });
    }
    if (code?.startsWith('53')) return new StoreUnavailableError('busy', `database busy: ${why}`, code, { cause: err });
    // Class 22 (data exception): a value PostgreSQL cannot hold, such as U+0000 in a string.
    if (code?.startsWith('22')) return invalidArgument(`the database refused a value: ${why}`);
    // Anything else the server said (it has a SQLSTATE): still not a client's 500.
    if (code && /^[0-9A-Z]{5}$/.test(code)) return new StoreUnavailableError('error', `database error: ${why}`, code, { cause: err });
    return err;
  }

  // ---- notifications -----------------------------------------------------------------

  subscribe(channel: string, fn: (payload: string) => void, resync?: () => void): () => void {
    const [off] = this.subscribers.add(channel, fn, resync);
    // Once LISTEN is in effect (now, or when the listener is back), this subscriber reloads
    // what it may have missed between reading its state and subscribing.
    this.listening(async (c) => {
      if (!this.listened.has(channel)) {
        await c.query(`LISTEN ${channel}`);
        this.listened.add(channel);
      }
      if (resync) this.safely(resync, channel);
    });
    return () => {
      if (!off()) return;
      this.listening(async (c) => {
        if (this.subscribers.channels().includes(channel) || !this.listened.has(channel)) return;
        this.listened.delete(channel);
        await c.query(`UNLISTEN ${channel}`);
      });
    };
  }

  /** Runs `fn` on the listener in turn; skipped when it is not open (the reconnect LISTENs everything). */
  private listening(fn: (c: pg.Client) => Promise<void>): void {
    this.listenChain = this.listenChain.then(async () => {
      const c = this.listener;
      if (!c || this.closed) return;
      try {
        await fn(c);
      } catch (err) {
        // The connection died under it: its 'end' starts the reconnect, which LISTENs again.
        this.opts.log.warn({ err: describe(err) }, 'LISTEN/UNLISTEN failed');
      }
    });
  }

  private safely(fn: () => void, channel: string): void {
    try {
      fn();
    } catch (err) {
      this.opts.log.warn({ channel, err: (err as Error).message }, 'a notification subscriber failed to resync');
    }
  }

  /** Opens the listening connection and LISTENs every subscribed channel. */
  private async openListener(): Promise<void> {
    // Its statements (LISTEN, the SELECT 1 probe) are instant: one unanswered for connectTimeoutMs means a dead connection.
    const c = new pg.Client({
      connectionString: this.url, application_name: 'hostkeeper-listen', connectionTimeoutMillis: this.opts.connectTimeoutMs, keepAlive: true,
      query_timeout: this.opts.connectTimeoutMs,
    });
    // Registered before connect: an error before 'end' must not be an unhandled 'error' event.
    c.on('error', (err) => this.opts.log.warn({ err: describe(err) }, 'database listening connection lost'));
    c.on('notification', (m) => {
      if (this.listener === c) this.subscribers.deliver(m.channel, m.payload ?? '');
    });
    c.on('end', () => {
      if (this.listener !== c) return;
      this.listener = undefined;
      this.listened = new Set();
      this.keep();
    });
    try {
      await c.connect();
      const done = new Set<string>();
      // Channels subscribed while this ran are LISTENed too before the connection is used.
      for (let missing = this.subscribers.channels(); missing.length > 0; missing = this.subscribers.channels().filter((ch) => !done.has(ch))) {
        for (const ch of missing) {
          await c.query(`LISTEN ${ch}`);
          done.add(ch);
        }
      }
      if (this.closed) throw new Error('store is closed');
      this.listened = done;
      this.listener = c;
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
  }

  /** Forgets the listening connection (its late events are ignored) and ends it in the background. */
  private dropListener(): void {
    const c = this.listener;
    this.listener = undefined;
    this.listened = new Set();
    void c?.end().catch(() => undefined);
  }

  /**
   * The reconnect loop (one at a time): while the listener is missing or the store is down,
   * open the listener again (or, with it open, probe with SELECT 1), waiting retryMs, doubling
   * to retryMaxMs, between attempts. Success marks the store up and, after a new LISTEN,
   * calls every subscriber's resync.
   */
  private keep(): void {
    if (this.keeping || this.closed) return;
    this.keeping = (async () => {
      let delay = this.opts.retryMs;
      while (!this.closed && (!this.listener || !this.state.ok)) {
        try {
          const fresh = !this.listener;
          if (fresh) await this.openListener();
          else await this.listener!.query('SELECT 1');
          this.markUp();
          if (fresh) {
            this.opts.log.info({ channels: [...this.listened] }, 'database listening connection open again');
            this.subscribers.resync();
          }
        } catch (err) {
          if (this.closed) break;
          // A listener that failed its probe is given up: the next attempt opens a fresh one.
          if (this.listener) this.dropListener();
          if (isConnectionError(err)) this.setHealth(false, describe(err));
          else this.opts.log.warn({ err: describe(err) }, 'database listening connection cannot be opened');
          await new Promise<void>((wake) => {
            this.wait = { timer: setTimeout(wake, delay), wake };
          });
          this.wait = undefined;
          delay = Math.min(delay * 2, this.opts.retryMaxMs);
        }
      }
    })().finally(() => {
      this.keeping = undefined;
      if (!this.closed && (!this.listener || !this.state.ok)) this.keep();
    });
  }

  // ---- reads and writes --------------------------------------------------------------

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
      if (sqlStateOf(err) === '57014') {
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
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw this.failed(err);
      }
      const tx = new PgTx(client, (e) => this.failed(e));
      // pg emits 'error' on a checked-out connection that dies between statements, and the pool
      // listens only while it is idle: unheard, that event would end the process.
      const lost = (e: Error) => {
        tx.failure ??= e;
      };
      client.on('error', lost);
      const release = (e?: Error) => {
        client.off('error', lost);
        client.release(e);
      };
      let dropped: unknown;
      let begun = false;
      let committing = false;
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        begun = true;
        let result: T;
        try {
          result = await fn(tx);
        } catch (err) {
          // A statement's failure is the cause even when fn wrapped or replaced it.
          throw tx.failure ?? err;
        }
        if (tx.failure) throw tx.failure;
        await tx.sendNotes();
        committing = true;
        await client.query('COMMIT');
        release();
        this.markUp();
        runCommitHooks(tx.hooks, this.opts.log);
        return result;
      } catch (raw) {
        // sendNotes' failure is mapped already: the statement's own error decides a retry.
        const err = tx.failure ?? raw;
        // A connection that cannot even roll back is discarded, not returned to the pool.
        await client.query('ROLLBACK').catch((e: unknown) => (dropped = e ?? new Error('rollback failed')));
        release(dropped ? (dropped as Error) : undefined);
        if (isRetryable(err) && attempt < this.opts.maxAttempts) {
          this.retries++;
          continue;
        }
        // A pooled connection found dead at BEGIN (its backend was ended while it sat idle):
        // nothing ran on it, so one fresh connection is tried before the database counts as lost.
        if (!begun && attempt === 1 && isConnectionError(err)) continue;
        throw this.failed(err, committing ? 'commit' : undefined);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.wait) {
      clearTimeout(this.wait.timer);
      this.wait.wake();
    }
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => undefined);
    await this.keeping?.catch(() => undefined);
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
