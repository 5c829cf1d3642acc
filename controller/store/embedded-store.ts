/**
 * The embedded store: every row in memory, made durable by a lowdb JSON snapshot plus an
 * append-only journal.
 *
 * Why not lowdb alone: lowdb rewrites the whole file on every write. With 10,000 hosts and
 * 100,000 VMs that file is ~40 MB and a rewrite takes ~0.5 s, far from the 10 ms a state
 * change may take. So each transaction appends one JSON line to `journal.ndjson` and
 * fdatasyncs it (concurrent transactions share one sync: group commit, ~1 ms here); the
 * snapshot `store.json` is written through lowdb (temp file + rename, so it is never half
 * written) when the journal passes `compactBytes`, and on clean shutdown.
 *
 * Crash safety: a transaction's promise resolves only after its journal line is synced.
 * On load the snapshot is read, then journal lines with a higher sequence number are
 * replayed; a torn last line (kill -9 mid-write) was never acknowledged and is cut off.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { mkdir, open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Low } from 'lowdb';
import { DataFile } from 'lowdb/node';
import { HkError } from '../../protocol/errors.ts';
import type { QuerySpec } from '../../protocol/query.ts';
import type { Kind, ResourceSpec } from '../../protocol/resources.ts';
import { evaluateQuery } from './memory-query.ts';
import type { QueryResult, Repository, Row, Tx, Where } from './repository.ts';

/** Fields kept in equality indexes; `vmNics.ip` indexes every NIC of a VM. */
const INDEXES: Partial<Record<Kind, Record<string, (row: any) => unknown[]>>> = {
  cluster: { zoneUuid: (r) => [r.zoneUuid] },
  host: {
    managementIp: (r) => [r.managementIp],
    clusterUuid: (r) => [r.clusterUuid],
    zoneUuid: (r) => [r.zoneUuid],
    state: (r) => [r.state],
    status: (r) => [r.status],
  },
  vm: {
    hostUuid: (r) => [r.hostUuid],
    'vmNics.ip': (r) => (r.vmNics ?? []).map((n: { ip: string }) => n.ip),
  },
  tag: { resourceUuid: (r) => [r.resourceUuid] },
};

type Change = [kind: Kind, uuid: string, row: Row | null];

interface Snapshot {
  version: 1;
  seq: number;
  tables: Partial<Record<Kind, Row[]>>;
}

