/**
 * A controller core on PostgreSQL (openCore with databaseUrl, as HOSTKEEPER_DATABASE_URL
 * does) driven through the API, end to end: what the store contract cannot see is whether the
 * services above it work on a store that may run a transaction twice and returns JSONB rows.
 * The same table of steps runs on the embedded store, and the answers must match.
 */
import { rm } from 'node:fs/promises';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../controller/api/app.ts';
import { openCore } from '../../controller/core.ts';
import { FakeClock } from '../fakes/clock.ts';
import { refusingSsh } from '../fakes/ssh.ts';
import { ADMIN_PASSWORD, call, makeCluster, makeHost, makeZone, silentLog, tempDir, type TestController } from '../helpers.ts';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from './db.ts';

async function controller(databaseUrl?: string): Promise<TestController> {
  const dir = await tempDir();
  const clock = new FakeClock();
  const core = await openCore({ dataDir: dir, databaseUrl, adminPassword: ADMIN_PASSWORD, clock, log: silentLog(), sync: false, deploy: { sshOpen: refusingSsh() } });
  const app = createApp(core);
  const res = await request(app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`);
  const session = res.body.inventory.uuid as string;
  return {
    core, app, clock, dir, session, auth: { Authorization: `OAuth ${session}` },
    async close() {
      await core.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The same story on a store; returns what a client saw, minus uuids and dates. */
async function story(t: TestController): Promise<unknown[]> {
  const seen: unknown[] = [];
  const strip = (x: any) =>
    JSON.parse(JSON.stringify(x ?? null, (k, v) => (/uuid$|Date$|^location$/i.test(k) ? '-' : typeof v === 'string' ? v.replace(/[0-9a-f]{32}/g, '<uuid>') : v)));
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  const h1 = await makeHost(t, cluster.uuid, { managementIp: '10.9.0.1', name: 'first' });
  await makeHost(t, cluster.uuid, { managementIp: '10.9.0.2', name: 'second' });
  const steps: [string, 'get' | 'put' | 'post' | 'delete', string, unknown?][] = [
    ['duplicate management IP', 'post', '/hosts/kvm', { params: { name: 'dup', managementIp: '10.9.0.1', clusterUuid: cluster.uuid, username: 'root', password: 'pw' } }],
    ['disable', 'put', `/hosts/${h1.uuid}/actions`, { changeHostState: { stateEvent: 'disable' } }],
    ['disable again', 'put', `/hosts/${h1.uuid}/actions`, { changeHostState: { stateEvent: 'disable' } }],
    ['query by state', 'get', '/hosts?q=state=Disabled&replyWithCount=true'],
    ['query joined', 'get', `/hosts?q=cluster.name=cluster1&q=name~=sec%25&fields=name,managementIp`],
    ['rename', 'put', `/hosts/${h1.uuid}/actions`, { updateHost: { name: 'renamed', managementIp: '10.9.0.2' } }],
    ['user tag', 'post', '/user-tags', { params: { resourceType: 'HostVO', resourceUuid: h1.uuid, tag: 'rack-7' } }],
    ['tags of the host', 'get', `/user-tags?q=resourceUuid=${h1.uuid}&fields=tag,type`],
    ['config', 'put', '/global-configurations/host/ping.interval/actions', { updateGlobalConfig: { value: '30' } }],
    ['delete', 'delete', `/hosts/${h1.uuid}`],
    ['hosts left', 'get', '/hosts?fields=name,state,status,managementIp'],
  ];
  for (const [what, method, path, body] of steps) {
    const r = method === 'get' ? await request(t.app).get(`/zstack/v1${path}`).set(t.auth).then((x) => ({ status: x.status, body: x.body })) : await call(t, method, path, body);
    seen.push([what, r.status, strip(r.body)]);
  }
  return seen;
}

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'a controller core on PostgreSQL' : NO_DATABASE, () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('answers the API as on the embedded store', async () => {
    const onPg = await controller(db.url);
    const onEmbedded = await controller();
    try {
      const [a, b] = [await story(onEmbedded), await story(onPg)];
      expect(b).toEqual(a);
      // The story refused, changed and queried something: not a vacuous match.
      expect(JSON.stringify(a)).toContain('already used');
      expect(JSON.stringify(a)).toContain('"total":1');
    } finally {
      await onPg.close();
      await onEmbedded.close();
    }
  });

  it('a second controller on the same database sees the first one\'s rows and admin', async () => {
    const one = await controller(db.url);
    const two = await controller(db.url);
    try {
      const zone = await makeZone(one, 'shared');
      const r = await request(two.app).get(`/zstack/v1/zones/${zone.uuid}`).set(two.auth);
      expect([r.status, r.body.inventories?.[0]?.name]).toEqual([200, 'shared']);
    } finally {
      await one.close();
      await two.close();
    }
  });
});
