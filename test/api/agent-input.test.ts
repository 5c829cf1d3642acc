/**
 * What an agent sends is checked as strictly as what an admin sends: a facts push signed with
 * the host's own secret, and a registration with a valid bootstrap token, are refused (400
 * naming the field, or 409 for an address the inventory cannot take) when any field is out of
 * bounds, and then nothing in the store has changed. Also: management addresses are compared
 * in one spelling, whichever API they come through.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import https from 'node:https';
import express from 'express';
import { agentRouter, onAgentPort } from '../../controller/api/agent-api.ts';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBootstrapToken } from '../../controller/services/bootstrap.ts';
import { insertHost } from '../../controller/services/inventory.ts';
import { CONTROLLER_AGENT_PATHS, type HostFacts, signedHeaders } from '../../protocol/agent.ts';
import { checkFacts } from '../../protocol/agent-schemas.ts';
import { HkError } from '../../protocol/errors.ts';
import type { HostRow, TagRow } from '../../protocol/resources.ts';
import { call, makeCluster, makeController, makeZone, storeImage, type TestController, until } from '../helpers.ts';

const SECRET = 'cd'.repeat(32);
export const GOOD_FACTS: HostFacts = {
  osDistribution: 'debian', osRelease: 'bookworm', osVersion: '12', qemuImgVersion: '7.2.0', libvirtVersion: '9.0.0',
  hvm: 'vmx', cpuModel: 'Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz', cpuCores: 20, cpuSockets: 2, cpuNum: 40, cpuMhz: 2100,
  memoryBytes: 256 * 1024 ** 3, bootId: '8d2f0c1e-3f4a-4b5c-9d6e-7f8091a2b3c4', agentVersion: '0.1.0', hypervisor: 'libvirt',
  liveSnapshot: true,
};

let t: TestController;
let server: Server;
let agentServer: https.Server;
let hostUuid: string;
let clusterUuid: string;

beforeAll(async () => {
  t = await makeController();
  clusterUuid = (await makeCluster(t, (await makeZone(t)).uuid)).uuid;
  const h = await t.core.repo.transaction(async (tx) => {
    const row = await insertHost(tx, t.clock.now(), { name: 'pusher', managementIp: '127.0.0.12', clusterUuid }, 'Disconnected', 'test');
    return tx.update<HostRow>('host', row.uuid, { agentSecret: SECRET, agentPort: 9 });
  });
  hostUuid = h.uuid;
  // A real listener, so that the controller's own port is known (registration refuses it).
  server = t.app.listen(0, '127.0.0.1');
  await new Promise<void>((ok) => server.once('listening', () => ok()));
  // Registration is served on the TLS agent port only.
  const app = express().use('/zstack/agent', onAgentPort, agentRouter(t.core));
  agentServer = https.createServer({ key: t.core.pki.key(), cert: t.core.pki.cert(), ca: t.core.pki.caBundle, requestCert: true, rejectUnauthorized: false }, app);
  agentServer.listen(0, '127.0.0.1');
  await new Promise<void>((ok) => agentServer.once('listening', () => ok()));
  t.core.agents.setListenPort((server.address() as AddressInfo).port);
  t.core.agents.setAgentPort((agentServer.address() as AddressInfo).port);
});
afterAll(async () => {
  await new Promise<void>((ok) => server.close(() => ok()));
  await new Promise<void>((ok) => agentServer.close(() => ok()));
  await t.close();
});

function push(body: unknown) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const path = CONTROLLER_AGENT_PATHS.facts;
  return request(server).post(path).set(signedHeaders(SECRET, hostUuid, 'POST', path, text, t.clock.now())).send(text);
}
const withFact = (k: string, v: unknown) => ({ facts: { ...GOOD_FACTS, [k]: v } });
const without = (k: keyof HostFacts) => {
  const f: Record<string, unknown> = { ...GOOD_FACTS };
  delete f[k];
  return { facts: f };
};

describe('facts pushes', () => {
  // [what, body, the field the refusal names]
  it.each([
    ['hvm outside vmx/svm', withFact('hvm', 'abc'), 'facts.hvm'],
    ['a newline in the distribution', withFact('osDistribution', 'Ubuntu\nos::release::evil'), 'facts.osDistribution'],
    ['a 100 KB distribution', withFact('osDistribution', 'x'.repeat(100_000)), 'facts.osDistribution'],
    ['an object as the release', withFact('osRelease', { toString: 'x' }), 'facts.osRelease'],
    ['an array as the version', withFact('osVersion', ['1']), 'facts.osVersion'],
    ['a number as the cpu model', withFact('cpuModel', 5), 'facts.cpuModel'],
    ['a control character in the cpu model', withFact('cpuModel', 'Xeon\u0000'), 'facts.cpuModel'],
    ['a command in the qemu-img version', withFact('qemuImgVersion', '7.2.0; reboot'), 'facts.qemuImgVersion'],
    ['a 100 KB libvirt version', withFact('libvirtVersion', '9.'.repeat(50_000)), 'facts.libvirtVersion'],
    ['a negative cpu count', withFact('cpuNum', -1), 'facts.cpuNum'],
    ['a fractional cpu count', withFact('cpuSockets', 1.5), 'facts.cpuSockets'],
    ['a huge cpu count', withFact('cpuCores', 1e12), 'facts.cpuCores'],
    ['a cpu count as text', withFact('cpuNum', '32'), 'facts.cpuNum'],
    ['memory past 2^53', withFact('memoryBytes', 2 ** 60), 'facts.memoryBytes'],
    ['an unknown hypervisor', withFact('hypervisor', 'xen'), 'facts.hypervisor'],
    ['liveSnapshot as text', withFact('liveSnapshot', 'yes'), 'facts.liveSnapshot'],
    ['a boot id with a space', withFact('bootId', 'a b'), 'facts.bootId'],
    ['an empty agent version', withFact('agentVersion', ''), 'facts.agentVersion'],
    ['a missing field', without('bootId'), 'facts.bootId'],
    ['an unknown field', withFact('evil', 1), 'facts.evil'],
    ['an unknown top-level field', { facts: GOOD_FACTS, more: 1 }, 'more'],
    ['no facts', {}, 'facts'],
    ['facts null', { facts: null }, 'facts'],
    ['an array body', [GOOD_FACTS], 'body'],
    ['a JSON null body', 'null', 'body'],
    ['not JSON', '{"facts":', 'facts'],
  ])('refuses %s (400 naming %s), storing nothing', async (_what, body, field) => {
    const before = await storeImage(t);
    const r = await push(body);
    expect(r.status).toBe(400);
    expect(r.body.success).toBe(false);
    expect(r.body.error).toContain(field);
    expect(await storeImage(t)).toBe(before);
  });

  it('takes good facts and writes the metadata tags', async () => {
    const r = await push({ facts: { ...GOOD_FACTS, osRelease: '', hvm: null, qemuImgVersion: null } });
    expect(r.status).toBe(200);
    const tags = (await t.core.repo.find<TagRow>('tag', { resourceUuid: hostUuid })).map((x) => x.tag).sort();
    expect(tags).toEqual(['capability:liveSnapshot', 'libvirt::version::9.0.0', 'os::distribution::debian', 'os::version::12']);
  });
});

describe('checkFacts (for the connect flow)', () => {
  it('returns only the known fields, checked', () => {
    expect(checkFacts({ ...GOOD_FACTS })).toEqual(GOOD_FACTS);
  });
  it.each([
    [{ ...GOOD_FACTS, hvm: 'VMX' }, 'facts.hvm'],
    [{ ...GOOD_FACTS, osVersion: undefined }, 'facts.osVersion'],
    ['facts', 'facts'],
  ])('refuses %j naming %s', (x, field) => {
    let err: unknown;
    try {
      checkFacts(x);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HkError);
    expect((err as HkError).code).toBe('SYS.1007');
    expect((err as HkError).details).toContain(field);
  });
});

const PUBLIC_KEY = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;

/** POST to the agent port, checking the controller against its CA as an agent does. */
function postTls(body: unknown): Promise<{ status: number; json: () => Promise<any> }> {
  return new Promise((resolve, reject) => {
    const port = (agentServer.address() as AddressInfo).port;
    const req = https.request({
      host: '127.0.0.1', port, path: CONTROLLER_AGENT_PATHS.register, method: 'POST', headers: { 'content-type': 'application/json' },
      ca: t.core.pki.caBundle, checkServerIdentity: () => undefined, agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: async () => JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('registration', () => {
  const register = async (over: Record<string, unknown>) => {
    const { token } = await t.core.repo.transaction((tx) => createBootstrapToken(tx, t.clock.now(), clusterUuid));
    const body = { token, hostname: 'kvm-reg', managementIp: '127.0.0.40', port: 9, publicKey: PUBLIC_KEY, ...over };
    return postTls(body);
  };
  const ownPort = () => (server.address() as AddressInfo).port;

  // [what, body fields, status, words of the refusal]
  it.each([
    ['a blank host name', { hostname: '   ' }, 400, ['hostname', 'white space']],
    ['a newline in the host name', { hostname: 'kvm\n1' }, 400, ['hostname', 'control']],
    ['an escape sequence in the host name', { hostname: 'kvm\u001b[2J' }, 400, ['hostname', 'control']],
    ['a 256-character host name', { hostname: 'k'.repeat(256) }, 400, ['hostname', '255']],
    ['a port as text', { port: '7070' }, 400, ['port']],
    ['an unknown field', { extra: true }, 400, ['extra']],
    ['localhost', { managementIp: 'localhost' }, 409, ['managementIp', "controller's own"]],
    ['another spelling of a registered address', { managementIp: '0x7f.0.0.12' }, 409, ['managementIp', '127.0.0.12']],
    ['the registered address, IPv4-mapped', { managementIp: '::ffff:127.0.0.12' }, 409, ['managementIp', 'already used']],
    ['0.0.0.0/8', { managementIp: '0.1.2.3' }, 409, ['managementIp']],
    ['the controller\'s own API', { managementIp: '127.0.0.1', port: 'OWN' }, 409, ['managementIp', "controller's own API"]],
  ])('refuses %s, storing nothing', async (_what, over, status, words) => {
    const body = { ...over } as Record<string, unknown>;
    if (body.port === 'OWN') body.port = ownPort();
    const before = await t.core.repo.all('host');
    const r = await register(body);
    expect(r.status).toBe(status);
    const answer = (await r.json()) as { error: string };
    for (const w of words) expect(answer.error).toContain(w);
    expect(await t.core.repo.all('host')).toEqual(before);
  });

  it('stores an IPv4-mapped address as plain IPv4', async () => {
    const r = await register({ managementIp: '::FFFF:127.0.0.41', hostname: 'mapped' });
    expect(r.status).toBe(200);
    const [h] = await t.core.repo.find<HostRow>('host', { name: 'mapped' });
    expect(h!.managementIp).toBe('127.0.0.41');
    // Its first connect (to a closed port) runs in the background: let it settle, so later
    // "nothing changed" checks see a still store. Retries wait on the fake clock.
    await until(async () => (await t.core.repo.get<HostRow>('host', h!.uuid))!.status === 'Disconnected', 'first connect failed', 5000);
  });
});

describe('management addresses through the admin API', () => {
  it.each([
    ['0x7f.0.0.12', 'means 127.0.0.12'],
    ['127.12', 'means 127.0.0.12'],
    ['LOCALHOST', "controller's own"],
    ['0.0.0.0', "host's address"],
  ])('AddKVMHost refuses %s (%s)', async (managementIp, why) => {
    const before = await storeImage(t);
    const r = await call(t, 'post', '/hosts/kvm', { params: { name: 'h', managementIp, clusterUuid, username: 'root', password: 'pw' } });
    // Refused before any work starts: at once (400) or as the job's failure (503).
    expect([400, 503]).toContain(r.status);
    expect(r.body.error.code).toBe('SYS.1007');
    expect(r.body.error.details).toContain(why);
    expect(await storeImage(t)).toBe(before);
  });

  it('UpdateHost stores the normalised address and finds duplicates in any spelling', async () => {
    const other = await t.core.repo.transaction((tx) =>
      insertHost(tx, t.clock.now(), { name: 'other', managementIp: '127.0.0.50', clusterUuid }, 'Disconnected', 'test'));
    const dup = await call(t, 'put', `/hosts/${other.uuid}/actions`, { updateHost: { managementIp: '::ffff:127.0.0.12' } });
    expect([400, 503]).toContain(dup.status);
    expect(dup.body.error.code).toBe('SYS.1007');
    expect(dup.body.error.details).toContain('already used');
    const ok = await call(t, 'put', `/hosts/${other.uuid}/actions`, { updateHost: { managementIp: 'KVM-50.Example.org' } });
    expect(ok.status).toBe(200);
    expect(ok.body.inventory.managementIp).toBe('kvm-50.example.org');
  });
});
