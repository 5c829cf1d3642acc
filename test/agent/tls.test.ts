/**
 * TLS on the agent's port and its certificate's life: a certified agent takes only the
 * controller's certificate from its pinned CA; the controller takes only the agent's
 * certificate from its CA for that host; registration pins the CA by hash before anything
 * secret is sent; a deployed agent gets its certificate with its secret; renewal at 2/3 of
 * the life swaps the certificate without touching open connections.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { RegistrationRefused } from '../../agent/register.ts';
import { newKey } from '../../agent/tls.ts';
import { AgentClient, type AgentTarget } from '../../controller/agents/client.ts';
import { AGENT_PATHS, signedHeaders } from '../../protocol/agent.ts';
import { AGENT_CERT_LIFETIME_MS, PKI_PATHS, RENEW_AT } from '../../protocol/pki.ts';
import { FakeClock } from '../fakes/clock.ts';
import { type TestCa, testCa } from '../fakes/pki.ts';
import {
  fakeController, HOST_UUID, makeAgent, presentClientCert, SECRET, signedPost, tempDir, until, writeAgentJson,
} from './helpers.ts';

const FAST = { initialMs: 5, maxMs: 20 };

/** A state dir holding HOST_UUID's secret and a certificate from `ca` (as after registration). */
async function certifiedStateDir(ca: TestCa, cn = HOST_UUID): Promise<string> {
  const dir = await tempDir();
  await writeAgentJson(dir, { hostUuid: HOST_UUID, secret: SECRET });
  const key = await newKey();
  const { cert } = await ca.issue(cn, key.publicKey, ['127.0.0.1']);
  await mkdir(join(dir, 'tls'), { recursive: true });
  await writeFile(join(dir, 'tls', 'key.pem'), key.privateKey, { mode: 0o600 });
  await writeFile(join(dir, 'tls', 'cert.pem'), cert);
  await writeFile(join(dir, 'tls', 'ca.pem'), ca.caCert);
  return dir;
}

/** The certificate a TLS server at `url` presents (checks nothing). */
function presented(url: string): Promise<X509Certificate> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false }, () => {
      const raw = s.getPeerCertificate().raw;
      s.end();
      resolve(new X509Certificate(raw));
    });
    s.on('error', reject);
  });
}

describe('a certified agent (mutual TLS)', () => {
  it.each([
    ['no client certificate', 'none', 'refused'],
    ['a client certificate from another CA', 'other-ca', 'refused'],
    ['another agent\'s certificate from the CA, on a signed path', 'agent', 401],
    ['the controller\'s certificate from the CA', 'controller', 200],
  ] as const)('with %s: %s', async (_n, client, want) => {
    const ca = await testCa();
    const a = await makeAgent({ stateDir: await certifiedStateDir(ca) });
    expect(a.url).toMatch(/^https:/);
    expect(a.certificate().certified).toBe(true);
    const other = await testCa('Other CA');
    const creds = client === 'none' ? {} : client === 'other-ca' ? other.controller : client === 'agent' ? await ca.issue('e'.repeat(32)) : ca.controller;
    presentClientCert(creds as { key?: string; cert?: string });
    const got = await signedPost(a, AGENT_PATHS.echo, {}).then((x) => x.status, (e: Error) => (/socket hang up|ECONNRESET|EPIPE|alert/.test(e.message) ? 'refused' : e.message));
    expect(got).toBe(want);
  });

  it.each([
    ['an agent with a certificate from our CA for this host', 'right', undefined],
    ['an agent with a certificate from another CA', 'other-ca', /TLS/],
    ['an agent with our CA\'s certificate for another host', 'other-host', /TLS/],
  ] as const)('the controller accepts %s only when it is that host', async (_n, which, error) => {
    const ca = await testCa();
    const issuer = which === 'other-ca' ? await testCa('Other CA') : ca;
    const a = await makeAgent({ stateDir: await certifiedStateDir(issuer, which === 'other-host' ? 'f'.repeat(32) : HOST_UUID) });
    // A certified host: its certificate is checked (chain to our CA, CN = its uuid) before anything is sent.
    const target: AgentTarget = { uuid: HOST_UUID, managementIp: '127.0.0.1', agentPort: a.port, secret: SECRET, certified: true, tls: ca.tls };
    const r = await new AgentClient(() => Date.now(), 10, 10, ca.tls).call(target, AGENT_PATHS.echo, {}, 5_000).then(() => undefined, (e: Error) => e);
    if (!error) expect(r).toBeUndefined();
    else expect(r).toMatchObject({ kind: 'unauthorized', message: expect.stringMatching(error) });
  });

  it('an agent not certified yet serves a temporary self-signed certificate and checks no client certificate', async () => {
    const a = await makeAgent();
    expect(a.certificate().certified).toBe(false);
    expect((await presented(a.url)).subject).toContain('hostkeeper-agent-provisional');
    expect((await signedPost(a, AGENT_PATHS.echo, {})).status).toBe(200);
  });
});

