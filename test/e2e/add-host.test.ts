/**
 * AddKVMHost end to end, with real parts: test hosts in network + mount namespaces each
 * running a real sshd (test/hosts), the controller's SSH (ssh2), the bundled playbook run by
 * ansible-playbook, the agent bundle started on the host under its supervisor, and the
 * connect flow over real HTTP. Through the REST API and the CLI.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../controller/cli/run.ts';
import { type RunningController, startController } from '../../controller/server.ts';
import type { HostRow, TagRow } from '../../protocol/resources.ts';
import { ADMIN_PASSWORD, filesUnder, silentLog, tempDir, until as pollUntil } from '../helpers.ts';
import { createTestHosts, type TestHost, testHostsSupport, unreachableIp } from '../hosts/testhosts.ts';

const support = await testHostsSupport();
const SSH_TIMEOUT_MS = 4000;
let c: RunningController;
let dataDir: string;
let auth: { Authorization: string };
let clusterUuid: string;
let hosts: TestHost[] = [];

async function follow(res: request.Response, ms = 180_000): Promise<{ status: number; body: any }> {
  if (res.status !== 202) return { status: res.status, body: res.body };
  const path = new URL(res.body.location).pathname;
  const end = Date.now() + ms;
  for (;;) {
    const r = await request(c.server).get(path).set(auth);
    if (r.status !== 202) return { status: r.status, body: r.body };
    if (Date.now() > end) throw new Error(`job ${path} still running after ${ms} ms`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

const add = async (h: { ip: string; rootPassword: string }, over: Record<string, unknown> = {}) =>
  follow(await request(c.server).post('/zstack/v1/hosts/kvm').set(auth)
    .send({ params: { name: `kvm-${h.ip}`, managementIp: h.ip, clusterUuid, username: 'root', password: h.rootPassword, ...over } }));
const reconnect = async (uuid: string) => follow(await request(c.server).put(`/zstack/v1/hosts/${uuid}/actions`).set(auth).send({ reconnectHost: {} }));
const hostByIp = async (ip: string) => (await c.core.repo.find<HostRow>('host', { managementIp: ip }))[0];

/** Polls every 100 ms: each look at a host spawns nsenter. */
const until = <T>(fn: () => Promise<T | undefined | false>, what: string, ms: number) => pollUntil(fn, what, ms, 100);

const agentPid = async (h: TestHost) => (await h.exec('cat /var/lib/hostkeeper-agent/agent.pid')).stdout.trim();

