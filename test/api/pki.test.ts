/**
 * The controller's side of TLS and bootstrap tokens: tokens listed (never the token) and
 * revoked, a use limit, registration only on the TLS agent port; certificate requests
 * (signed both ways); agent pushes refused after a controller restart when signed before it
 * (the replay fence); the admin API over HTTPS with a generated certificate.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import express from 'express';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { agentRouter, onAgentPort } from '../../controller/api/agent-api.ts';
import { startController } from '../../controller/server.ts';
import { insertHost } from '../../controller/services/inventory.ts';
import { ANSWER_SIG_HEADER, AUTH, CONTROLLER_AGENT_PATHS, signedHeaders, verifyAnswer } from '../../protocol/agent.ts';
import { caCertHash, PKI_PATHS } from '../../protocol/pki.ts';
import type { HostRow } from '../../protocol/resources.ts';
import type { Repository, Tx } from '../../controller/store/repository.ts';
import { FakeClock } from '../fakes/clock.ts';
import { ADMIN_PASSWORD, call, makeCluster, makeController, makeZone, silentLog, tempDir, type TestController } from '../helpers.ts';

const PUBLIC_KEY = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
const SECRET = 'ef'.repeat(32);

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (open.length) await open.pop()!().catch(() => {});
});

async function controller(clock?: FakeClock, dir?: string): Promise<TestController & { agentPort: number }> {
  const t = await makeController({ clock, dir });
  const srv = https.createServer({ key: t.core.pki.key(), cert: t.core.pki.cert(), ca: t.core.pki.caBundle, requestCert: true, rejectUnauthorized: false },
    express().use('/zstack/agent', onAgentPort, agentRouter(t.core)));
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const agentPort = (srv.address() as AddressInfo).port;
  t.core.agents.setAgentPort(agentPort);
  t.core.agentPort = agentPort;
  open.push(async () => {
    srv.closeAllConnections();
    await new Promise<void>((ok) => srv.close(() => ok()));
    await t.close();
  });
  return Object.assign(t, { agentPort });
}

/** A request to the agent port, checking the controller against its CA as an agent does. */
function agentPortPost(t: TestController & { agentPort: number }, path: string, body: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; text: string; headers: Record<string, unknown> }>((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: t.agentPort, path, method: 'POST', headers: { 'content-type': 'application/json', ...headers },
      ca: t.core.pki.caBundle, checkServerIdentity: () => undefined, agent: false,
    }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const register = (t: TestController & { agentPort: number }, token: string, ip: string) =>
  agentPortPost(t, CONTROLLER_AGENT_PATHS.register, JSON.stringify({ token, hostname: `h-${ip}`, managementIp: ip, port: 7070, publicKey: PUBLIC_KEY() }));

async function newToken(t: TestController, params: Record<string, unknown> = {}) {
  const clusterUuid = (await makeCluster(t, (await makeZone(t)).uuid)).uuid;
  const r = await request(t.app).post('/zstack/v1/hosts/bootstrap-tokens').set(t.auth).send({ params: { clusterUuid, ...params } });
  expect(r.status).toBe(200);
  return r.body.inventory as { uuid: string; token: string; caCertHash: string; maxUses?: number };
}

describe('bootstrap tokens', () => {
  it('carry the CA hash agents pin; are listed without the token; DeleteBootstrapToken revokes at once', async () => {
    const t = await controller();
    const tk = await newToken(t);
    expect(tk.caCertHash).toBe(t.core.pki.caCertHash);
    expect(tk.caCertHash).toBe(caCertHash(t.core.pki.caCert));
    const list = await request(t.app).get('/zstack/v1/hosts/bootstrap-tokens').set(t.auth);
    expect(list.status).toBe(200);
    expect(list.body.inventories).toEqual([expect.objectContaining({ uuid: tk.uuid, uses: 0, maxUses: null, caCertHash: tk.caCertHash })]);
    expect(JSON.stringify(list.body)).not.toContain(tk.token.split('.')[1]);
    expect(Object.keys(list.body.inventories[0]).sort()).toEqual(['caCertHash', 'clusterUuid', 'createDate', 'expiredDate', 'maxUses', 'uses', 'uuid']);
    expect((await register(t, tk.token, '127.0.0.61')).status).toBe(200);
    const del = await call(t, 'delete', `/hosts/bootstrap-tokens/${tk.uuid}`);
    expect(del.status).toBe(200);
    expect((await register(t, tk.token, '127.0.0.62')).status).toBe(401);
    expect((await request(t.app).get('/zstack/v1/hosts/bootstrap-tokens').set(t.auth)).body.inventories).toEqual([]);
    // hosts it registered stay
    expect(await t.core.repo.find<HostRow>('host', { managementIp: '127.0.0.61' })).toHaveLength(1);
    // an unknown one: the job fails with 404's code
    const again = await call(t, 'delete', `/hosts/bootstrap-tokens/${tk.uuid}`);
    expect(again.status).toBe(503);
  });

  it.each([
    ['without maxUses: any number of hosts until it expires', undefined, [200, 200, 200]],
    ['maxUses 2: two hosts, then refused', 2, [200, 200, 401]],
  ])('%s', async (_n, maxUses, statuses) => {
    const t = await controller();
    const tk = await newToken(t, maxUses ? { maxUses } : {});
    const got = [];
    for (const [i] of statuses.entries()) got.push((await register(t, tk.token, `127.0.0.${70 + i}`)).status);
    expect(got).toEqual(statuses);
    const [row] = (await request(t.app).get('/zstack/v1/hosts/bootstrap-tokens').set(t.auth)).body.inventories;
    expect(row.uses).toBe(statuses.filter((s) => s === 200).length);
  });

  it('registration is refused on the plain admin port (its answer holds the secret), answered with a certificate over TLS', async () => {
    const t = await controller();
    const tk = await newToken(t);
    const plain = await request(t.app).post(CONTROLLER_AGENT_PATHS.register).send({ token: tk.token, hostname: 'p', managementIp: '127.0.0.80', port: 7070, publicKey: PUBLIC_KEY() });
    expect(plain.status).toBe(403);
    expect(plain.body.error).toMatch(/TLS only/);
    expect(await t.core.repo.find<HostRow>('host', { managementIp: '127.0.0.80' })).toEqual([]);
    const r = await register(t, tk.token, '127.0.0.80');
    const body = JSON.parse(r.text);
    const cert = new X509Certificate(body.certificate);
    expect(cert.subject).toBe(`CN=${body.hostUuid}`);
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.80');
    expect(cert.verify(new X509Certificate(t.core.pki.caCert).publicKey)).toBe(true);
    expect((await t.core.repo.get<HostRow>('host', body.hostUuid))!.agentCertNotAfter).toBe(Date.parse(cert.validTo));
  });
});

describe('registration is one transaction', () => {
  const tokenRow = (t: TestController, uuid: string) => t.core.repo.get<{ uuid: string; uses?: number }>('bootstrapToken', uuid);

  /**
   * Makes every write to a host row that carries `field` throw, until undone. core.repo is a
   * Proxy over the store (controller/events.ts withCommitHooks) that calls the store's own
   * transaction(); an own property set through the Proxy lands on the store and shadows it.
   */
  function failHostWritesWith(t: TestController, field: string): () => void {
    const repo = t.core.repo as Repository & { transaction: Repository['transaction'] };
    const orig = (Object.getPrototypeOf(repo) as Repository).transaction;
    repo.transaction = function <T>(this: Repository, fn: (tx: Tx) => Promise<T>): Promise<T> {
      return orig.call(this, (tx: Tx) => fn(new Proxy(tx, {
        get(target, prop, recv) {
          const v = Reflect.get(target, prop, recv);
          if (prop !== 'insert' && prop !== 'update') return typeof v === 'function' ? v.bind(target) : v;
          return (kind: string, ...rest: unknown[]) => {
            const row = rest[rest.length - 1] as Record<string, unknown>;
            if (kind === 'host' && field in row) throw new Error(`injected: writing host.${field} failed`);
            return (v as (...a: unknown[]) => unknown).call(target, kind, ...rest);
          };
        },
      }))) as Promise<T>;
    };
    return () => {
      delete (repo as Partial<typeof repo>).transaction;
    };
  }

  it('a failure issuing the certificate leaves the token unused and no host', async () => {
    const t = await controller();
    const tk = await newToken(t, { maxUses: 1 });
    const issue = t.core.pki.issueAgent;
    t.core.pki.issueAgent = async () => {
      throw new Error('injected: the CA failed');
    };
    const r = await register(t, tk.token, '127.0.0.101');
    expect(r.status).toBe(500);
    expect(r.text).not.toMatch(/\bat .*\.ts:\d+/);
    expect((await tokenRow(t, tk.uuid))!.uses).toBe(0);
    expect(await t.core.repo.all('host')).toEqual([]);
    t.core.pki.issueAgent = issue;
    // the token still works for its one use
    expect((await register(t, tk.token, '127.0.0.101')).status).toBe(200);
    expect((await tokenRow(t, tk.uuid))!.uses).toBe(1);
  });

  it.each([['agentCertNotAfter'], ['agentSecret'], ['managementIp']])(
    'a failure storing the host (its %s) leaves the token unused and no host', async (field) => {
      const t = await controller();
      const tk = await newToken(t, { maxUses: 1 });
      const undo = failHostWritesWith(t, field);
      const r = await register(t, tk.token, '127.0.0.102');
      undo();
      expect(r.status).toBe(500);
      expect((await tokenRow(t, tk.uuid))!.uses).toBe(0);
      expect(await t.core.repo.all('host')).toEqual([]);
      expect(JSON.parse(r.text).error).toContain(`injected: writing host.${field} failed`);
      expect((await register(t, tk.token, '127.0.0.102')).status).toBe(200);
    },
  );

  it('two agents racing for a maxUses=1 token get exactly one host', async () => {
    const t = await controller();
    const tk = await newToken(t, { maxUses: 1 });
    const got = await Promise.all([register(t, tk.token, '127.0.0.103'), register(t, tk.token, '127.0.0.104')]);
    expect(got.map((r) => r.status).sort()).toEqual([200, 401]);
    expect(await t.core.repo.all('host')).toHaveLength(1);
    expect((await tokenRow(t, tk.uuid))!.uses).toBe(1);
  });

  it('two agents racing for one address get exactly one host, and one use of the token', async () => {
    const t = await controller();
    const tk = await newToken(t);
    const got = await Promise.all([register(t, tk.token, '127.0.0.105'), register(t, tk.token, '127.0.0.105')]);
    expect(got.map((r) => r.status).sort()).toEqual([200, 409]);
    expect(JSON.parse(got.find((r) => r.status === 409)!.text).error).toMatch(/managementIp.*already used/);
    expect(await t.core.repo.all('host')).toHaveLength(1);
    expect((await tokenRow(t, tk.uuid))!.uses).toBe(1);
  });
});

describe('certificate requests and pushes', () => {
  async function hostWithSecret(t: TestController, ip = '127.0.0.90') {
    const clusterUuid = (await makeCluster(t, (await makeZone(t)).uuid)).uuid;
    return t.core.repo.transaction(async (tx) => {
      const h = await insertHost(tx, t.clock.now(), { name: 'h', managementIp: ip, clusterUuid }, 'Disconnected', 'test');
      return tx.update<HostRow>('host', h.uuid, { agentSecret: SECRET });
    });
  }

  it('issues a certificate for a signed request (answer signed with the host secret) on either port; refuses an unsigned one', async () => {
    const clock = new FakeClock(Date.now());
    const t = await controller(clock);
    const h = await hostWithSecret(t);
    const body = JSON.stringify({ publicKey: PUBLIC_KEY() });
    for (const port of ['plain', 'tls'] as const) {
      const headers = signedHeaders(SECRET, h.uuid, 'POST', PKI_PATHS.certificate, body, clock.now());
      const r = port === 'tls' ? await agentPortPost(t, PKI_PATHS.certificate, body, headers)
        : await request(t.app).post(PKI_PATHS.certificate).set(headers).send(body).then((x) => ({ status: x.status, text: x.text, headers: x.headers }));
      expect(r.status).toBe(200);
      expect(verifyAnswer(SECRET, 200, headers[AUTH.nonce]!, r.text, r.headers[ANSWER_SIG_HEADER] as string)).toBe(true);
      const rsp = JSON.parse(r.text);
      expect(new X509Certificate(rsp.certificate).subject).toBe(`CN=${h.uuid}`);
      expect(rsp).toMatchObject({ caCertificates: t.core.pki.caBundle, agentPort: t.agentPort });
    }
    const unsigned = await agentPortPost(t, PKI_PATHS.certificate, body);
    expect(unsigned.status).toBe(401);
    const bad = JSON.stringify({ publicKey: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' });
    expect((await agentPortPost(t, PKI_PATHS.certificate, bad, signedHeaders(SECRET, h.uuid, 'POST', PKI_PATHS.certificate, bad, clock.now()))).status).toBe(400);
  });

  it.each([
    ['signed before the restart', 0],
    ['signed ahead of the controller\'s clock, before the restart', 10_000],
  ])('a push %s is refused after a controller restart (the replay fence)', async (_n, ahead) => {
    const dir = await tempDir();
    const clock = new FakeClock(Date.now());
    const t = await makeController({ clock, dir });
    const h = await hostWithSecret(t);
    const text = JSON.stringify({ facts: 'not checked before the signature' });
    const headers = signedHeaders(SECRET, h.uuid, 'POST', CONTROLLER_AGENT_PATHS.facts, text, clock.now() + ahead);
    // accepted once (400: the body is bad, but it got past the signature and the fence)...
    expect((await request(t.app).post(CONTROLLER_AGENT_PATHS.facts).set(headers).send(text)).status).toBe(400);
    expect((await request(t.app).post(CONTROLLER_AGENT_PATHS.facts).set(headers).send(text)).status).toBe(401);
    await t.close();
    // ...and not again by the next process, within the skew window and before the signing time
    clock.advance(1_000);
    const t2 = await makeController({ clock, dir });
    open.push(() => t2.close());
    expect((await request(t2.app).post(CONTROLLER_AGENT_PATHS.facts).set(headers).send(text)).status).toBe(401);
    const fresh = signedHeaders(SECRET, h.uuid, 'POST', CONTROLLER_AGENT_PATHS.facts, text, clock.now() + ahead + 2_000);
    expect((await request(t2.app).post(CONTROLLER_AGENT_PATHS.facts).set(fresh).send(text)).status).toBe(400);
  });
});

describe('the admin API over HTTPS', () => {
  it('generates a certificate on request, keeps it across restarts (same fingerprint), and answers only TLS', async () => {
    const dir = await tempDir();
    const start = () => startController({ dataDir: dir, port: 0, host: '127.20.0.9', adminPassword: ADMIN_PASSWORD, log: silentLog(), sync: false, https: 'self-signed', loadHosts: false });
    const c = await start();
    open.push(() => c.close());
    expect(c.url).toMatch(/^https:\/\/127\.20\.0\.9:\d+$/);
    const pem = await readFile(`${dir}/tls/admin-cert.pem`, 'utf8');
    expect(new X509Certificate(pem).fingerprint256).toBe(c.fingerprint);
    const login = await new Promise<number>((resolve, reject) => {
      const req = https.request(`${c.url}/zstack/v1/accounts/login`, { method: 'PUT', ca: [pem], agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } }));
    });
    expect(login).toBe(200);
    const plain = await fetch(c.url.replace('https:', 'http:') + '/zstack/v1/zones').then((r) => r.status, () => 'refused');
    expect(plain).not.toBe(200);
    const fp = c.fingerprint;
    await c.close();
    const again = await start();
    open.push(() => again.close());
    expect(again.fingerprint).toBe(fp);
  });

  it('stays plain HTTP by default, with the agent port speaking TLS beside it', async () => {
    const c = await startController({ dataDir: await tempDir(), port: 0, host: '127.20.0.10', adminPassword: ADMIN_PASSWORD, log: silentLog(), sync: false, loadHosts: false });
    open.push(() => c.close());
    expect(c.url).toMatch(/^http:\/\//);
    expect(c.fingerprint).toBeUndefined();
    const ca = await fetch(`${c.url}${PKI_PATHS.ca}`).then((r) => r.json() as Promise<{ caCertHash: string; agentPort: number }>);
    expect(ca).toMatchObject({ caCertHash: c.core.pki.caCertHash, agentPort: c.agentPort });
    const peer = await new Promise<X509Certificate>((resolve, reject) => {
      const s = tls.connect({ host: '127.20.0.10', port: c.agentPort, ca: c.core.pki.caBundle, checkServerIdentity: () => undefined }, () => {
        resolve(s.getPeerX509Certificate()!);
        s.end();
      });
      s.on('error', reject);
    });
    expect(peer.subject).toBe('CN=hostkeeper-controller');
  });
});

describe('the controller\'s own certificate', () => {
  it('is renewed once 2/3 of its life has passed (housekeeping tick), listeners told; the CA stays', async () => {
    const { EmbeddedStore } = await import('../../controller/store/embedded-store.ts');
    const { Pki } = await import('../../controller/pki/ca.ts');
    const repo = await EmbeddedStore.open(await tempDir(), { sync: false, log: silentLog() });
    open.push(() => repo.close());
    let wall = Date.now();
    const pki = await Pki.open(repo, silentLog(), () => wall);
    const first = pki.cert();
    let told = 0;
    pki.onRenew(() => told++);
    const v = new X509Certificate(first);
    const due = Date.parse(v.validFrom) + (Date.parse(v.validTo) - Date.parse(v.validFrom)) * (2 / 3);
    wall = due - 60_000;
    await pki.renewIfDue();
    expect([pki.cert(), told]).toEqual([first, 0]);
    wall = due + 1_000;
    await pki.renewIfDue();
    expect(pki.cert()).not.toBe(first);
    expect(told).toBe(1);
    expect(new X509Certificate(pki.cert()).verify(new X509Certificate(pki.caCert).publicKey)).toBe(true);
    // a second controller on the same store shares the CA
    const other = await Pki.open(repo, silentLog());
    expect(other.caCertHash).toBe(pki.caCertHash);
  });
});

describe('replacing the CA online', () => {
  it('trusts the new CA at once, issues from it once every connected host has renewed, drops the old one after the next renewals; no restart', async () => {
    const { Pki, ADOPT_MARGIN_MS } = await import('../../controller/pki/ca.ts');
    const t = await controller();
    const clusterUuid = (await makeCluster(t, (await makeZone(t)).uuid)).uuid;
    const hostAt = (ip: string, status: HostRow['status']) => t.core.repo.transaction(async (tx) => {
      const h = await insertHost(tx, t.clock.now(), { name: `h-${ip}`, managementIp: ip, clusterUuid }, status, 'test');
      return tx.update<HostRow>('host', h.uuid, { agentSecret: SECRET, agentCertNotAfter: Date.now() - 1000 });
    });
    const h = await hostAt('127.0.0.120', 'Connected');
    await hostAt('127.0.0.121', 'Disconnected'); // not waited for
    const oldCa = t.core.pki.caCert;
    // The agent renews its certificate as it does over the channel (the same call the route makes).
    const renew = async (pki: Awaited<ReturnType<typeof Pki.open>>) => {
      const issued = await pki.issueAgent(h.uuid, h.managementIp, PUBLIC_KEY());
      await t.core.repo.transaction((tx) => tx.update<HostRow>('host', h.uuid, { agentCertNotAfter: issued.notAfter }));
      return new X509Certificate(issued.cert);
    };
    const signedBy = (cert: X509Certificate, ca: string) => cert.verify(new X509Certificate(ca).publicKey);

    // A second controller on the same store, with a clock of its own, starts it.
    let wall = Date.now();
    const other = await Pki.open(t.core.repo, silentLog(), () => wall);
    const started = await other.startRotation();
    expect(started).toMatchObject({ phase: 'prepared', issuing: caCertHash(oldCa), waiting: 1 });
    expect(started.waitingFor[0]).toContain(h.uuid);
    const newCa = other.caBundle.split(/(?<=-----END CERTIFICATE-----)\n/).map((p) => p.trim()).find((p) => p && p !== oldCa.trim())!;
    expect(caCertHash(newCa)).toBe(started.next);
    // A second start is refused while this one runs.
    await expect(other.startRotation()).rejects.toMatchObject({ code: 'SYS.1006' });

    // The running controller adopts the row at its housekeeping tick: both CAs trusted, the old one issues.
    let told = 0;
    t.core.pki.onRenew(() => told++);
    await t.core.pki.renewIfDue();
    expect(told).toBe(1);
    expect(t.core.pki.caBundle).toContain(newCa.trim());
    expect(t.core.pki.caCert).toBe(oldCa);

    // Not before the connected host has a certificate carrying the new bundle.
    await renew(t.core.pki); // issued too early to count: another controller may not have adopted yet
    await other.renewIfDue();
    expect((await other.rotationStatus()).phase).toBe('prepared');
    wall += ADOPT_MARGIN_MS + 60_000;
    const carrying = await renew(other);
    expect(signedBy(carrying, oldCa)).toBe(true);
    await other.renewIfDue();
    expect(await other.rotationStatus()).toMatchObject({ phase: 'switched', issuing: caCertHash(newCa), waiting: 1 });
    // The new CA issues, the controller's own certificate first; the old CA stays trusted.
    expect(signedBy(new X509Certificate(other.cert()), newCa)).toBe(true);
    expect(other.caBundle).toContain(oldCa.trim());
    await t.core.pki.renewIfDue();
    expect(t.core.pki.caCert).toBe(newCa);
    expect(signedBy(new X509Certificate(t.core.pki.cert()), newCa)).toBe(true);
    expect(t.core.pki.caCertHash).toBe(caCertHash(newCa)); // what new bootstrap tokens pin

    // Dropped once the connected host holds a certificate from the new CA.
    await other.renewIfDue();
    expect((await other.rotationStatus()).phase).toBe('switched');
    wall += ADOPT_MARGIN_MS + 60_000;
    expect(signedBy(await renew(other), newCa)).toBe(true);
    await other.renewIfDue();
    expect(await other.rotationStatus()).toMatchObject({ phase: 'none', issuing: caCertHash(newCa), waiting: 0 });
    expect(other.caBundle.trim()).toBe(newCa.trim());
    await t.core.pki.renewIfDue();
    expect(t.core.pki.caBundle.trim()).toBe(newCa.trim());
    // Each change reached the listeners (server.ts swaps the agent port's TLS context on them).
    expect(told).toBe(3);
  });
});
