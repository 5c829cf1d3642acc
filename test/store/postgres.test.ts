/**
 * The store contract (test/store/contract.ts) on PostgreSQL, plus what only PostgreSQL has:
 * migrations under an advisory lock, indexes that match schema.ts, transactions run again
 * after a serialization failure, and the statement_timeout that stands in for the embedded
 * store's LIKE budget. One database per run of this file (test/store/db.ts).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HkError } from '../../protocol/errors.ts';
import { parseQuery } from '../../protocol/query.ts';
import { RESOURCES } from '../../protocol/resources.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { copyEmbeddedToPostgres } from '../../controller/store/copy.ts';
import { loadMigrations, migrate } from '../../controller/store/postgres/migrate.ts';
import { PgStore } from '../../controller/store/postgres/pg-store.ts';
import { KIND_NAMES, KINDS, RESOURCE_KINDS } from '../../controller/store/schema.ts';
import { tempDir } from '../helpers.ts';
import { storeContract } from './contract.ts';
import { seedFixtures } from './fixtures.ts';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from './db.ts';

const quiet = { info() {}, warn() {} };

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'PostgreSQL store' : NO_DATABASE, () => {
  let db: TestDatabase;
  let store: PgStore;
  beforeAll(async () => {
    db = await createTestDatabase();
    // Three controllers starting at once on the empty database: one migrates, all open.
    const stores = await Promise.all([0, 1, 2].map(() => PgStore.open(db.url, { log: quiet })));
    [store] = stores as [PgStore];
    for (const s of stores.slice(1)) await s.close();
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });
  const sql = async (text: string, params: unknown[] = []) => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      return (await c.query(text, params)).rows;
    } finally {
      await c.end();
    }
  };

  describe('the Repository contract', () => {
    storeContract(async () => {
      await sql('TRUNCATE hk_row');
      return store;
    });
  });

  describe('migrations', () => {
    it('each file is applied once, whoever started first; a later start applies nothing', async () => {
      const files = await loadMigrations();
      expect((await sql('SELECT version, name FROM hk_migration ORDER BY version'))).toEqual(files.map((m) => ({ version: m.version, name: m.name })));
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        expect(await migrate(c)).toEqual([]);
      } finally {
        await c.end();
      }
    });

    it('refuses a database whose schema is newer than this build', async () => {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        const files = await loadMigrations();
        await expect(migrate(c, files.slice(0, -1))).rejects.toThrow(/newer than this build/);
      } finally {
        await c.end();
      }
    });

    it('the database has exactly the indexes schema.ts lists', async () => {
      const rows = await sql(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'hk_row'`);
      const names = new Set(rows.map((r) => r.indexname as string));
      const want = new Set(['hk_row_pkey', 'hk_row_kind_ord', 'hk_resource_uuid']);
      for (const k of KIND_NAMES) {
        for (const [field, spec] of Object.entries(KINDS[k].indexes ?? {})) {
          const name = `hk_${k}_${field.replace('.', '_')}`.toLowerCase();
          want.add(name);
          const def = rows.find((r) => r.indexname === name)?.indexdef as string | undefined;
          expect(def, name).toBeDefined();
          expect(def!.startsWith('CREATE UNIQUE'), `${name} unique`).toBe(!!spec.unique);
          expect(def, name).toContain(`'${spec.list ? spec.list.name : field}'`);
          expect(def, name).toContain(`kind = '${k}'`);
        }
      }
      expect([...names].sort()).toEqual([...want].sort());
      const resource = rows.find((r) => r.indexname === 'hk_resource_uuid')!.indexdef as string;
      for (const k of KIND_NAMES) expect(resource.includes(`'${k}'`), k).toBe(RESOURCE_KINDS.includes(k));
    });
  });

  describe('transactions under contention', () => {
    it('two transactions that read and write the same row both land: one is run again', async () => {
      await sql('TRUNCATE hk_row');
      await store.transaction((tx) => tx.insert('job', { uuid: 'counter', n: 0 }));
      const before = store.retries;
      let runs = 0;
      const hooks: number[] = [];
      const bump = (i: number) =>
        store.transaction(async (tx) => {
          runs++;
          const cur = await tx.get<{ uuid: string; n: number }>('job', 'counter');
          // Both read before either writes: a real conflict, not a scheduling accident.
          await new Promise((r) => setTimeout(r, 20));
          await tx.update<any>('job', 'counter', { n: cur!.n + 1 });
          tx.onCommit(() => hooks.push(i));
        });
      await Promise.all([bump(1), bump(2)]);
      expect(((await store.get('job', 'counter')) as any).n).toBe(2);
      expect(runs).toBeGreaterThan(2);
      expect(store.retries).toBeGreaterThan(before);
      expect(hooks.sort()).toEqual([1, 2]);
    });

    it('a transaction whose statement failed never reports success, even if fn swallowed the error', async () => {
      await sql('TRUNCATE hk_row');
      const err = await store
        .transaction(async (tx) => {
          await tx.insert('job', { uuid: 'j' });
          await tx.insert('job', { uuid: 'bad', text: 'nul \u0000 byte' }).catch(() => undefined);
        })
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(await store.get('job', 'j')).toBeUndefined();
    });
  });

  it('store:copy moves an embedded store over whole, in order, and refuses a non-empty database', async () => {
    await sql('TRUNCATE hk_row');
    const dir = await tempDir();
    const src = await EmbeddedStore.open(dir, { sync: false, log: quiet });
    await seedFixtures(src);
    await src.transaction(async (tx) => {
      await tx.insert('config', { uuid: 'host/ping.interval', value: '30' });
      await tx.insert('session', { uuid: 's1', expiredDate: 1 });
      await tx.remove('host', (await src.all('host'))[0]!.uuid);
    });
    await src.close();
    const counts = await copyEmbeddedToPostgres(dir, db.url, { batch: 7 });
    expect(counts).toEqual({ zone: 2, cluster: 3, host: 39, vm: 80, config: 1, session: 1 });
    const again = await EmbeddedStore.open(dir, { sync: false, log: quiet });
    for (const k of KIND_NAMES) expect(await store.all(k), k).toEqual(await again.all(k));
    await again.close();
    await expect(copyEmbeddedToPostgres(dir, db.url)).rejects.toThrow(/already holds 126 rows/);
    expect(await copyEmbeddedToPostgres(dir, db.url, { replace: true })).toEqual(counts);
    await expect(copyEmbeddedToPostgres(await tempDir(), db.url)).rejects.toThrow(/no embedded store/);
  });

  it('a query past statement_timeout is refused with SYS.1007 naming the limit', async () => {
    const slow = await PgStore.open(db.url, { log: quiet, statementTimeoutMs: 1 });
    try {
      await sql('TRUNCATE hk_row');
      await sql(`INSERT INTO hk_row (kind, uuid, data) SELECT 'zone', 'z' || i, jsonb_build_object('uuid', 'z' || i, 'name', repeat('x', 200) || i) FROM generate_series(1, 20000) i`);
      const err = await slow
        .query(RESOURCES.zone, parseQuery(RESOURCES.zone, { q: ['name~=%x_y%', 'description!~=%a%b%'], count: 'true' }))
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(HkError);
      expect((err as HkError).details).toMatch(/statement_timeout of 1 ms/);
    } finally {
      await slow.close();
    }
  });
});
