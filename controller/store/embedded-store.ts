/**
 * The embedded store: every row in memory, made durable by a JSON snapshot plus an
 * append-only journal.
 *
 * Why not one JSON file rewritten per write (lowdb's model): with 10,000 hosts and 100,000
 * VMs that file is ~40 MB and a rewrite takes ~0.5 s, far from the 10 ms a state change may
 * take. So each transaction appends one JSON line to `journal.ndjson` and fdatasyncs it
 * (concurrent transactions share one sync: group commit, ~1 ms here); the snapshot
 * `store.json` is rewritten (temp file, fdatasync, rename, directory fsync) when the journal
 * has grown as large as the live data (see `compactAt`), at start when an earlier run left
 * such a journal, and on clean shutdown.
 *
 * Crash safety: a transaction's promise resolves only after its journal line is synced.
 * On load the snapshot is read, then journal lines with a higher sequence number are
 * replayed; a torn last line (kill -9 mid-write) was never acknowledged and is cut off.
 *
 * Secrecy: the store holds sessions, every host's HMAC secret and the admin password hash,
 * so the data dir is 0700 and every file written here 0600; a looser dir or file found at
 * open is tightened and the change logged. The mode is set when a file is created (never
 * created loose, then narrowed), so there is no window in which another user can open it.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HkError } from '../../protocol/errors.ts';
import type { QuerySpec } from '../../protocol/query.ts';
import { type Kind, RESOURCES, type ResourceSpec } from '../../protocol/resources.ts';
import { evaluateQuery } from './memory-query.ts';
import { checkNotification, type QueryResult, type Repository, type Row, runCommitHooks, Subscribers, type Tx, type Where } from './repository.ts';
import { indexKeys, JOINS, KIND_NAMES, KINDS, RESOURCE_KINDS, uniqueFields } from './schema.ts';

/**
 * Fields kept in equality indexes, from the schema both stores read (controller/store/schema.ts);
 * `vmNics.ip` indexes every NIC of a VM.
 */
const INDEXES: Partial<Record<Kind, Record<string, (row: any) => unknown[]>>> = Object.fromEntries(
  KIND_NAMES.map((k) => [k, Object.fromEntries(Object.entries(KINDS[k].indexes ?? {}).map(([f, spec]) => [f, indexKeys(f, spec)]))]),
);

/**
 * Link fields of a child table that a join probes from its parent (`vm.hostUuid` for
 * `vmInstance.*` on hosts: JOINS in schema.ts where the parent's key is its uuid). The table keeps
 * the rows themselves by that field's value (`Table.linked`), so a probe walks a host's VMs
 * without looking each one up by uuid: a lookup in a 100,000-row map is a cache miss, and that
 * made probing all of them ~10x slower than scanning the table (controller/store/memory-query.ts).
 */
const LINKS: Partial<Record<Kind, string[]>> = {};
for (const res of Object.values(RESOURCES)) {
  for (const [name, nest] of Object.entries((res as ResourceSpec).nested ?? {})) {
    const join = JOINS[name];
    if (join?.parentKey === 'uuid' && !(LINKS[nest.kind] ?? []).includes(join.childKey)) (LINKS[nest.kind] ??= []).push(join.childKey);
  }
}

type Change = [kind: Kind, uuid: string, row: Row | null];

