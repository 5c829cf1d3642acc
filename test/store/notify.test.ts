/**
 * Store notifications (tx.notify / subscribe) and what rides on them: a global config changed
 * through one controller reaches every other controller's getInt and onChange within 1 s,
 * also after the listening connection was lost (resync), and the controller that made the
 * change announces it once. The embedded store delivers in-process; PostgreSQL by
 * LISTEN/NOTIFY, here with two PgStores on one test database standing for two controllers.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_CHANNEL, GlobalConfigs } from '../../controller/services/configs.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { PgStore } from '../../controller/store/postgres/pg-store.ts';
import type { Repository } from '../../controller/store/repository.ts';
import { silentLog, tempDir } from '../helpers.ts';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from './db.ts';

const quiet = { info() {}, warn() {} };

/** Resolves with the first value `register` hands to its callback; rejects after `ms` naming `what` (a bounded wait on an event, not a sleep). */
function within<T>(ms: number, what: string, register: (done: (v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/** UpdateGlobalConfig as the API route does it: validate + write in one transaction, then applied(). */
async function update(repo: Repository, gc: GlobalConfigs, key: string, value: string): Promise<void> {
  const [category, name] = key.split('/') as [string, string];
  const row = await repo.transaction((tx) => gc.prepareUpdate(tx, category, name, value));
  gc.applied(row);
}

describe('embedded store: notifications in-process', () => {
  const stores: EmbeddedStore[] = [];
  afterEach(async () => {
    while (stores.length) await stores.pop()!.close();
  });
  const open = async () => {
    const s = await EmbeddedStore.open(await tempDir(), { sync: false, log: quiet });
    stores.push(s);
    return s;
  };

  it('delivers after commit, in order, once per pair; never for a failed transaction; not after unsubscribe', async () => {
    const s = await open();
    const heard: string[] = [];
    const off = s.subscribe('hk_test', (p) => heard.push(p));
    await s.transaction(async (tx) => {
      tx.notify('hk_test', 'a');
      tx.notify('hk_test', 'b');
      tx.notify('hk_test', 'a');
      tx.notify('hk_other', 'x');
      // Not before commit.
      tx.onCommit(() => heard.push('hook'));
      expect(heard).toEqual([]);
    });
    // Hooks first, then notifications, all before transaction() resolved.
    expect(heard).toEqual(['hook', 'a', 'b']);
    await expect(s.transaction(async (tx) => {
      tx.notify('hk_test', 'lost');
      throw new Error('boom');
    })).rejects.toThrow('boom');
    // A transaction that changes no row still publishes.
    await s.transaction(async (tx) => tx.notify('hk_test', 'c'));
    off();
    await s.transaction(async (tx) => tx.notify('hk_test', 'd'));
    expect(heard).toEqual(['hook', 'a', 'b', 'c']);
  });

  it('refuses a channel PostgreSQL could not LISTEN on and a payload it could not carry', async () => {
    const s = await open();
    expect(() => s.subscribe('Bad-Channel', () => undefined)).toThrow(/channel\[Bad-Channel\]/);
    await expect(s.transaction(async (tx) => tx.notify('hk_test', 'x'.repeat(8000)))).rejects.toThrow(/at most 7999 bytes/);
  });

  it('a subscriber that throws is logged and does not stop the others or fail the transaction', async () => {
    const s = await open();
    const heard: string[] = [];
    s.subscribe('hk_test', () => {
      throw new Error('bad subscriber');
    });
    s.subscribe('hk_test', (p) => heard.push(p));
    await s.transaction(async (tx) => tx.notify('hk_test', 'a'));
    expect(heard).toEqual(['a']);
  });

  it('a config update is announced once by the controller that made it (its own notification is skipped)', async () => {
    const s = await open();
    const gc = await GlobalConfigs.load(s, silentLog());
    const seen: [string, string][] = [];
    gc.onChange('host', 'ping.interval', (v, old) => seen.push([old, v]));
    const published: string[] = [];
    s.subscribe(CONFIG_CHANNEL, (p) => published.push(p));
    await update(s, gc, 'host/ping.interval', '30');
    await gc.settled();
    expect(gc.getInt('host', 'ping.interval')).toBe(30);
    expect(seen).toEqual([['60', '30']]);
    expect(published.map((p) => JSON.parse(p).key)).toEqual(['host/ping.interval']);
  });
});

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'PostgreSQL: notifications between controllers' : NO_DATABASE, () => {
  let db: TestDatabase;
  let a: PgStore;
  let b: PgStore;
  beforeAll(async () => {
    db = await createTestDatabase();
    a = await PgStore.open(db.url, { log: quiet, retryMs: 20, retryMaxMs: 200 });
    b = await PgStore.open(db.url, { log: quiet, retryMs: 20, retryMaxMs: 200 });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
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
  /** Ends every listening connection on the test database, as a server-side kill or a network cut would. */
  const killListeners = async () =>
    (await sql(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hostkeeper-listen'`, [db.name])).length;

  it('a committed notify reaches the other store within 1 s; a rolled back one never does', async () => {
    const heard: string[] = [];
    let resyncs = 0;
    const first = within<void>(1000, 'LISTEN in effect', (done) => b.subscribe('hk_test', (p) => heard.push(p), () => {
      resyncs++;
      done();
    }));
    await first;
    await expect(a.transaction(async (tx) => {
      tx.notify('hk_test', 'lost');
      await tx.insert('job', { uuid: 'rolled-back' });
      throw new Error('boom');
    })).rejects.toThrow('boom');
    const got = within<string>(1000, 'notification', (done) => b.subscribe('hk_test', done));
    await a.transaction(async (tx) => {
      await tx.insert('job', { uuid: 'committed' });
      tx.notify('hk_test', 'hello');
    });
    expect(await got).toBe('hello');
    expect(heard).toEqual(['hello']);
    expect(resyncs).toBe(1);
  });

  it('a config update through one controller reaches the other\'s getInt and onChange within 1 s, and is announced once by its maker', async () => {
    const gcA = await GlobalConfigs.load(a, silentLog());
    const gcB = await GlobalConfigs.load(b, silentLog());
    try {
      await Promise.all([gcA.settled(), gcB.settled()]);
      const onA: string[] = [];
      gcA.onChange('host', 'ping.interval', (v) => onA.push(v));
      const t0 = Date.now();
      const seenByB = within<[string, string]>(1000, 'onChange on the other controller', (done) => {
        gcB.onChange('host', 'ping.interval', (v, old) => done([old, v]));
      });
      await update(a, gcA, 'host/ping.interval', '45');
      expect(await seenByB).toEqual(['60', '45']);
      expect(gcB.getInt('host', 'ping.interval')).toBe(45);
      expect(Date.now() - t0).toBeLessThan(1000);
      // Both the same notification and A's own follow-up reload have run by now: A announced once.
      await gcA.settled();
      expect(onA).toEqual(['45']);

      // The other way round, and a relation the other controller relies on (timeout < interval).
      const back = within<string>(1000, 'onChange on the first controller', (done) => gcA.onChange('host', 'ping.timeout', (v) => done(v)));
      await update(b, gcB, 'host/ping.timeout', '20');
      expect(await back).toBe('20');
      expect(gcA.getInt('host', 'ping.timeout')).toBe(20);
    } finally {
      gcA.close();
      gcB.close();
    }
  });

  it('after the listening connection was lost, a change made meanwhile is picked up by resync', async () => {
    const gcB = await GlobalConfigs.load(b, silentLog());
    try {
      await gcB.settled();
      // A change whose notification nobody hears: written behind the controllers' back, as one
      // made while B's listener was down would be.
      const seen = within<string>(5000, 'onChange after resync', (done) => gcB.onChange('kvm', 'vm.migrationQuantity', (v) => done(v)));
      await sql(`UPDATE hk_row SET data = data || '{"value":"7"}' WHERE kind = 'config' AND uuid = 'kvm/vm.migrationQuantity'`);
      expect(gcB.getInt('kvm', 'vm.migrationQuantity')).toBe(2);
      expect(await killListeners()).toBe(2);
      expect(await seen).toBe('7');
      expect(gcB.getInt('kvm', 'vm.migrationQuantity')).toBe(7);
      // The store stayed up: only the listener was lost, and it is back.
      expect(b.health().ok).toBe(true);
      // Notifications flow again on the new connection.
      const again = within<string>(1000, 'onChange after the reconnect', (done) => gcB.onChange('kvm', 'vm.migrationQuantity', (v) => done(v)));
      const gcA = await GlobalConfigs.load(a, silentLog());
      await update(a, gcA, 'kvm/vm.migrationQuantity', '3');
      gcA.close();
      expect(await again).toBe('3');
    } finally {
      gcB.close();
    }
  });
});

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'events heard live by every controller' : NO_DATABASE, () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('an event committed through one controller reaches the other\'s listeners within 1 s, once; a failed transaction publishes nothing', async () => {
    const { EventLog, recordEvent, withCommitHooks } = await import('../../controller/events.ts');
    const { FakeClock } = await import('../fakes/clock.ts');
    const clock = new FakeClock();
    const [sa, sb] = [await PgStore.open(db.url, { log: quiet }), await PgStore.open(db.url, { log: quiet })];
    const [la, lb] = [new EventLog(clock, silentLog()), new EventLog(clock, silentLog())];
    const a = withCommitHooks(sa, { events: la });
    const b = withCommitHooks(sb, { events: lb });
    await la.start(a);
    await lb.start(b);
    const heardA: string[] = [];
    const heardB: string[] = [];
    la.on((rows) => heardA.push(...rows.map((r) => r.message)));
    const got = within<string[]>(1_000, 'event at b', (done) => lb.on((rows) => {
      heardB.push(...rows.map((r) => r.message));
      done(rows.map((r) => r.message));
    }));
    await a.transaction(async (tx) => {
      await recordEvent(tx, { type: 'HostStatusChanged', resourceType: 'HostVO', resourceUuid: 'h'.repeat(32), message: 'one' });
      await recordEvent(tx, { type: 'HostStatusChanged', resourceType: 'HostVO', resourceUuid: 'h'.repeat(32), message: 'two' });
    });
    expect(await got).toEqual(['one', 'two']);
    await expect(a.transaction(async (tx) => {
      await recordEvent(tx, { type: 'HostStatusChanged', resourceType: 'HostVO', resourceUuid: 'h'.repeat(32), message: 'never' });
      throw new Error('rolled back');
    })).rejects.toThrow('rolled back');
    // A later event is heard and the rolled-back one never was.
    const next = within<string[]>(1_000, 'second event at b', (done) => lb.on((rows) => done(rows.map((r) => r.message))));
    await a.transaction((tx) => recordEvent(tx, { type: 'HostStatusChanged', resourceType: 'HostVO', resourceUuid: 'h'.repeat(32), message: 'three' }));
    expect(await next).toEqual(['three']);
    expect(heardB).toEqual(['one', 'two', 'three']);
    expect(heardA).toEqual(['one', 'two', 'three']); // its own: once, from its commit hook
    la.stop();
    lb.stop();
    await sa.close();
    await sb.close();
  });
});