describe('registration pins the controller CA by hash', () => {
  it('registers over TLS with the right hash: the token and the secret never travel in clear', async () => {
    const fc = await fakeController('good-token');
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', caCertHash: fc.ca.caCertHash, registerBackoff: FAST });
    await a.registered;
    expect(fc.seen).toEqual(['plain GET /zstack/agent/v1/ca', 'tls POST /zstack/agent/v1/register']);
    expect(a.certificate().certified).toBe(true);
    const mine = new X509Certificate(a.certificate().cert);
    expect(mine.subject).toBe(`CN=${a.config().hostUuid}`);
    expect(mine.verify(new X509Certificate(fc.ca.caCert).publicKey)).toBe(true);
    // the server presents it to new connections at once
    expect((await presented(a.url)).fingerprint256).toBe(mine.fingerprint256);
    expect(await readFile(join(a.stateDir, 'tls', 'ca.pem'), 'utf8')).toContain(fc.ca.caCert.trim());
  });

  it.each([
    ['a hash that is not the controller\'s', async (fc: Awaited<ReturnType<typeof fakeController>>) => ({ hash: (await testCa()).caCertHash, fc })],
    ['the right hash, but someone in the middle serves another CA', async (fc: Awaited<ReturnType<typeof fakeController>>) => {
      fc.servedCa = (await testCa('Impostor CA')).caCert;
      return { hash: fc.ca.caCertHash, fc };
    }],
  ])('refuses to register with %s, and sends nothing secret', async (_n, setup) => {
    const { hash, fc } = await setup(await fakeController('good-token'));
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', caCertHash: hash, registerBackoff: FAST });
    const err = await a.registered.then(() => undefined, (e: Error) => e);
    expect(err).toBeInstanceOf(RegistrationRefused);
    expect(err!.message).toMatch(/does not match --ca-cert-hash.*nothing was sent/);
    // Only the public CA was asked for: the token never left the host.
    expect(fc.seen).toEqual(['plain GET /zstack/agent/v1/ca']);
    expect(fc.registrations).toEqual([]);
    expect(a.config().secret).toBeUndefined();
  });
});

describe('the certificate over the channel', () => {
  it('a deployed agent (secret, no certificate) gets one with a signed request to the URL it knows, then uses the TLS port', async () => {
    const fc = await fakeController();
    fc.hosts.set(HOST_UUID, SECRET);
    const dir = await tempDir();
    await writeAgentJson(dir, { hostUuid: HOST_UUID, secret: SECRET, controllerUrl: fc.url });
    const a = await makeAgent({ stateDir: dir });
    await until(() => a.certificate().certified);
    expect(fc.certRequests).toEqual([HOST_UUID]);
    expect(fc.seen).toEqual([`plain POST ${PKI_PATHS.certificate}`]);
    expect(a.config().controllerUrl).toBe(fc.agentUrl);
    presentClientCert(fc.ca.controller);
    expect((await signedPost(a, AGENT_PATHS.echo, {})).status).toBe(200);
  });

  it('is renewed at 2/3 of its life, with a new key, and open connections carry on', async () => {
    const fc = await fakeController('good-token');
    // Certificates are judged on real time: start the fake clock there.
    const clock = new FakeClock(Date.now());
    fc.now = () => clock.now();
    const a = await makeAgent({ clock, withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', caCertHash: fc.ca.caCertHash, registerBackoff: FAST });
    await until(async () => {
      // registration backs off on the fake clock
      clock.advance(50);
      return a.certificate().certified;
    });
    await a.registered; // the renewal timer is set once registration has finished
    const first = a.certificate().cert;
    // A connection opened before the renewal (keep-alive, like a connect flow's session).
    const keep = new https.Agent({ keepAlive: true, maxSockets: 1, key: fc.ca.controller.key, cert: fc.ca.controller.cert, rejectUnauthorized: false });
    const echo = () => new Promise<{ status: number; reused: boolean; cert: string }>((resolve, reject) => {
      const path = AGENT_PATHS.echo;
      const req = https.request(`${a.url}${path}`, {
        method: 'POST', agent: keep, headers: { 'content-type': 'application/json', ...signedHeaders(a.config().secret!, a.config().hostUuid!, 'POST', path, '{}', clock.now()) },
      }, (res) => {
        const cert = (res.socket as tls.TLSSocket).getPeerX509Certificate()?.fingerprint256 ?? 'none';
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, cert }));
      });
      req.on('error', reject);
      req.end('{}');
    });
    const before = await echo();
    expect(before.status).toBe(200);
    // Just before 2/3: nothing; at 2/3: a request, over TLS to the agent port.
    clock.advance(AGENT_CERT_LIFETIME_MS * RENEW_AT - 60 * 60_000);
    expect(fc.certRequests).toEqual([]);
    clock.advance(60 * 60_000 + 5 * 60_000);
    await until(() => a.certificate().cert !== first, 15_000);
    expect(fc.certRequests).toEqual([a.config().hostUuid]);
    expect(fc.seen.at(-1)).toBe(`tls POST ${PKI_PATHS.certificate}`);
    const renewed = new X509Certificate(a.certificate().cert);
    expect(renewed.publicKey.export({ type: 'spki', format: 'pem' })).not.toBe(new X509Certificate(first).publicKey.export({ type: 'spki', format: 'pem' }));
    expect((await presented(a.url)).fingerprint256).toBe(renewed.fingerprint256);
    // the connection opened before the renewal carries on
    const after = await echo();
    expect(after).toMatchObject({ status: 200, reused: true });
    keep.destroy();
  });
});