function sameKeys(a: unknown[], b: unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Snapshot {
  version: 1;
  seq: number;
  tables: Partial<Record<Kind, Row[]>>;
}

class Table {
  readonly rows = new Map<string, Row>();
  readonly ordinal = new Map<string, number>();
  readonly indexes = new Map<string, Map<unknown, Set<string>>>();
  /**
   * Rows by the value of each link field (LINKS above), for join probes. Arrays, not sets:
   * a probe walks them (an array walk is several times cheaper than a Set's), and a host has
   * tens of VMs, so removing one by search costs little.
   */
  readonly linked = new Map<string, Map<unknown, Row[]>>();
  private next = 0;
  /** [key function, its index], built once: put() runs for every row at start-up. */
  private readonly list: [(row: any) => unknown[], Map<unknown, Set<string>>][];
  private readonly links: [string, Map<unknown, Row[]>][];
  constructor(private readonly defs: Record<string, (row: any) => unknown[]>, links: readonly string[] = []) {
    for (const name of Object.keys(defs)) this.indexes.set(name, new Map());
    this.list = Object.entries(defs).map(([name, keys]) => [keys, this.indexes.get(name)!]);
    for (const f of links) this.linked.set(f, new Map());
    this.links = [...this.linked];
  }
  /** Files `row` under its link values in place of `old` (a replaced row is a new object). */
  private link(old: Row | undefined, row: Row | undefined): void {
    for (const [f, by] of this.links) {
      const was = old && (old as unknown as Record<string, unknown>)[f];
      const now = row && (row as unknown as Record<string, unknown>)[f];
      if (old && was !== null && was !== undefined) {
        const list = by.get(was)!;
        const i = list.indexOf(old);
        if (now === was && row) {
          list[i] = row;
          continue;
        }
        list.splice(i, 1);
        if (list.length === 0) by.delete(was);
      }
      if (row && now !== null && now !== undefined) {
        const list = by.get(now);
        if (list) list.push(row);
        else by.set(now, [row]);
      }
    }
  }
  /**
   * Adds or replaces a row. On replace only index keys that changed are moved: most
   * changes touch one indexed field (a host's status), and re-filing all five keys of a
   * host made replaying 100,000 such changes (bench/store-startup.bench.ts) take ~0.95 s
   * instead of ~0.67 s (medians of 7 cold opens).
   */
  put(row: Row): void {
    const old = this.rows.get(row.uuid);
    if (!old) this.ordinal.set(row.uuid, this.next++);
    this.rows.set(row.uuid, row);
    if (this.links.length) this.link(old, row);
    for (const [keys, idx] of this.list) {
      const now = keys(row);
      if (old) {
        const was = keys(old);
        if (sameKeys(was, now)) continue;
        for (const k of was) this.unfile(idx, k, row.uuid);
      }
      for (const k of now) {
        let set = idx.get(k);
        if (!set) idx.set(k, (set = new Set()));
        set.add(row.uuid);
      }
    }
  }
  delete(uuid: string): void {
    const old = this.rows.get(uuid);
    if (!old) return;
    for (const [keys, idx] of this.list) for (const k of keys(old)) this.unfile(idx, k, uuid);
    if (this.links.length) this.link(old, undefined);
    this.rows.delete(uuid);
    this.ordinal.delete(uuid);
  }
  private unfile(idx: Map<unknown, Set<string>>, key: unknown, uuid: string): void {
    const set = idx.get(key);
    if (!set) return;
    set.delete(uuid);
    if (set.size === 0) idx.delete(key);
  }
  /** Uuids with `field == value` from an index, or undefined when the field has none. */
  lookup(field: string, value: unknown): Set<string> | undefined {
    const idx = this.indexes.get(field);
    if (!idx) return undefined;
    return idx.get(value) ?? new Set();
  }
  find(where: Where): Row[] {
    const entries = Object.entries(where);
    let candidates: Set<string> | undefined;
    for (const [f, v] of entries) {
      const hit = this.lookup(f, v);
      if (hit && (!candidates || hit.size < candidates.size)) candidates = hit;
    }
    const source: Iterable<Row> = candidates
      ? [...candidates].map((u) => this.rows.get(u)!).sort((a, b) => this.ordinal.get(a.uuid)! - this.ordinal.get(b.uuid)!)
      : this.rows.values();
    const out: Row[] = [];
    for (const r of source) if (this.matches(r, entries)) out.push(r);
    return out;
  }
  /** Equality on each field; an indexed field is compared through its index keys (`vmNics.ip`). */
  matches(row: Row, entries: [string, unknown][]): boolean {
    const rec = row as unknown as Record<string, unknown>;
    for (const [f, v] of entries) {
      const keys = this.defs[f];
      if (keys ? !keys(row).includes(v) : (rec[f] ?? null) !== v) return false;
    }
    return true;
  }
}

/** Where the store reports what it changed on disk by itself; pino's Logger fits. */
export interface StoreLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

/** Without a logger, warnings still reach stderr; information is dropped. */
const warningsOnly: StoreLog = {
  info() {},
  warn: (fields, msg) => process.emitWarning(`${msg} ${JSON.stringify(fields)}`),
};

export interface EmbeddedStoreOptions {
  /**
   * Smallest journal folded into a snapshot (default 4 MiB): a journal that size replays in
   * ~0.15 s (17.6 MB took ~0.6 s, bench/store-startup.bench.ts), and folding a tiny store
   * every few writes would buy nothing.
   */
  compactBytes?: number;
  /**
   * Fold the journal into a snapshot once it is this many times the last snapshot's size
   * (default 1), instead of at a fixed size: start-up then replays at most as many journal
   * bytes as the snapshot holds. Measured: a 9.2 MB snapshot opened in 0.4-0.65 s alone and
   * 0.57-0.67 s with a 9.2 MB journal of updates, so start-up stays under twice the
   * snapshot's load. The rewrite costs at most one snapshot byte per journal byte.
   */
  compactRatio?: number;
  /** fdatasync every commit (default). Off only for throwaway test stores. */
  sync?: boolean;
  log?: StoreLog;
}

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const MiB = 1024 * 1024;

export class EmbeddedStore implements Repository {
  private readonly tables = new Map<Kind, Table>();
  private seq = 0;
  private journal!: FileHandle;
  private journalBytes = 0;
  /** Size of the snapshot last read or written: the estimate of the live data's size. */
  private snapshotBytes = 0;
  /** After a failed automatic compaction, the journal size at which to try again. */
  private retryCompactAt = 0;
  private pending: { line: string; seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  /** snapshot() callers waiting for the compaction they asked for. */
  private compactWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private txChain: Promise<unknown> = Promise.resolve();
  private readonly snapshotFile: string;
  private readonly tempFile: string;
  private readonly journalFile: string;
  private closed = false;
  /** tx.notify's subscribers: one process holds the store, so delivery is in-process. */
  private readonly subscribers: Subscribers;

  private constructor(readonly dir: string, private readonly opts: Required<EmbeddedStoreOptions>) {
    this.subscribers = new Subscribers(opts.log);
    this.snapshotFile = join(dir, 'store.json');
    // The name lowdb used, so a temp file an older version left behind is cleaned up too.
    this.tempFile = join(dir, '.store.json.tmp');
    this.journalFile = join(dir, 'journal.ndjson');
  }

  static async open(dir: string, opts: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    const log = opts.log ?? warningsOnly;
    try {
      await mkdir(dir, { recursive: true, mode: DIR_MODE });
      await tighten(dir, DIR_MODE, 'data dir', log);
    } catch (err) {
      throw new Error(`data dir ${dir} cannot be used: ${(err as Error).message}`);
    }
    const store = new EmbeddedStore(dir, {
      compactBytes: opts.compactBytes ?? 4 * MiB,
      compactRatio: opts.compactRatio ?? 1,
      sync: opts.sync ?? true,
      log,
    });
    await store.load();
    return store;
  }

  private table(kind: Kind): Table {
    let t = this.tables.get(kind);
    if (!t) this.tables.set(kind, (t = new Table(INDEXES[kind] ?? {}, LINKS[kind])));
    return t;
  }

  /** Journal size at which it is folded into a snapshot: as large as the live data, or the floor. */
  private compactAt(): number {
    return Math.max(this.opts.compactBytes, this.opts.compactRatio * this.snapshotBytes);
  }

  private async load(): Promise<void> {
    await this.loadSnapshot();
    const created = await this.openJournal();
    // Byte offsets come straight from the buffer: the old loop measured the UTF-8 length of
    // everything before each line (Buffer.byteLength(text.slice(0, pos))), quadratic in the
    // journal: 6.1 of 6.4 s opening 20,000 changes. Limit: the journal is read whole, so it
    // must fit one Buffer (4 GiB); compaction keeps it near the live data's size.
    let buf: Buffer = Buffer.alloc(0);
    if (!created) buf = await this.journal.readFile();
    let good = 0;
    while (good < buf.length) {
      const nl = buf.indexOf(10, good);
      if (nl < 0) break; // torn tail: never acknowledged
      let entry: { s: number; o: Change[] };
      try {
        entry = JSON.parse(buf.toString('utf8', good, nl));
      } catch {
        break;
      }
      if (entry.s > this.seq) {
        this.apply(entry.o);
        this.seq = entry.s;
      }
      good = nl + 1;
    }
    if (good !== buf.length) {
      // Only a crash mid-append leaves this, and what it cut was never acknowledged.
      this.opts.log.warn({ file: this.journalFile, offset: good, bytes: buf.length - good }, 'cut a torn journal tail');
      await this.journal.truncate(good);
      await this.journal.datasync();
    }
    this.journalBytes = good;
    if (this.journalBytes > 0 && this.journalBytes >= this.compactAt()) {
      // An earlier run died before folding its journal (kill -9s keep it growing across
      // starts): fold it now, before anything is written, so the next start is fast too.
      this.opts.log.info({ journalBytes: this.journalBytes, snapshotBytes: this.snapshotBytes }, 'folding the journal into a snapshot at start');
      try {
        await this.compact();
      } catch (err) {
        // The journal holds everything: start anyway, and retry as a running store would.
        this.retryCompactAt = this.journalBytes + this.opts.compactBytes;
        this.opts.log.warn({ file: this.snapshotFile, err: (err as Error).message }, 'store snapshot failed');
      }
    }
  }

  private async loadSnapshot(): Promise<void> {
    let text: string;
    try {
      await tighten(this.snapshotFile, FILE_MODE, 'store file', this.opts.log);
      text = await readFile(this.snapshotFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new Error(`store file ${this.snapshotFile} is unreadable: ${(err as Error).message}`);
    }
    let snap: Snapshot;
    try {
      snap = JSON.parse(text);
    } catch (err) {
      throw new Error(`store file ${this.snapshotFile} is unreadable: ${(err as Error).message}`);
    }
    if (snap?.version !== 1 || typeof snap.seq !== 'number' || typeof snap.tables !== 'object' || snap.tables === null) {
      throw new Error(`store file ${this.snapshotFile} is not a Hostkeeper store`);
    }
    this.snapshotBytes = Buffer.byteLength(text);
    this.seq = snap.seq;
    for (const [kind, rows] of Object.entries(snap.tables) as [Kind, Row[]][]) {
      const t = this.table(kind);
      for (const r of rows) t.put(r);
    }
  }

  /** Opens (creating it 0600) the journal for appending; true when it did not exist. */
  private async openJournal(): Promise<boolean> {
    let created = false;
    try {
      await tighten(this.journalFile, FILE_MODE, 'journal', this.opts.log);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      created = true;
    }
    this.journal = await open(this.journalFile, 'a+', FILE_MODE);
    // fdatasync on the journal does not make its directory entry durable; this does, once.
    if (created && this.opts.sync) syncPath(this.dir);
    return created;
  }

  private apply(changes: Change[]): void {
    for (const [kind, uuid, row] of changes) {
      if (row) this.table(kind).put(row);
      else this.table(kind).delete(uuid);
    }
  }

  // ---- reads -------------------------------------------------------------------------

  async get<T extends Row>(kind: Kind, uuid: string): Promise<T | undefined> {
    return this.table(kind).rows.get(uuid) as T | undefined;
  }
  async find<T extends Row>(kind: Kind, where: Where): Promise<T[]> {
    return this.table(kind).find(where) as T[];
  }
  async count(kind: Kind, where: Where): Promise<number> {
    return this.table(kind).find(where).length;
  }
  async all<T extends Row>(kind: Kind): Promise<T[]> {
    return [...this.table(kind).rows.values()] as T[];
  }
  async query<T extends Row>(res: ResourceSpec, spec: QuerySpec, scope?: Where): Promise<QueryResult<T>> {
    return evaluateQuery((k) => this.table(k), res, spec, scope) as QueryResult<T>;
  }

  // ---- writes ------------------------------------------------------------------------

  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('store is closed'));
    const run = async (): Promise<{ result: T; durable: Promise<void>; tx: OverlayTx }> => {
      const tx = new OverlayTx(this);
      const result = await fn(tx);
      const changes = tx.changes();
      if (changes.length === 0) return { result, durable: Promise.resolve(), tx };
      const seq = ++this.seq;
      this.apply(changes);
      return { result, durable: this.append(JSON.stringify({ s: seq, o: changes }) + '\n', seq), tx };
    };
    // Writers run one at a time; the next may start before this one is on disk, which is
    // safe because journal lines are written in sequence order (group commit).
    const p = this.txChain.then(run);
    this.txChain = p.catch(() => undefined);
    return p.then(async ({ result, durable, tx }) => {
      await durable;
      // After the change is durable, as PostgreSQL's after COMMIT: listeners never see a
      // change that a crash could still undo.
      runCommitHooks(tx.hooks, this.opts.log);
      for (const [channel, payload] of tx.notes) this.subscribers.deliver(channel, payload);
      return result;
    });
  }

  /** In-process: nothing is ever missed, so `resync` is never called. */
  subscribe(channel: string, fn: (payload: string) => void, resync?: () => void): () => void {
    const [off] = this.subscribers.add(channel, fn, resync);
    return () => void off();
  }

  private append(line: string, seq: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ line, seq, resolve, reject });
      this.kick();
    });
  }

  /**
   * Starts the one writer loop unless it runs. Everything that touches the journal file
   * (appends, compaction) runs inside it, so a compaction can never truncate a line written
   * meanwhile. Work that arrived while the loop was finishing starts a new loop.
   */
  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      if (this.pending.length > 0 || this.compactWaiters.length > 0) this.kick();
    });
  }

  private async flushLoop(): Promise<void> {
    for (;;) {
      if (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        const text = batch.map((b) => b.line).join('');
        try {
          await this.journal.write(text);
          if (this.opts.sync) await this.journal.datasync();
          this.journalBytes += Buffer.byteLength(text);
          for (const b of batch) b.resolve();
        } catch (err) {
          for (const b of batch) b.reject(err);
        }
      }
      const waiters = this.compactWaiters;
      if (waiters.length > 0 || this.journalBytes >= Math.max(this.compactAt(), this.retryCompactAt)) {
        this.compactWaiters = [];
        try {
          await this.compact();
          for (const w of waiters) w.resolve();
        } catch (err) {
          for (const w of waiters) w.reject(err);
          // The journal still holds everything. Try again once it has grown by the floor,
          // not after every commit: each try rewrites the whole state (a full disk, say).
          this.retryCompactAt = this.journalBytes + this.opts.compactBytes;
          if (waiters.length === 0) this.opts.log.warn({ file: this.snapshotFile, err: (err as Error).message }, 'store snapshot failed');
        }
      }
      if (this.pending.length === 0 && this.compactWaiters.length === 0) return;
    }
  }

  /**
   * Writes the whole state as the snapshot and empties the journal. The snapshot is taken
   * synchronously, so it holds exactly the transactions up to `seq`, including any whose
   * journal lines are still pending: those are covered by the snapshot and dropped.
   * Order, for crash safety: the new snapshot is on disk (data synced, renamed, directory
   * synced) before the journal is emptied; a crash in between leaves journal lines the
   * snapshot covers, which the next load skips by sequence number.
   */
  private async compact(): Promise<void> {
    const seq = this.seq;
    const tables: Partial<Record<Kind, Row[]>> = {};
    for (const [kind, t] of this.tables) tables[kind] = [...t.rows.values()];
    const text = JSON.stringify({ version: 1, seq, tables } satisfies Snapshot);
    const covered = this.pending.filter((p) => p.seq <= seq);
    this.pending = this.pending.filter((p) => p.seq > seq);
    try {
      await this.writeSnapshot(text);
      // Not synced on its own: if a crash undoes the truncation, the lines left are all
      // covered by the snapshot and skipped; the next append's fdatasync makes it durable.
      await this.journal.truncate(0);
      this.journalBytes = 0;
      this.retryCompactAt = 0;
      this.snapshotBytes = Buffer.byteLength(text);
      for (const p of covered) p.resolve();
    } catch (err) {
      for (const p of covered) p.reject(err);
      throw err;
    }
  }

  /**
   * Replaces store.json atomically and durably. Hand-written rather than lowdb's writer
   * (steno 4.0.2, under lowdb 7.0.1), measured with strace: it creates `.store.json.tmp`
   * with mode 0666 (0644 under the usual umask: every host secret readable by any local
   * user) and renames it over store.json without any fsync, so after a power cut
   * store.json could be empty while the journal it replaced was already emptied.
   */
  private async writeSnapshot(text: string): Promise<void> {
    // A temp file a crash left behind may be looser than 0600: start from a new one.
    await rm(this.tempFile, { force: true });
    const fh = await open(this.tempFile, 'wx', FILE_MODE);
    try {
      await fh.writeFile(text, 'utf8');
      if (this.opts.sync) await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(this.tempFile, this.snapshotFile);
    if (this.opts.sync) syncPath(this.dir);
  }

  /**
   * Waits for pending writes and closes. A journal past a quarter of the compaction point
   * (and past 1 MiB) is folded into a fresh snapshot first, so the next start replays
   * little; a smaller one replays faster than the rewrite would hold up the stop.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    // Closed first: transactions already queued still run, later ones are refused.
    this.closed = true;
    await this.txChain;
    while (this.flushing) await this.flushing;
    const foldAt = Math.max(Math.min(MiB, this.opts.compactBytes), this.compactAt() / 4);
    try {
      if (this.journalBytes > foldAt) await this.compact();
    } catch (err) {
      // Nothing is lost (the journal holds it all); the next start replays it.
      this.opts.log.warn({ file: this.snapshotFile, err: (err as Error).message }, 'store snapshot failed');
    } finally {
      await this.journal.close();
    }
  }

  /** Folds the journal into a fresh snapshot now (seeding, backups). */
  async snapshot(): Promise<void> {
    await this.txChain;
    await new Promise<void>((resolve, reject) => {
      this.compactWaiters.push({ resolve, reject });
      this.kick();
    });
  }

  /** Resolves once every pending write (and a compaction it triggered) is done. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  async journalSize(): Promise<number> {
    return (await stat(this.journalFile)).size;
  }

  /** @internal for OverlayTx */
  tableOf(kind: Kind): Table {
    return this.table(kind);
  }
}

