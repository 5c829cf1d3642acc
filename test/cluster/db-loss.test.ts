/**
 * Losing the database under two controllers (issue 12's test, on a PostgreSQL server of the
 * test's own: test/pg-private.ts): the server stopped for 10 s and started again -> the API
 * answers 503 meanwhile, no acknowledged change is lost, and every host is Connected again
 * and held by exactly one controller.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PrivatePostgres, privatePostgresUnavailable, startPrivatePostgres } from '../pg-private.ts';
import { tempDir } from '../helpers.ts';
import { ClusterHarness, within, type Member } from './harness.ts';

const HOSTS = 30;
const unavailable = privatePostgresUnavailable();

describe.skipIf(!!unavailable)(unavailable ?? 'two controllers losing their database for 10 s', () => {
  let pg: PrivatePostgres;
  let h: ClusterHarness;
  let a: Member;
  let b: Member;

  beforeAll(async () => {
    pg = await startPrivatePostgres();
    h = new ClusterHarness({ databaseUrl: pg.url, fleetDir: await tempDir(), firstIp: '127.9.4.1' });
    a = await h.add('a');
    b = await h.add('b');
    await h.startFleet(a, HOSTS);
  }, 180_000);

  afterAll(async () => {
    await h?.stop();
    await pg?.close();
  });

  it('503 while it is gone; nothing acknowledged lost; hosts Connected and held once after', async () => {
    await within(15_000, 'both controllers hold a share', async () => {
      const o = await h.ownership();
      return o.wrong.length === 0 && Object.values(o.shares).every((n) => n > 0) && o;
    });
    // Writes through both controllers, then the database goes away in the middle of more.
    const acked: string[] = [];
    let stop = false;
    const writer = async (m: Member, tag: string) => {
      for (let i = 0; !stop; i++) {
        const r = await h.api(m, 'POST', '/zones', { params: { name: `${tag}-${i}` } }).catch(() => ({ status: 0, body: {} }));
        if (r.status === 202) {
          const done = await h.job(r.body.location, 60_000).catch(() => undefined);
          if (done?.status === 200) acked.push(`${tag}-${i}`);
        }
        await new Promise((ok) => setTimeout(ok, 20));
      }
    };
    const writers = [writer(a, 'a'), writer(b, 'b')];
    await new Promise((ok) => setTimeout(ok, 1_000));
    await pg.stop();
    const down = Date.now();
    // The API says so, clearly, on both.
    for (const m of [a, b]) {
      const r = await within(10_000, `${m.name} answers 503`, async () => {
        const x = await h.api(m, 'GET', '/zones');
        return x.status === 503 && x;
      });
      expect(JSON.stringify(r.value.body)).toMatch(/database/i);
    }
    await new Promise((ok) => setTimeout(ok, Math.max(0, 10_000 - (Date.now() - down))));
    await pg.start();
    stop = true;
    await Promise.all(writers);

    let last = '';
    const back = await within(30_000, 'all hosts Connected and held once', async () => {
      const o = await h.ownership();
      const n = await h.connected();
      last = `connected ${n}, shares ${JSON.stringify(o.shares)}, wrong ${o.wrong.slice(0, 3).join('; ')}`;
      return o.wrong.length === 0 && n === HOSTS && o;
    }).catch((err) => {
      throw new Error(`${(err as Error).message}: ${last}\n${h.members.map((m) => `${m.name}: ${m.proc?.output().slice(-1500)}`).join('\n')}`);
    });
    console.log(`database back: ${back.ms} ms to all ${HOSTS} hosts Connected and held once; shares ${JSON.stringify(back.value.shares)}; ${acked.length} writes acknowledged`);
    const names = new Set(((await h.api(a, 'GET', '/zones?limit=10000&fields=name')).body.inventories as { name: string }[]).map((z) => z.name));
    expect(acked.length).toBeGreaterThan(5);
    expect(acked.filter((n) => !names.has(n))).toEqual([]);
  }, 120_000);
});
