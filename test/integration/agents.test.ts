/**
 * The command channel with real agent processes on loopback: bootstrap-token registration,
 * Connected with metadata tags, kill -9 -> Disconnected, restart -> Connected again (with
 * auto-reconnect) or not (without), ping.interval changed at run time, agent restart seen by
 * identity, forged and replayed requests refused.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_PATHS, signedHeaders } from '../../protocol/agent.ts';
import type { HostRow, TagRow } from '../../protocol/resources.ts';
import { type RunningController, startController } from '../../controller/server.ts';
import { ADMIN_PASSWORD, silentLog, tempDir, until } from '../helpers.ts';
import { ROOT } from './proc.ts';

const PUBLIC_KEY = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
let c: RunningController;
let auth: { Authorization: string };
let token: string;
let caCertHash: string;
let clusterUuid: string;
const agents: ChildProcess[] = [];

/** An agent process registering with the token, pinning the controller CA by the token's hash (or `hash`). */
function startAgent(ip: string, stateDir: string, hash = caCertHash): ChildProcess & { out: () => string } {
  let out = '';
  const p = spawn(process.execPath, ['--import', 'tsx', 'agent/main.ts', '--listen', `${ip}:7070`, '--controller', c.url,
    '--bootstrap-token', token, '--ca-cert-hash', hash, '--state-dir', stateDir, '--hypervisor', 'simulator'], {
    cwd: ROOT, env: { ...process.env, HOSTKEEPER_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  agents.push(p);
  return Object.assign(p, { out: () => out });
}

const hostByIp = async (ip: string) => (await c.core.repo.find<HostRow>('host', { managementIp: ip }))[0];
const statusOf = async (ip: string) => (await hostByIp(ip))?.status;

async function setConfig(name: string, value: string) {
  const r = await request(c.server).put(`/zstack/v1/global-configurations/host/${name}/actions`).set(auth).send({ updateGlobalConfig: { value } });
  expect(r.status).toBe(202);
}

beforeAll(async () => {
  c = await startController({ dataDir: await tempDir(), port: 0, host: '127.0.0.1', adminPassword: ADMIN_PASSWORD, log: silentLog() });
  const login = await request(c.server).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
  auth = { Authorization: `OAuth ${login.body.inventory.uuid}` };
  const zone = await request(c.server).post('/zstack/v1/zones').set(auth).send({ params: { name: 'z' } });
  const zoneUuid = (await request(c.server).get(new URL(zone.body.location).pathname).set(auth)).body.inventory.uuid;
  const cl = await request(c.server).post('/zstack/v1/clusters').set(auth).send({ params: { zoneUuid, name: 'c', hypervisorType: 'KVM' } });
  clusterUuid = (await request(c.server).get(new URL(cl.body.location).pathname).set(auth)).body.inventory.uuid;
  const tk = await request(c.server).post('/zstack/v1/hosts/bootstrap-tokens').set(auth).send({ params: { clusterUuid, ttlSeconds: 3600 } });
  expect(tk.status).toBe(200);
  token = tk.body.inventory.token;
  caCertHash = tk.body.inventory.caCertHash;
}, 30_000);

afterAll(async () => {
  for (const a of agents) a.kill('SIGKILL');
  await c.close();
});

describe('real agents', () => {
  it('registers with the bootstrap token and becomes Connected with metadata tags and capacity', async () => {
    const dir = await tempDir();
    startAgent('127.0.7.1', dir);
    await until(async () => (await statusOf('127.0.7.1')) === 'Connected', 'Connected');
    const h = (await hostByIp('127.0.7.1'))!;
    expect(h.clusterUuid).toBe(clusterUuid);
    expect(h.cpuNum).toBeGreaterThan(0);
    expect(h.totalMemoryCapacity).toBeGreaterThan(0);
    const tags = (await c.core.repo.find<TagRow>('tag', { resourceUuid: h.uuid })).filter((t) => t.inherent).map((t) => t.tag);
    expect(tags.some((t) => t.startsWith('os::distribution::'))).toBe(true);
    expect(tags.some((t) => t.startsWith('os::version::'))).toBe(true);
    expect(tags).toContain('capability:liveSnapshot');
    const state = JSON.parse(await readFile(join(dir, 'agent.json'), 'utf8'));
    expect(state.hostUuid).toBe(h.uuid);
    // Over TLS from registration on: the agent pushes to the agent port, holds a certificate from our CA.
    expect(state.controllerUrl).toBe(`https://127.0.0.1:${c.agentPort}`);
    expect(h.agentCertNotAfter).toBeGreaterThan(Date.now());
    const cert = new X509Certificate(await readFile(join(dir, 'tls', 'cert.pem'), 'utf8'));
    expect(cert.subject).toBe(`CN=${h.uuid}`);
    expect(cert.verify(new X509Certificate(c.core.pki.caCert).publicKey)).toBe(true);
  });

  it('with a --ca-cert-hash that is not the controller\'s: exits 1 saying so, nothing registered', async () => {
    const p = startAgent('127.0.7.20', await tempDir(), `sha256:${'0'.repeat(64)}`);
    const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
    expect(code).toBe(1);
    expect(p.out()).toMatch(/does not match --ca-cert-hash/);
    expect(await hostByIp('127.0.7.20')).toBeUndefined();
  });

  it('kill -9 -> Disconnected within 2 s; restarted -> Connected again (autoReconnect on), as a new agent instance', async () => {
    const dir = await tempDir();
    const a = startAgent('127.0.7.2', dir);
    await until(async () => (await statusOf('127.0.7.2')) === 'Connected', 'Connected');
    const before = (await hostByIp('127.0.7.2'))!;
    const t0 = Date.now();
    a.kill('SIGKILL');
    await until(async () => (await statusOf('127.0.7.2')) === 'Disconnected', 'Disconnected', 5000);
    expect(Date.now() - t0).toBeLessThan(2000);
    startAgent('127.0.7.2', dir);
    await until(async () => (await statusOf('127.0.7.2')) === 'Connected', 'Connected again', 20_000);
    const after = (await hostByIp('127.0.7.2'))!;
    expect(after.uuid).toBe(before.uuid);
    expect(after.instanceId).not.toBe(before.instanceId);
  });

  it('stays Disconnected without autoReconnect, until an admin reconnects it', async () => {
    await setConfig('connection.autoReconnectOnError', 'false');
    try {
      const dir = await tempDir();
      const a = startAgent('127.0.7.3', dir);
      await until(async () => (await statusOf('127.0.7.3')) === 'Connected', 'Connected');
      a.kill('SIGKILL');
      await until(async () => (await statusOf('127.0.7.3')) === 'Disconnected', 'Disconnected');
      startAgent('127.0.7.3', dir);
      await new Promise((r) => setTimeout(r, 3000));
      expect(await statusOf('127.0.7.3')).toBe('Disconnected');
      const h = (await hostByIp('127.0.7.3'))!;
      const r = await request(c.server).put(`/zstack/v1/hosts/${h.uuid}/actions`).set(auth).send({ reconnectHost: {} });
      expect(r.status).toBe(202);
      await until(async () => (await statusOf('127.0.7.3')) === 'Connected', 'Connected after ReconnectHost');
    } finally {
      await setConfig('connection.autoReconnectOnError', 'true');
    }
  });

  it('a frozen agent (SIGSTOP) is Disconnected; thawed, it is reconnected', async () => {
    const dir = await tempDir();
    const a = startAgent('127.0.7.4', dir);
    await until(async () => (await statusOf('127.0.7.4')) === 'Connected', 'Connected');
    const t0 = Date.now();
    a.kill('SIGSTOP');
    await until(async () => (await statusOf('127.0.7.4')) === 'Disconnected', 'Disconnected', 15_000);
    expect(Date.now() - t0).toBeLessThan(60_000 + 10_000 + 1000);
    a.kill('SIGCONT');
    await until(async () => (await statusOf('127.0.7.4')) === 'Connected', 'Connected after thaw', 20_000);
  });

  it('picks up a new ping.interval at run time', async () => {
    // ping.timeout must stay below ping.interval: 1 s and 2 s.
    await setConfig('ping.timeout', '1');
    await setConfig('ping.interval', '2');
    try {
      const dir = await tempDir();
      startAgent('127.0.7.5', dir);
      await until(async () => (await statusOf('127.0.7.5')) === 'Connected', 'Connected');
      const h = (await hostByIp('127.0.7.5'))!;
      // Pings over the channel carry the agent's identity; count them through the tracker.
      let pings = 0;
      const orig = c.core.agents.pingTracked.bind(c.core.agents);
      c.core.agents.pingTracked = async (uuid: string) => {
        if (uuid === h.uuid) pings++;
        return orig(uuid);
      };
      await new Promise((r) => setTimeout(r, 5000));
      c.core.agents.pingTracked = orig;
      expect(pings).toBeGreaterThanOrEqual(2);
      expect(await statusOf('127.0.7.5')).toBe('Connected');
    } finally {
      await setConfig('ping.interval', '60');
      await setConfig('ping.timeout', '10');
    }
  });

  it('refuses forged, stale and replayed requests with 401 and does nothing', async () => {
    const dir = await tempDir();
    startAgent('127.0.7.6', dir);
    await until(async () => (await statusOf('127.0.7.6')) === 'Connected', 'Connected');
    const h = (await hostByIp('127.0.7.6'))!;
    // As the controller: TLS with its client certificate, the agent checked against the CA.
    const tls = () => ({ key: c.core.pki.key(), cert: c.core.pki.cert(), ca: c.core.pki.caBundle, checkServerIdentity: () => undefined, agent: false as const });
    const post = (path: string, body: string, headers: Record<string, string>) => new Promise<number>((resolve, reject) => {
      const req = https.request({ host: '127.0.7.6', port: 7070, path, method: 'POST', headers: { 'content-type': 'application/json', ...headers }, ...tls() }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(body);
    });
    const vm = JSON.stringify({ vm: { uuid: 'ee'.repeat(16), name: 'x', memorySize: 1, cpuNum: 1, vmNics: [] } });
    const good = signedHeaders(h.agentSecret!, h.uuid, 'POST', AGENT_PATHS.vmList, '{}', Date.now());
    expect(await post(AGENT_PATHS.vmList, '{}', good)).toBe(200);
    expect(await post(AGENT_PATHS.vmList, '{}', good)).toBe(401); // replayed
    expect(await post(AGENT_PATHS.vmCreate, vm, signedHeaders('00'.repeat(32), h.uuid, 'POST', AGENT_PATHS.vmCreate, vm, Date.now()))).toBe(401); // forged
    expect(await post(AGENT_PATHS.vmCreate, vm, signedHeaders(h.agentSecret!, h.uuid, 'POST', AGENT_PATHS.vmCreate, vm, Date.now() - 120_000))).toBe(401); // stale
    expect(await post(AGENT_PATHS.vmCreate, vm, {})).toBe(401); // unsigned
    expect(await post('/no/such/path', '{}', {})).toBe(401); // no route revealed
    const tampered = signedHeaders(h.agentSecret!, h.uuid, 'POST', AGENT_PATHS.vmCreate, vm, Date.now());
    expect(await post(AGENT_PATHS.vmCreate, vm.replace('"x"', '"y"'), tampered)).toBe(401);
    const list = signedHeaders(h.agentSecret!, h.uuid, 'POST', AGENT_PATHS.vmList, '{}', Date.now());
    const r = await new Promise<string>((resolve) => {
      const req = https.request({ host: '127.0.7.6', port: 7070, path: AGENT_PATHS.vmList, method: 'POST', headers: { 'content-type': 'application/json', ...list }, ...tls() }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve(b));
      });
      req.end('{}');
    });
    expect(JSON.parse(r).vms).toEqual([]);
  });

  it('refuses registration with a wrong token (over TLS), and any registration in clear', async () => {
    const body = JSON.stringify({ token: `${'ab'.repeat(16)}.nope`, hostname: 'x', managementIp: '127.0.7.99', port: 7070, publicKey: PUBLIC_KEY });
    const plain = await fetch(`${c.url}/zstack/agent/v1/register`, { method: 'POST', body });
    expect(plain.status).toBe(403);
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1', port: c.agentPort, path: '/zstack/agent/v1/register', method: 'POST', headers: { 'content-type': 'application/json' },
        ca: c.core.pki.caBundle, checkServerIdentity: () => undefined, agent: false,
      }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(status).toBe(401);
    expect(await hostByIp('127.0.7.99')).toBeUndefined();
  });
});