describe.skipIf(!support.ok)(`AddKVMHost end to end${support.ok ? '' : ` (skipped: ${support.why})`}`, () => {
  beforeAll(async () => {
    [hosts, [dataDir]] = await Promise.all([createTestHosts(5, { prefix: 'hke', first: 20 }), Promise.all([tempDir('hk-e2e-')])]);
    c = await startController({
      dataDir, port: 0, host: '0.0.0.0', adminPassword: ADMIN_PASSWORD, log: silentLog(), sync: false,
      deploy: { hypervisor: 'simulator', sshTimeoutMs: SSH_TIMEOUT_MS },
    });
    const login = await request(c.server).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
    auth = { Authorization: `OAuth ${login.body.inventory.uuid}` };
    const zone = await follow(await request(c.server).post('/zstack/v1/zones').set(auth).send({ params: { name: 'z' } }));
    const cl = await follow(await request(c.server).post('/zstack/v1/clusters').set(auth).send({ params: { zoneUuid: zone.body.inventory.uuid, name: 'c', hypervisorType: 'KVM' } }));
    clusterUuid = cl.body.inventory.uuid;
    // Build the agent bundle once, before anything is timed.
    await c.core.deployer.agentBundle();
  }, 120_000);

  afterAll(async () => {
    await c?.close();
    await Promise.all(hosts.map((h) => h.destroy()));
  }, 60_000);

  it('adds 3 hosts in parallel: all Connected, with metadata tags, capacity, the key and a 0600 config', async () => {
    const three = hosts.slice(0, 3);
    const results = await Promise.all(three.map((h) => add(h)));
    for (const [i, r] of results.entries()) {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const inv = r.body.inventory;
      expect(inv).toMatchObject({ managementIp: three[i]!.ip, status: 'Connected', state: 'Enabled' });
      expect(inv.totalMemoryCapacity).toBeGreaterThan(0);
      expect(inv.cpuNum).toBeGreaterThan(0);
      // CONTRACT: never the password; the SSH user name is part of KVMHostInventory.
      expect(JSON.stringify(inv)).not.toMatch(/password/);
      expect(inv.username).toBe('root');
      const tags = (await c.core.repo.find<TagRow>('tag', { resourceUuid: inv.uuid })).map((t) => t.tag);
      expect(tags).toEqual(expect.arrayContaining([expect.stringMatching(/^os::distribution::/), expect.stringMatching(/^os::version::/)]));
    }
    const h = three[0]!;
    expect((await h.exec('stat -c %a /etc/hostkeeper/agent.json')).stdout.trim()).toBe('600');
    const pub = (await readFile(join(dataDir, 'ssh/id_ed25519.pub'), 'utf8')).trim();
    expect((await h.exec('cat /root/.ssh/authorized_keys')).stdout.split('\n')).toContain(pub);
    expect((await h.exec('stat -c %a /root/.ssh /root/.ssh/authorized_keys')).stdout.split('\n').slice(0, 2)).toEqual(['700', '600']);
    // No password anywhere in the controller's data.
    for (const f of await filesUnder(dataDir)) {
      const text = await readFile(f, 'utf8');
      for (const x of three) expect(text, f).not.toContain(x.rootPassword);
    }
  }, 240_000);

  it('a second run of the playbook with nothing changed reports changed=0, and reconnect does not redeploy', async () => {
    const row = (await hostByIp(hosts[0]!.ip))!;
    const again = await c.core.hosts.queue.run(row.uuid, () => c.core.deployer.playbook(row));
    expect(again).toMatchObject({ ok: true, changed: 0 });
    expect(await c.core.deployer.drift(row)).toEqual([]);
    const pid = await agentPid(hosts[0]!);
    const r = await reconnect(row.uuid);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(await agentPid(hosts[0]!)).toBe(pid);
  }, 120_000);

  it('the agent comes back after its process is killed on the host', async () => {
    const h = hosts[1]!;
    const row = (await hostByIp(h.ip))!;
    const pid = await agentPid(h);
    expect(pid).toMatch(/^\d+$/);
    await h.exec(`kill -9 ${pid}`);
    await until(async () => (await hostByIp(h.ip))?.status === 'Disconnected', 'Disconnected after kill -9', 10_000);
    await until(async () => (await hostByIp(h.ip))?.status === 'Connected', 'Connected again', 30_000);
    expect(await agentPid(h)).not.toBe(pid);
    expect((await hostByIp(h.ip))!.instanceId).not.toBe(row.instanceId);
  }, 60_000);

  it('reconnect after the agent binary is removed from the host redeploys it', async () => {
    const h = hosts[2]!;
    const row = (await hostByIp(h.ip))!;
    await h.exec('rm -f /opt/hostkeeper/agent/hostkeeper-agent.mjs');
    expect(await c.core.deployer.drift(row)).toContain('the agent is not installed');
    const r = await reconnect(row.uuid);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.inventory.status).toBe('Connected');
    expect((await h.exec('test -s /opt/hostkeeper/agent/hostkeeper-agent.mjs && echo present')).stdout.trim()).toBe('present');
    expect(await c.core.deployer.drift(row)).toEqual([]);
  }, 120_000);

  it('DeleteHost stops the agent on the host and removes its secret; adding it again works', async () => {
    const h = hosts[2]!;
    const row = (await hostByIp(h.ip))!;
    const del = await follow(await request(c.server).delete(`/zstack/v1/hosts/${row.uuid}`).set(auth));
    expect(del.status).toBe(200);
    expect(await hostByIp(h.ip)).toBeUndefined();
    // Stopped, and its secret removed from the host (one command over SSH, after the answer).
    await until(async () => (await h.exec('/opt/hostkeeper/bin/hostkeeper-agentctl status >/dev/null || test -e /etc/hostkeeper/agent.json || echo gone')).stdout.trim() === 'gone', 'agent stopped and config removed', 20_000);
    // Our key is gone from the host too: the re-add below logs in with the password again.
    const pub = (await readFile(join(dataDir, 'ssh/id_ed25519.pub'), 'utf8')).trim();
    expect((await h.exec('cat /root/.ssh/authorized_keys')).stdout.split('\n')).not.toContain(pub);
    const again = await add(h);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.inventory.status).toBe('Connected');
    expect(again.body.inventory.uuid).not.toBe(row.uuid);
  }, 120_000);

  it('a wrong password: a clear error, and no host left behind', async () => {
    const h = hosts[3]!;
    const r = await add(h, { password: 'not-the-password' });
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('HOST.1000');
    expect(r.body.error.details).toMatch(/step ssh-login failed: wrong username or password for root@/);
    expect(await hostByIp(h.ip)).toBeUndefined();
  }, 60_000);

  it('an unreachable address: a clear error within the SSH timeout', async () => {
    const ip = unreachableIp(hosts[3]!);
    const t0 = Date.now();
    const r = await add({ ip, rootPassword: 'x' });
    const took = Date.now() - t0;
    expect(r.status).toBe(503);
    expect(r.body.error.details).toMatch(/step ssh-login failed: .*(unreachable|no SSH answer)/);
    expect(took).toBeLessThan(SSH_TIMEOUT_MS + 3000);
    expect(await hostByIp(ip)).toBeUndefined();
  }, 30_000);

  it('SSH port closed: says so', async () => {
    const h = hosts[3]!;
    await h.stopSshd();
    try {
      const r = await add(h);
      expect(r.status).toBe(503);
      expect(r.body.error.details).toMatch(/SSH port 22 is closed on/);
    } finally {
      await h.startSshd();
    }
  }, 30_000);

  it('a failing playbook task: the error names the task and quotes its message; the host is removed', async () => {
    const h = hosts[3]!;
    await h.exec('mkdir -p /opt/hostkeeper && mount --bind /opt/hostkeeper /opt/hostkeeper && mount -o remount,ro,bind /opt/hostkeeper');
    try {
      const r = await add(h);
      expect(r.status).toBe(503);
      expect(r.body.error.details).toMatch(/step deploy-agent failed: the playbook failed at task "[^"]+": .*[Rr]ead-only file system/);
      expect(await hostByIp(h.ip)).toBeUndefined();
    } finally {
      await h.exec('umount /opt/hostkeeper');
    }
  }, 120_000);

  it('a host without Node.js: the playbook installs the distribution package, and a failed install is the error', async () => {
    const h = hosts[3]!;
    // In this host's own mount namespace only: Node hidden, and apt with no sources, no lists
    // and an empty package database. The install task runs for real and fails as on a host
    // whose repositories lack nodejs.
    const mounts: [string, string][] = [['/dev/null', '/usr/bin/node'], [`${h.dir}/empty`, '/var/lib/apt/lists'], [`${h.dir}/empty`, '/etc/apt/sources.list.d'], ['/dev/null', '/var/lib/dpkg/status']];
    await h.exec(`mkdir -p ${h.dir}/empty && ${mounts.map(([from, to]) => `mount --bind ${from} ${to}`).join(' && ')}`);
    try {
      const r = await add(h);
      expect(r.status).toBe(503);
      expect(r.body.error.details).toMatch(/step deploy-agent failed: the playbook failed at task "node : Install the distribution's nodejs package": .*nodejs/);
      expect(await hostByIp(h.ip)).toBeUndefined();
    } finally {
      await h.exec(mounts.map(([, to]) => `umount ${to}`).reverse().join('; '));
    }
  }, 120_000);

  it('through the CLI: AddKVMHost prints the Connected host; a changed SSH host key stops reconnect with a clear message', async () => {
    const h = hosts[4]!;
    let out = '';
    let err = '';
    const env = { HOSTKEEPER_URL: `http://127.0.0.1:${c.port}`, HOSTKEEPER_SESSION_FILE: join(dataDir, 'cli-session'), HOSTKEEPER_POLL_MS: '100' };
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, env, isTTY: false };
    expect(await runCli(['LogInByAccount', 'accountName=admin', `password=${ADMIN_PASSWORD}`], io)).toBe(0);
    out = '';
    const code = await runCli(['AddKVMHost', `clusterUuid=${clusterUuid}`, `managementIp=${h.ip}`, 'name=cli-host', 'username=root', `password=${h.rootPassword}`], io);
    expect(code, err).toBe(0);
    const inv = JSON.parse(out).inventory;
    expect(inv).toMatchObject({ name: 'cli-host', status: 'Connected' });

    // The host is "reinstalled": a new SSH host key.
    await h.stopSshd();
    await h.exec(`rm -f ${h.dir}/ssh_host_ed25519_key ${h.dir}/ssh_host_ed25519_key.pub && ssh-keygen -q -t ed25519 -N '' -f ${h.dir}/ssh_host_ed25519_key`);
    await h.startSshd();
    const r = await reconnect(inv.uuid);
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('HOST.1002');
    expect(r.body.error.details).toMatch(/SSH host key of .* changed since this host was added/);
  }, 120_000);
});
