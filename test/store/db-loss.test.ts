/**
 * Losing the database (issue 12): a PostgreSQL store on a private server (test/pg-private.ts,
 * its own port and data dir: stopping it touches no other test) that is stopped and started
 * again. While it is down the store says so (health, onHealth, with the reason), every call
 * fails at once with the 503-class StoreUnavailableError (never hanging past the statement
 * timeout), and a controller over it answers the admin API with a 503 in ZStack's error shape.
 * Once it is back: health up, writes work, and every write acknowledged before is there;
 * a transaction cut before its COMMIT reports a failure and left nothing.
 *
 * Waits are bounded waits on events (onHealth), not sleeps.
 */
import { rm } from 'node:fs/promises';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../controller/api/app.ts';
import { openCore } from '../../controller/core.ts';
import { PgStore } from '../../controller/store/postgres/pg-store.ts';
import { type StoreHealth, StoreUnavailableError } from '../../controller/store/repository.ts';
import { HkError } from '../../protocol/errors.ts';
import { FakeClock } from '../fakes/clock.ts';
import { refusingSsh } from '../fakes/ssh.ts';
import { ADMIN_PASSWORD, call, makeZone, silentLog, tempDir, type TestController } from '../helpers.ts';
import { type PrivatePostgres, privatePostgresUnavailable, startPrivatePostgres } from '../pg-private.ts';

const quiet = { info() {}, warn() {} };
const STATEMENT_TIMEOUT_MS = 2000;
const skip = privatePostgresUnavailable();

/** The next health change that matches `ok`, within `ms` (or at once if it already holds). */
function healthBecomes(store: { health(): StoreHealth; onHealth(fn: (h: StoreHealth) => void): () => void }, ok: boolean, ms: number): Promise<StoreHealth> {
  return new Promise((resolve, reject) => {
    if (store.health().ok === ok) return resolve(store.health());
    const timer = setTimeout(() => {
      off();
      reject(new Error(`store health did not become ${ok ? 'up' : 'down'} within ${ms} ms`));
    }, ms);
    const off = store.onHealth((h) => {
      if (h.ok !== ok) return;
      clearTimeout(timer);
      off();
      resolve(h);
    });
  });
}

/** What a call threw, and how long it took to throw it. */
async function failure(p: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const t0 = Date.now();
  const err = await p.then(() => undefined, (e: unknown) => e);
  return { err, ms: Date.now() - t0 };
}

function expectUnreachable(f: { err: unknown; ms: number }): void {
  expect(f.err).toBeInstanceOf(StoreUnavailableError);
  const e = f.err as StoreUnavailableError;
  expect(e).toBeInstanceOf(HkError);
  expect([e.status, e.reason]).toEqual([503, 'unreachable']);
  expect(e.details).toMatch(/^database unreachable: /);
  expect(f.ms).toBeLessThan(STATEMENT_TIMEOUT_MS);
}