/**
 * Narrows `path` to `mode` when it is looser (group or other bits set), logging that it
 * did. Throws ENOENT for a missing path; callers that allow one catch it.
 */
async function tighten(path: string, mode: number, what: string, log: StoreLog): Promise<void> {
  const was = (await stat(path)).mode & 0o777;
  if ((was & ~mode) === 0) return;
  await chmod(path, mode);
  log.warn({ path, was: was.toString(8), now: mode.toString(8) }, `${what} was readable by others; tightened its mode`);
}

function syncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A transaction's view: its own writes over the committed tables. Nothing touches the
 * tables until commit, so a failed transaction leaves no trace.
 */
class OverlayTx implements Tx {
  private readonly writes = new Map<string, Change>();
  readonly hooks: (() => void)[] = [];
  /** tx.notify's [channel, payload] pairs, delivered after commit; a pair repeated is sent once, as PostgreSQL folds them. */
  readonly notes: [string, string][] = [];
  constructor(private readonly store: EmbeddedStore) {}

  onCommit(fn: () => void): void {
    this.hooks.push(fn);
  }
  notify(channel: string, payload: string): void {
    checkNotification(channel, payload);
    if (!this.notes.some(([c, p]) => c === channel && p === payload)) this.notes.push([channel, payload]);
  }