class Table {
  readonly rows = new Map<string, Row>();
  readonly ordinal = new Map<string, number>();
  readonly indexes = new Map<string, Map<unknown, Set<string>>>();
  private next = 0;
  /** [key function, its index], built once: put() runs for every row at start-up. */
  private readonly list: [(row: any) => unknown[], Map<unknown, Set<string>>][];
  constructor(private readonly defs: Record<string, (row: any) => unknown[]>) {
    for (const name of Object.keys(defs)) this.indexes.set(name, new Map());
    this.list = Object.entries(defs).map(([name, keys]) => [keys, this.indexes.get(name)!]);
  }
  put(row: Row): void {
    const old = this.rows.get(row.uuid);
    if (old) this.unindex(old);
    else this.ordinal.set(row.uuid, this.next++);
    this.rows.set(row.uuid, row);
    for (const [keys, idx] of this.list) {
      for (const k of keys(row)) {
        let set = idx.get(k);
        if (!set) idx.set(k, (set = new Set()));
        set.add(row.uuid);
      }
    }
  }
  delete(uuid: string): void {
    const old = this.rows.get(uuid);
    if (!old) return;
    this.unindex(old);
    this.rows.delete(uuid);
    this.ordinal.delete(uuid);
  }
  private unindex(row: Row): void {
    for (const [keys, idx] of this.list) {
      for (const k of keys(row)) {
        const set = idx.get(k);
        set?.delete(row.uuid);
        if (set?.size === 0) idx.delete(k);
      }
    }
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

export interface EmbeddedStoreOptions {
  /** Journal size that triggers a snapshot. */
  compactBytes?: number;
  /** fdatasync every commit (default). Off only for throwaway test stores. */
  sync?: boolean;
}

export class EmbeddedStore implements Repository {
  private readonly tables = new Map<Kind, Table>();
  private seq = 0;
  private journal!: FileHandle;
  private journalBytes = 0;
  private pending: { line: string; seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private txChain: Promise<unknown> = Promise.resolve();
  private readonly snapshotFile: string;
  private readonly journalFile: string;
  private readonly low: Low<Snapshot>;
  private closed = false;

  private constructor(readonly dir: string, private readonly opts: Required<EmbeddedStoreOptions>) {
    this.snapshotFile = join(dir, 'store.json');
    this.journalFile = join(dir, 'journal.ndjson');
    this.low = new Low<Snapshot>(
      new DataFile<Snapshot>(this.snapshotFile, { parse: JSON.parse, stringify: (d) => JSON.stringify(d) }),
      { version: 1, seq: 0, tables: {} },
    );
  }

  static async open(dir: string, opts: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new Error(`data dir ${dir} cannot be used: ${(err as Error).message}`);
    }
    const store = new EmbeddedStore(dir, { compactBytes: opts.compactBytes ?? 64 * 1024 * 1024, sync: opts.sync ?? true });
    await store.load();
    return store;
  }

  private table(kind: Kind): Table {
    let t = this.tables.get(kind);
    if (!t) this.tables.set(kind, (t = new Table(INDEXES[kind] ?? {})));
    return t;
  }

  private async load(): Promise<void> {
    try {
      await this.low.read();
    } catch (err) {
      throw new Error(`store file ${this.snapshotFile} is unreadable: ${(err as Error).message}`);
    }
    const snap = this.low.data;
    if (snap.version !== 1 || typeof snap.seq !== 'number' || typeof snap.tables !== 'object') {
      throw new Error(`store file ${this.snapshotFile} is not a Hostkeeper store`);
    }
    this.seq = snap.seq;
    for (const [kind, rows] of Object.entries(snap.tables) as [Kind, Row[]][]) {
      const t = this.table(kind);
      for (const r of rows) t.put(r);
    }
    // The snapshot's rows now live in the tables; do not keep a second copy.
    this.low.data = { version: 1, seq: this.seq, tables: {} };
    let text = '';
    try {
      text = await readFile(this.journalFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let good = 0;
    for (let pos = 0; pos < text.length; ) {
      const nl = text.indexOf('\n', pos);
      if (nl < 0) break; // torn tail: never acknowledged
      let entry: { s: number; o: Change[] };
      try {
        entry = JSON.parse(text.slice(pos, nl));
      } catch {
        break;
      }
      if (entry.s > this.seq) {
        this.apply(entry.o);
        this.seq = entry.s;
      }
      pos = nl + 1;
      good = Buffer.byteLength(text.slice(0, pos));
    }
    this.journal = await open(this.journalFile, 'a+');
    const size = (await this.journal.stat()).size;
    if (size !== good) await this.journal.truncate(good);
    this.journalBytes = good;
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
    const run = async (): Promise<{ result: T; durable: Promise<void> }> => {
      const tx = new OverlayTx(this);
      const result = await fn(tx);
      const changes = tx.changes();
      if (changes.length === 0) return { result, durable: Promise.resolve() };
      const seq = ++this.seq;
      this.apply(changes);
      return { result, durable: this.append(JSON.stringify({ s: seq, o: changes }) + '\n', seq) };
    };
    // Writers run one at a time; the next may start before this one is on disk, which is
    // safe because journal lines are written in sequence order (group commit).
    const p = this.txChain.then(run);
    this.txChain = p.catch(() => undefined);
    return p.then(async ({ result, durable }) => {
      await durable;
      return result;
    });
  }

  private append(line: string, seq: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ line, seq, resolve, reject });
      if (!this.flushing) this.flushing = this.flushLoop().finally(() => (this.flushing = undefined));
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
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
      if (this.journalBytes >= this.opts.compactBytes) {
        try {
          await this.compact();
        } catch (err) {
          // The journal still holds everything; the next compaction tries again.
          process.emitWarning(`store snapshot failed: ${(err as Error).message}`);
        }
      }
    }
  }

  /**
   * Writes the whole state as the snapshot and empties the journal. The snapshot is taken
   * synchronously, so it holds exactly the transactions up to `seq`, including any whose
   * journal lines are still pending: those are covered by the snapshot and dropped.
   */
  private async compact(): Promise<void> {
    const seq = this.seq;
    const tables: Partial<Record<Kind, Row[]>> = {};
    for (const [kind, t] of this.tables) tables[kind] = [...t.rows.values()];
    this.low.data = { version: 1, seq, tables };
    const covered = this.pending.filter((p) => p.seq <= seq);
    this.pending = this.pending.filter((p) => p.seq > seq);
    try {
      await this.low.write();
      this.low.data = { version: 1, seq, tables: {} };
      syncPath(this.snapshotFile);
      syncPath(dirname(this.snapshotFile));
      await this.journal.truncate(0);
      this.journalBytes = 0;
      for (const p of covered) p.resolve();
    } catch (err) {
      for (const p of covered) p.reject(err);
      throw err;
    }
  }

  /**
   * Waits for pending writes and closes. A journal past 1 MB is folded into a fresh snapshot
   * first (fast next start); a small one is cheaper to replay than a 50 MB rewrite on stop.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.txChain;
    this.closed = true;
    while (this.flushing) await this.flushing;
    if (this.journalBytes > Math.min(1024 * 1024, this.opts.compactBytes)) await this.compact();
    await this.journal.close();
  }

  /** Folds the journal into a fresh snapshot now (seeding, backups). */
  async snapshot(): Promise<void> {
    await this.txChain;
    await this.flush();
    await this.compact();
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
  constructor(private readonly store: EmbeddedStore) {}

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
    this.writes.set(this.key(kind, row.uuid), [kind, row.uuid, row]);
    return row;
  }
  async update<T extends Row>(kind: Kind, uuid: string, patch: Partial<T>): Promise<T> {
    const cur = await this.get<T>(kind, uuid);
    if (!cur) throw new HkError('SYS.1007', `${kind}[uuid:${uuid}] is not found`, 404);
    const next = { ...cur, ...patch, uuid } as T;
    this.writes.set(this.key(kind, uuid), [kind, uuid, next]);
    return next;
  }
  async remove(kind: Kind, uuid: string): Promise<void> {
    this.writes.set(this.key(kind, uuid), [kind, uuid, null]);
  }
}

export type { Table };