async function controllerOn(databaseUrl: string): Promise<TestController> {
  const dir = await tempDir();
  const core = await openCore({
    dataDir: dir, databaseUrl, adminPassword: ADMIN_PASSWORD, clock: new FakeClock(), log: silentLog(), sync: false, deploy: { sshOpen: refusingSsh() },
  });
  const app = createApp(core);
  const res = await request(app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`);
  const session = res.body.inventory.uuid as string;
  return {
    core, app, clock: core.clock as FakeClock, dir, session, auth: { Authorization: `OAuth ${session}` },
    async close() {
      await core.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe.skipIf(!!skip)(skip ?? 'losing the database (a private PostgreSQL server)', () => {
  let server: PrivatePostgres;
  beforeAll(async () => {
    server = await startPrivatePostgres();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('stopped: health down with the reason, calls fail at once with 503, the API answers 503; started: up, nothing acknowledged lost', async () => {
    const t = await controllerOn(server.url);
    // A second store on the same database, driven directly (the controller's is behind its proxy).
    const store = await PgStore.open(server.url, { log: quiet, statementTimeoutMs: STATEMENT_TIMEOUT_MS, retryMs: 25, retryMaxMs: 250 });
    try {
      const changes: StoreHealth[] = [];
      store.onHealth((h) => changes.push(h));
      expect(store.health().ok).toBe(true);
      expect(t.core.repo.health!().ok).toBe(true);

      // Acknowledged before the outage: zones through the API (202 + job), rows through the store.
      const zones = [];
      for (let i = 0; i < 3; i++) zones.push(await makeZone(t, `before-${i}`));
      for (let i = 0; i < 20; i++) await store.transaction((tx) => tx.insert('job', { uuid: `acked-${i}`, n: i }));

      // A transaction holding its connection when the server goes: it must not report success.
      let goOn!: () => void;
      let cut: { ok: boolean; err?: unknown } | undefined;
      const cutStarted = new Promise<void>((began) => {
        void store.transaction(async (tx) => {
          await tx.insert('job', { uuid: 'cut-before-commit' });
          began();
          await new Promise<void>((r) => (goOn = r));
        }).then(() => (cut = { ok: true }), (err: unknown) => (cut = { ok: false, err }));
      });
      await cutStarted;

      await server.stop();
      const down = await healthBecomes(store, false, 3000);
      expect(down.why).toMatch(/ECONNREFUSED|terminat|shutting down|57P0/);
      await healthBecomes(t.core.repo as PgStore, false, 3000);
      expect(store.health()).toMatchObject({ ok: false, why: expect.any(String) });
      // The outage lasts a few seconds (a deliberate length, not a wait for something): the
      // reconnect loops keep trying at retryMaxMs, and nothing comes back up by itself.
      await new Promise((r) => setTimeout(r, 2000));
      expect([store.health().ok, t.core.repo.health!().ok]).toEqual([false, false]);

      goOn();
      await expect.poll(() => cut, { timeout: 3000, interval: 10 }).toBeDefined();
      expect(cut!.ok).toBe(false);
      expect(cut!.err).toBeInstanceOf(StoreUnavailableError);
      expect((cut!.err as StoreUnavailableError).status).toBe(503);

      // Every kind of call fails at once with the 503-class error.
      expectUnreachable(await failure(store.get('job', 'acked-0')));
      expectUnreachable(await failure(store.all('job')));
      expectUnreachable(await failure(store.transaction((tx) => tx.insert('job', { uuid: 'during' }))));

      // The API: 503 with ZStack's error body for a query, an action, even login.
      const q = await request(t.app).get('/zstack/v1/zones').set(t.auth);
      expect(q.status).toBe(503);
      expect(q.body.error).toMatchObject({ code: 'SYS.1000', description: expect.any(String), details: expect.stringMatching(/^database unreachable since .+: /) });
      const create = await request(t.app).post('/zstack/v1/zones').set(t.auth).send({ params: { name: 'during' } });
      expect(create.status).toBe(503);
      const login = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
      expect(login.status).toBe(503);
      // What does not need the database still answers.
      expect((await request(t.app).get('/zstack/v1/openapi.json')).status).toBe(200);

      await server.start();
      const up = await healthBecomes(store, true, 5000);
      expect(up.since).toBeGreaterThanOrEqual(down.since);
      await healthBecomes(t.core.repo as PgStore, true, 5000);
      expect(changes.map((h) => h.ok)).toEqual([false, true]);

      // Writes work again, through the store and the API (the session outlived the outage).
      await store.transaction((tx) => tx.insert('job', { uuid: 'after' }));
      expect(await store.get('job', 'after')).toEqual({ uuid: 'after' });
      const z = await call(t, 'post', '/zones', { params: { name: 'after' } });
      expect(z.status).toBe(200);

      // Everything acknowledged before is there; the cut transaction left nothing.
      for (let i = 0; i < 20; i++) expect(await store.get('job', `acked-${i}`)).toEqual({ uuid: `acked-${i}`, n: i });
      expect(await store.get('job', 'cut-before-commit')).toBeUndefined();
      expect(await store.get('job', 'during')).toBeUndefined();
      const listed = await request(t.app).get('/zstack/v1/zones?fields=name&sort=+name').set(t.auth);
      expect(listed.status).toBe(200);
      expect(listed.body.inventories.map((x: { name: string }) => x.name)).toEqual(['after', 'before-0', 'before-1', 'before-2']);
    } finally {
      await store.close();
      await t.close();
    }
  });

  it('killed (SIGKILL, as a power cut) and restarted: every acknowledged write is there', async () => {
    const store = await PgStore.open(server.url, { log: quiet, statementTimeoutMs: STATEMENT_TIMEOUT_MS, retryMs: 25, retryMaxMs: 250 });
    try {
      const acked: string[] = [];
      // Writers in flight when the server dies: each one either acknowledged (and kept) or failed.
      let stop = false;
      const writers = [0, 1, 2, 3].map(async (w) => {
        for (let i = 0; !stop; i++) {
          const uuid = `kill-${w}-${i}`;
          try {
            await store.transaction((tx) => tx.insert('job', { uuid }));
            acked.push(uuid);
          } catch (err) {
            expect(err).toBeInstanceOf(StoreUnavailableError);
            return;
          }
        }
      });
      await expect.poll(() => acked.length, { timeout: 5000, interval: 5 }).toBeGreaterThan(50);
      await server.kill();
      stop = true;
      await Promise.all(writers);
      await healthBecomes(store, false, 3000);
      await server.start();
      await healthBecomes(store, true, 5000);
      const have = new Set((await store.all<{ uuid: string }>('job')).map((r) => r.uuid));
      const lost = acked.filter((u) => !have.has(u));
      expect(lost).toEqual([]);
      expect(acked.length).toBeGreaterThan(50);
    } finally {
      await store.close();
    }
  });
});