  changes(): Change[] {
    return [...this.writes.values()];
  }
  private key(kind: Kind, uuid: string): string {
    return `${kind}\u0000${uuid}`;
  }
  async get<T extends Row>(kind: Kind, uuid: string): Promise<T | undefined> {
    const w = this.writes.get(this.key(kind, uuid));
    if (w) return (w[2] ?? undefined) as T | undefined;
    return this.store.tableOf(kind).rows.get(uuid) as T | undefined;
  }
  async find<T extends Row>(kind: Kind, where: Where): Promise<T[]> {
    const entries = Object.entries(where);
    const out: Row[] = [];
    for (const r of this.store.tableOf(kind).find(where)) {
      if (!this.writes.has(this.key(kind, r.uuid))) out.push(r);
    }
    for (const [k, , row] of this.writes.values()) {
      if (k === kind && row && this.store.tableOf(kind).matches(row, entries)) out.push(row);
    }
    return out as T[];
  }
  async count(kind: Kind, where: Where): Promise<number> {
    return (await this.find(kind, where)).length;
  }
  async insert<T extends Row>(kind: Kind, row: T): Promise<T> {
    if (await this.get(kind, row.uuid)) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}] already exists`);
    if (KINDS[kind].resource) {
      for (const k of RESOURCE_KINDS) {
        if (k !== kind && (await this.get(k, row.uuid))) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}]: the uuid is already used by a ${k}`);
      }
    }
    await this.checkUnique(kind, row);
    this.writes.set(this.key(kind, row.uuid), [kind, row.uuid, row]);
    return row;
  }
  async update<T extends Row>(kind: Kind, uuid: string, patch: Partial<T>): Promise<T> {
    const cur = await this.get<T>(kind, uuid);
    if (!cur) throw new HkError('SYS.1007', `${kind}[uuid:${uuid}] is not found`, 404);
    const next = { ...cur, ...patch, uuid } as T;
    await this.checkUnique(kind, next, cur);
    this.writes.set(this.key(kind, uuid), [kind, uuid, next]);
    return next;
  }
  async remove(kind: Kind, uuid: string): Promise<void> {
    this.writes.set(this.key(kind, uuid), [kind, uuid, null]);
  }
  /**
   * The schema's UNIQUE fields, checked here because writers are serialised (PostgreSQL
   * has constraints); the message is the one the PostgreSQL store gives.
   */
  private async checkUnique(kind: Kind, row: Row, was?: Row): Promise<void> {
    const rec = row as unknown as Record<string, string | number | boolean | null>;
    for (const f of uniqueFields(kind)) {
      const v = rec[f];
      if (v === null || v === undefined || (was && (was as unknown as Record<string, unknown>)[f] === v)) continue;
      const other = (await this.find(kind, { [f]: v })).find((r) => r.uuid !== row.uuid);
      if (other) throw new HkError('SYS.1007', `${kind}[uuid:${row.uuid}]: ${f}[${v}] is already used by ${kind}[uuid:${other.uuid}]`);
    }
  }
}

export type { Table };
