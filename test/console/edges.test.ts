/**
 * The console's edges without a browser: domain events (after commit, bounded log, queried
 * with the query language), the cookie session's CSRF rule, /metrics access and content,
 * and the OpenAPI document kept in step with express's routes.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventRow, HostRow } from '../../protocol/resources.ts';
import { createApp } from '../../controller/api/app.ts';
import { OPERATIONS } from '../../controller/api/openapi.ts';
import { EventLog, recordEvent, withCommitHooks } from '../../controller/events.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { makeCluster, makeHost, makeZone, makeController, setStatus, silentLog, tempDir, type TestController } from '../helpers.ts';
import { FakeClock } from '../fakes/clock.ts';

let t: TestController;
let host: HostRow;
let cookie: string;

beforeAll(async () => {
  t = await makeController();
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  host = await makeHost(t, cluster.uuid);
  const r = await request(t.app).put('/console/session').send({ logInByAccount: { accountName: 'admin', password: 'test-admin-password' } });
  expect(r.status).toBe(200);
  cookie = (r.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
});
afterAll(() => t?.close());

describe('domain events', () => {
  it('are heard after their transaction commits, and not at all when it fails', async () => {
    const heard: EventRow[][] = [];
    const off = t.core.events.on((rows) => heard.push([...rows]));
    let inside = -1;
    await t.core.repo.transaction(async (tx) => {
      await t.core.hosts.applyStatusEvent(tx, host.uuid, 'connecting');
      inside = heard.length;
    });
    expect(inside).toBe(0);
    expect(heard.flat().map((e) => [e.type, e.to])).toEqual([['HostStatusChanged', 'Connecting']]);
    await expect(t.core.repo.transaction(async (tx) => {
      await t.core.hosts.applyStatusEvent(tx, host.uuid, 'connected');
      throw new Error('no');
    })).rejects.toThrow('no');
    expect(heard).toHaveLength(1);
    off();
    await setStatus(t, host.uuid, 'Disconnected');
  });

  it('are kept in the store and queried with the query language', async () => {
    const r = await request(t.app).get(`/zstack/v1/events?q=resourceUuid=${host.uuid}&q=type=HostStatusChanged&sort=-createDate&replyWithCount=true`).set(t.auth);
    expect(r.status).toBe(200);
    expect(r.body.total).toBeGreaterThanOrEqual(1);
    expect(r.body.inventories[0]).toMatchObject({ type: 'HostStatusChanged', resourceType: 'HostVO', hostUuid: host.uuid });
    expect(r.body.schema['inventories[0]']).toBe('org.hostkeeper.event.EventInventory');
    expect((await request(t.app).get('/zstack/v1/events?q=colour=red').set(t.auth)).status).toBe(400);
  });

  it('drop the oldest rows past the cap', async () => {
    const dir = await tempDir();
    const events = new EventLog(new FakeClock(), silentLog(), { cap: 10, slack: 2 });
    const repo = withCommitHooks(await EmbeddedStore.open(dir, { sync: false }), { events });
    await events.start(repo);
    for (let i = 0; i < 25; i++) {
      await repo.transaction((tx) => recordEvent(tx, { type: 'JobFinished', resourceType: 'ApiJob', resourceUuid: `j${i}`, message: `job ${i}` }));
      await events.settle();
    }
    const left = await repo.all<EventRow>('event');
    expect(left.length).toBeLessThanOrEqual(12);
    expect(left.at(-1)!.resourceUuid).toBe('j24');
    expect(left.map((e) => e.resourceUuid)).not.toContain('j0');
    await repo.close();
  });
});

describe('the console cookie is taken only where a forged request can do no harm', () => {
  it.each([
    { what: 'a GET with the cookie', method: 'get', path: '/zstack/v1/zones', header: false, status: 200 },
    { what: 'the event log with the cookie', method: 'get', path: '/zstack/v1/events', header: false, status: 200 },
    { what: 'a POST with the cookie alone (a cross-site form)', method: 'post', path: '/zstack/v1/zones', header: false, status: 401 },
    { what: 'a POST with the cookie and the console header', method: 'post', path: '/zstack/v1/zones', header: true, status: 202 },
    { what: 'a DELETE with the cookie alone', method: 'delete', path: `/zstack/v1/hosts/${'0'.repeat(32)}`, header: false, status: 401 },
  ] as const)('$what -> $status', async ({ method, path, header, status }) => {
    let r = request(t.app)[method](path).set('Cookie', cookie);
    if (header) r = r.set('X-Hostkeeper-Console', '1');
    const res = await (method === 'post' ? r.send({ params: { name: 'by-console' } }) : r);
    expect(res.status).toBe(status);
  });

  it('sets the session HttpOnly and SameSite=Strict, and a wrong password says so', async () => {
    const ok = await request(t.app).put('/console/session').send({ logInByAccount: { accountName: 'admin', password: 'test-admin-password' } });
    expect(ok.headers['set-cookie']![0]).toMatch(/HttpOnly; SameSite=Strict; Path=\//);
    const bad = await request(t.app).put('/console/session').send({ logInByAccount: { accountName: 'admin', password: 'nope' } });
    expect(bad.status).toBe(401);
    expect(bad.body.error.code).toBe('ID.1000');
  });
});

describe('/metrics', () => {
  it.each([
    { what: 'no credentials', access: {}, headers: {}, status: 401 },
    { what: 'the right token', access: { token: 's3cret' }, headers: { Authorization: 'Bearer s3cret' }, status: 200 },
    { what: 'a wrong token', access: { token: 's3cret' }, headers: { Authorization: 'Bearer nope' }, status: 401 },
    { what: 'an admin session', access: {}, headers: 'auth', status: 200 },
    { what: 'open', access: { open: true }, headers: {}, status: 200 },
  ] as const)('$what -> $status', async ({ access, headers, status }) => {
    const { metricsRouter } = await import('../../controller/api/metrics.ts');
    const express = (await import('express')).default;
    const app = express();
    app.use(metricsRouter(t.core, (req) => /^OAuth\s+(\S+)$/.exec(req.get('authorization') ?? '')?.[1], access));
    app.use((err: { status?: number }, _req: unknown, res: { status(n: number): { end(): void } }, _next: unknown) => res.status(err.status ?? 500).end());
    const r = await request(app).get('/metrics').set(headers === 'auth' ? t.auth : headers);
    expect(r.status).toBe(status);
  });

  it('reports hosts by cluster x state x status from the store, and no per-host series', async () => {
    const r = await request(createApp(t.core)).get('/metrics').set(t.auth);
    expect(r.status).toBe(200);
    expect(r.text).toMatch(new RegExp(`hostkeeper_hosts\\{cluster="${host.clusterUuid}",cluster_name="cluster1",state="Enabled",status="Disconnected"\\} 1`));
    expect(r.text).toContain('hostkeeper_cluster_memory_bytes{');
    expect(r.text).toContain('hostkeeper_store_transaction_seconds_bucket');
    expect(r.text).toContain('hostkeeper_nodejs_eventloop_lag_seconds');
    expect(r.text).toMatch(/hostkeeper_certificate_expiry_timestamp_seconds\{controller="[^"]+",certificate="ca"\} \d+/);
    expect(r.text).not.toContain(host.uuid);
  });
});

describe('the OpenAPI document', () => {
  /** Every route under /zstack/v1 that express knows, as "METHOD /v1/path". */
  function routes(): string[] {
    const out = new Set<string>();
    const walk = (stack: any[], prefix: string) => {
      for (const layer of stack) {
        if (layer.route) {
          for (const m of Object.keys(layer.route.methods)) out.add(`${m.toUpperCase()} ${prefix}${layer.route.path}`);
        } else if (layer.handle?.stack) {
          // Express 5 keeps a mounted router's path only in its matcher; /zstack is the one API mount.
          const mount = layer.matchers?.[0]?.('/zstack/x') ? '/zstack' : '';
          walk(layer.handle.stack, prefix + mount);
        }
      }
    };
    walk((createApp(t.core) as any).router.stack, '');
    return [...out].filter((r) => r.includes(' /zstack/v1/')).map((r) => r.replace(' /zstack', ' ')).sort();
  }

  it('describes every route and no route that does not exist', () => {
    const documented = OPERATIONS.map((o) => `${o.method.toUpperCase()} ${o.path}`).sort();
    expect(routes().length).toBeGreaterThan(25);
    // openapi.json itself is the document, not an operation in it.
    expect(routes().filter((r) => !r.endsWith('/openapi.json') && !r.endsWith('/api-reference'))).toEqual(documented);
  });

  it('is OpenAPI 3.1 with request schemas from zod and the ZStack error shape', async () => {
    const r = await request(t.app).get('/zstack/v1/openapi.json');
    expect(r.status).toBe(200);
    expect(r.body.openapi).toBe('3.1.0');
    const add = r.body.paths['/zstack/v1/hosts/kvm'].post;
    expect(add.requestBody.content['application/json'].schema.properties.params.required).toEqual(expect.arrayContaining(['name', 'managementIp', 'clusterUuid']));
    expect(add.responses['202']).toBeDefined();
    expect(r.body.components.schemas.Error.properties.error.required).toEqual(['code', 'description']);
  });
});
