/**
 * Database failures as a client sees them: never a 500. Which errors count as "the database
 * cannot be reached" (they mark a PostgreSQL store down), how the API error handler maps a
 * database error that reached it unwrapped, and the 503 every admin API call gets while the
 * store reports itself down (here with a stand-in health on the embedded store: the real
 * outage, on a private PostgreSQL server, is test/store/db-loss.test.ts). A value PostgreSQL
 * cannot hold is a 400, not a 500 (on the shared test server when there is one).
 */
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errorOf } from '../../controller/api/common.ts';
import { isConnectionError, PgStore } from '../../controller/store/postgres/pg-store.ts';
import { type StoreHealth, StoreUnavailableError } from '../../controller/store/repository.ts';
import { HkError } from '../../protocol/errors.ts';
import { makeController, type TestController } from '../helpers.ts';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from './db.ts';

const errno = (code: string, message = `connect ${code} 127.0.0.1:5432`) => Object.assign(new Error(message), { code });
/** pg's DatabaseError: a SQLSTATE in `code` and a `severity`. */
const dbError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: 'FATAL' });

describe('which errors mean the database cannot be reached', () => {
  it.each([
    ['ECONNREFUSED', errno('ECONNREFUSED'), true],
    ['ECONNRESET', errno('ECONNRESET', 'read ECONNRESET'), true],
    ['57P01 admin shutdown', dbError('57P01', 'terminating connection due to administrator command'), true],
    ['57P03 cannot connect now', dbError('57P03', 'the database system is shutting down'), true],
    ['08006 connection failure', dbError('08006', 'connection failure'), true],
    ['pg: connection terminated', new Error('Connection terminated unexpectedly'), true],
    ['pg: connect timeout', new Error('Connection terminated due to connection timeout'), true],
    ['pg: read timeout', new Error('Query read timeout'), true],
    ['both addresses refused', new AggregateError([errno('ECONNREFUSED'), errno('ECONNREFUSED')]), true],
    ['40001 serialization failure', dbError('40001', 'could not serialize access'), false],
    ['57014 statement timeout', dbError('57014', 'canceling statement due to statement timeout'), false],
    ['23505 unique violation', dbError('23505', 'duplicate key'), false],
    ['a bug', new TypeError('x is undefined'), false],
  ])('%s -> %s', (_what, err, want) => {
    expect(isConnectionError(err)).toBe(want);
  });
});

describe('the API error handler never answers a database error with 500', () => {
  it.each([
    ['57P01 unwrapped', dbError('57P01', 'terminating connection due to administrator command'), 503, /^database unreachable: terminating/],
    ['pg connection terminated', new Error('Connection terminated unexpectedly'), 503, /^database unreachable: Connection terminated/],
    ['another SQLSTATE', dbError('42P01', 'relation "hk_row" does not exist'), 503, /^database error: relation .* \(42P01\)$/],
  ])('%s -> %s', (_what, err, status, details) => {
    const e = errorOf(err);
    expect(e).toBeInstanceOf(StoreUnavailableError);
    expect(e.status).toBe(status);
    expect(e.details).toMatch(details);
  });

  it('keeps HkErrors, and a socket errno alone is not taken for the database (agents and SSH throw them too)', () => {
    const mine = new StoreUnavailableError('timeout', 'the database did not answer within statement_timeout (2000 ms)');
    expect(errorOf(mine)).toBe(mine);
    expect(mine.toBody()).toEqual({ code: 'SYS.1001', description: 'operation timed out', details: mine.details });
    expect(errorOf(errno('ECONNREFUSED'))).toMatchObject({ code: 'SYS.1000', status: 500 });
    expect(errorOf(new TypeError('x is undefined'))).toMatchObject({ code: 'SYS.1000', status: 500 });
  });
});

describe('while the store reports the database down, the admin API answers 503', () => {
  let t: TestController;
  afterEach(async () => {
    await t?.close();
  });

  it('every admin call gets ZStack\'s error body naming since when and why; the API document still answers; back up, all answer', async () => {
    t = await makeController();
    let health: StoreHealth = { ok: true, since: 0 };
    // The embedded store has no health(): a stand-in, as a PostgreSQL store reports it.
    (t.core.repo as unknown as { health: () => StoreHealth }).health = () => health;
    expect((await request(t.app).get('/zstack/v1/zones').set(t.auth)).status).toBe(200);

    health = { ok: false, since: Date.UTC(2026, 10, 28, 12, 0, 0), why: 'connect ECONNREFUSED 127.0.0.1:5432' };
    for (const [method, path] of [['get', '/zstack/v1/zones'], ['post', '/zstack/v1/zones'], ['put', '/zstack/v1/accounts/login'], ['get', '/zstack/v1/api-jobs/' + 'ab'.repeat(16)]] as const) {
      const r = await request(t.app)[method](path).set(t.auth).send({});
      expect([method, path, r.status]).toEqual([method, path, 503]);
      expect(r.body).toEqual({
        error: {
          code: 'SYS.1000', description: 'internal error',
          details: 'database unreachable since 2026-11-28T12:00:00.000Z: connect ECONNREFUSED 127.0.0.1:5432; this controller answers again as soon as it is back',
        },
      });
    }
    expect((await request(t.app).get('/zstack/v1/openapi.json')).status).toBe(200);

    health = { ok: true, since: Date.now() };
    expect((await request(t.app).get('/zstack/v1/zones').set(t.auth)).status).toBe(200);
  });
});

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'PostgreSQL: a refused value is a 400' : NO_DATABASE, () => {
  let db: TestDatabase;
  let store: PgStore;
  beforeAll(async () => {
    db = await createTestDatabase();
    store = await PgStore.open(db.url, { log: { info() {}, warn() {} } });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });

  it('U+0000 in a string (PostgreSQL refuses it in JSONB): SYS.1007, and the store stays up', async () => {
    const err = await store.transaction((tx) => tx.insert('job', { uuid: 'nul', text: 'a\u0000b' })).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(HkError);
    expect(err).toMatchObject({ code: 'SYS.1007', status: 400 });
    expect((err as HkError).details).toMatch(/^the database refused a value: /);
    expect(store.health().ok).toBe(true);
  });
});
