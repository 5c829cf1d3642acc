/**
 * AddKVMHost's flow in process, with fake SSH and a fake playbook (the real ones run against
 * real sshd test hosts in test/e2e): which step fails and how it is said, what is rolled back,
 * progress, and that the password goes nowhere.
 */
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import pino from 'pino';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import type { PlaybookHost, PlaybookOutcome } from '../../controller/deploy/ansible.ts';
import type { DeployerOptions } from '../../controller/deploy/deployer.ts';
import type { SshFailure } from '../../controller/deploy/ssh.ts';
import { FakeSsh, refusingSsh } from '../fakes/ssh.ts';
import { call, filesUnder, makeCluster, makeController, makeZone, refused, type TestController } from '../helpers.ts';

const PASSWORD = 'Root-Passw0rd-Never-Kept';
let open: TestController[] = [];
afterEach(async () => {
  for (const t of open) await t.close().catch(() => undefined);
  open = [];
});

async function setup(deploy: Partial<DeployerOptions>) {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _e, cb) { lines.push(String(chunk)); cb(); } });
  // A prebuilt "bundle" keeps esbuild out of these tests.
  const t = await makeController({ log: pino({ level: 'debug' }, sink), deploy: { bundlePath: new URL(import.meta.url).pathname, ...deploy } });
  open.push(t);
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  return { t, cluster, lines };
}

const okPlaybook = async (): Promise<PlaybookOutcome> => ({ ok: true, changed: 5, seconds: 1 });
const failedPlaybook = (task: string, message: string) => async (): Promise<PlaybookOutcome> => ({ ok: false, changed: 1, seconds: 1, failedTask: task, message });

interface Case {
  name: string;
  deploy: () => Partial<DeployerOptions> & { fake?: FakeSsh };
  keep?: boolean;
  /** 127.0.99.x: loopback where no agent listens, so the connect step fails at once. */
  ip?: string;
  username?: string;
  step: string;
  details: RegExp;
}

const SSH_FAILURES: [SshFailure, RegExp][] = [
  ['auth', /wrong username or password/],
  ['port-closed', /port-closed/],
  ['unreachable', /unreachable/],
  ['host-key-changed', /host-key-changed/],
  ['no-root', /no-root/],
];

const CASES: Case[] = [
  ...SSH_FAILURES.map(([kind, details]): Case => ({ name: `ssh login fails: ${kind}`, deploy: () => ({ sshOpen: refusingSsh(kind) }), step: 'ssh-login', details })),
  {
    name: 'the playbook fails at a task: its message is the error',
    deploy: () => { const fake = new FakeSsh(); return { fake, sshOpen: fake.open, playbook: failedPlaybook('node : install the distribution nodejs package', 'No package matching nodejs is available') }; },
    step: 'deploy-agent', details: /failed at task "node : install the distribution nodejs package": No package matching nodejs is available/,
  },
  {
    name: 'the agent does not answer after the playbook: connect fails',
    deploy: () => { const fake = new FakeSsh(); return { fake, sshOpen: fake.open, playbook: okPlaybook }; },
    ip: '127.0.99.1', step: 'connect', details: /connection error|ECONNREFUSED/,
  },
];

describe('AddKVMHost failures: which step, in words an admin can act on, and what is left', () => {
  for (const keep of [false, true]) {
    it.each(CASES)(`$name (keepHostOnFailure: ${keep})`, async (c) => {
      const d = c.deploy();
      const { t, cluster, lines } = await setup(d);
      const ip = c.ip ?? '10.1.2.3';
      const r = await call(t, 'post', '/hosts/kvm', {
        params: { name: 'h', managementIp: ip, clusterUuid: cluster.uuid, username: c.username ?? 'root', password: PASSWORD },
        systemTags: keep ? ['keepHostOnFailure'] : [],
      });
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('HOST.1000');
      expect(r.body.error.details).toContain(`step ${c.step} failed`);
      expect(r.body.error.details).toMatch(c.details);
      const hosts = await t.core.repo.find<any>('host', { managementIp: ip });
      if (keep) {
        expect(hosts).toHaveLength(1);
        expect(hosts[0].status).toBe('Disconnected');
        expect(hosts[0].statusReason).toContain(`step ${c.step}`);
        // The keepHostOnFailure tag is an option of the call, not a tag of the host.
        expect(await t.core.repo.find('tag', { resourceUuid: hosts[0].uuid })).toEqual([]);
      } else {
        expect(hosts).toEqual([]);
      }
      if (d.fake && !keep) {
        // The key was installed, so the deployment is undone on the host: the agent stopped and
        // disabled, its config and state copy (the secret) removed, our key out of authorized_keys.
        const undo = d.fake.commands.find((cmd) => cmd.includes('hostkeeper-agentctl stop'));
        expect(undo).toBeDefined();
        expect(undo).toContain('systemctl disable');
        expect(undo).toContain('rm -f "$f" /var/lib/hostkeeper-agent/agent.json');
        expect(undo).toContain('grep -vxF "$key"');
      }
      if (d.fake) expect(d.fake.installedKeys).toEqual([t.core.deployer['key'].publicKey]);
      // The password: not in the log, not in the job, not on disk.
      expect(lines.join('')).not.toContain(PASSWORD);
      expect(JSON.stringify(await t.core.repo.all('job'))).not.toContain(PASSWORD);
      await t.core.repo.close();
      for (const f of await filesUnder(t.dir)) expect(await readFile(f, 'utf8')).not.toContain(PASSWORD);
    });
  }
});

describe('AddKVMHost steps', () => {
  it('reports each step as progress, and the current Ansible task while the playbook runs', async () => {
    const fake = new FakeSsh();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const seen: PlaybookHost[] = [];
    const { t, cluster } = await setup({
      sshOpen: fake.open,
      playbook: async (h, onTask) => {
        seen.push(h);
        onTask?.('agent : copy the agent bundle');
        await gate;
        return { ok: false, changed: 0, seconds: 0, failedTask: 'agent : wait for the agent port', message: 'the agent did not start listening' };
      },
    });
    const res = await request(t.app).post('/zstack/v1/hosts/kvm').set(t.auth)
      .send({ params: { name: 'h', managementIp: '10.1.2.4', clusterUuid: cluster.uuid, username: 'admin', password: PASSWORD, sshPort: 2200 } });
    expect(res.status).toBe(202);
    const path = new URL(res.body.location).pathname;
    let job: any;
    for (let i = 0; i < 200; i++) {
      job = await request(t.app).get(path).set(t.auth);
      if (job.body.progress?.message) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(job.status).toBe(202);
    expect(job.body.progress).toEqual({ current: 4, total: 5, step: 'deploy-agent', message: 'agent : copy the agent bundle' });
    // While it deploys the host is there, Connecting, and cannot be reconnected.
    const [host] = await t.core.repo.find<any>('host', { managementIp: '10.1.2.4' });
    expect(host.status).toBe('Connecting');
    const rc = await refused(t, await request(t.app).put(`/zstack/v1/hosts/${host.uuid}/actions`).set(t.auth).send({ reconnectHost: {} }));
    expect(rc.status).toBe(503);
    expect(rc.body.error.details).toMatch(/being added/);
    // The playbook got a non-root user to become root, the recorded host key and the port.
    expect(seen[0]).toMatchObject({ address: '10.1.2.4', port: 2200, user: 'admin', become: true, hostKey: fake.hostKey });
    expect(fake.targets[0]).toMatchObject({ host: '10.1.2.4', port: 2200, username: 'admin', password: PASSWORD });
    release();
    await t.core.jobs.drain();
    const final = await request(t.app).get(path).set(t.auth);
    expect(final.status).toBe(503);
    expect(final.body.error.details).toMatch(/wait for the agent port.*did not start listening/);
  });

  it('a duplicate managementIp is refused while the first add is still running', async () => {
    const fake = new FakeSsh();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const { t, cluster } = await setup({ sshOpen: fake.open, playbook: async () => { await gate; return { ok: false, changed: 0, seconds: 0, message: 'stopped' }; } });
    const body = { params: { name: 'h', managementIp: '10.1.2.5', clusterUuid: cluster.uuid, username: 'root', password: PASSWORD } };
    const first = await request(t.app).post('/zstack/v1/hosts/kvm').set(t.auth).send(body);
    expect(first.status).toBe(202);
    const second = await refused(t, await request(t.app).post('/zstack/v1/hosts/kvm').set(t.auth).send(body));
    expect(second.status).toBe(503);
    expect(second.body.error.code).toBe('SYS.1007');
    expect(second.body.error.details).toContain('10.1.2.5');
    release();
    await t.core.jobs.drain();
  });
});

describe('a restart in the middle of an add', () => {
  it('removes a host cut before its key was installed; deploys again one cut after, and on failure keeps or removes it as its add asked', async () => {
    const fake = new FakeSsh();
    const playbooks: string[] = [];
    const { t, cluster } = await setup({ sshOpen: fake.open, playbook: async (h) => { playbooks.push(h.name); return { ok: true, changed: 3, seconds: 1 }; } });
    const now = Date.now();
    const base = { description: null, zoneUuid: cluster.zoneUuid, clusterUuid: cluster.uuid, hypervisorType: 'KVM', state: 'Enabled', status: 'Connecting', createDate: now, lastOpDate: now, sshPort: 22, statusReason: 'deploying the agent', agentPort: 7070, agentSecret: 'ab'.repeat(32) };
    const cut = { ...base, uuid: '1'.repeat(32), name: 'cut-in-login', managementIp: '127.0.99.2', deployPhase: 'login' };
    const resumable = { ...base, uuid: '2'.repeat(32), name: 'cut-in-deploy', managementIp: '127.0.99.3', deployPhase: 'deploying', sshHostKey: fake.hostKey, sshUser: 'root', controllerUrl: 'http://127.0.0.1:1', keepOnFailure: true };
    const notKept = { ...resumable, uuid: '3'.repeat(32), name: 'cut-in-deploy-not-kept', managementIp: '127.0.99.4', keepOnFailure: false };
    await t.core.repo.transaction(async (tx) => { for (const h of [cut, resumable, notKept]) await tx.insert('host', h as never); });
    await t.core.deployer.dropInterruptedLogins();
    expect(await t.core.repo.get('host', cut.uuid)).toBeUndefined();
    await t.core.deployer.resumeDeployments();
    // The resumed one: checked over SSH with the key (not a password), redeployed, then connected
    // (nothing listens on 127.0.99.3, so it ends Disconnected, still recorded for a reconnect).
    for (let i = 0; i < 200 && (await t.core.repo.get<any>('host', resumable.uuid))?.status !== 'Disconnected'; i++) await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 200 && (await t.core.repo.get<any>('host', notKept.uuid)); i++) await new Promise((r) => setTimeout(r, 10));
    const resumedTarget = fake.targets.find((x) => x.host === '127.0.99.3')!;
    expect(resumedTarget).toMatchObject({ privateKey: expect.stringContaining('OPENSSH PRIVATE KEY'), knownHostKey: fake.hostKey });
    expect(resumedTarget.password).toBeUndefined();
    expect(playbooks.sort()).toEqual([resumable.uuid, notKept.uuid].sort());
    expect((await t.core.repo.get<any>('host', resumable.uuid))?.status).toBe('Disconnected');
    expect(await t.core.repo.get('host', notKept.uuid)).toBeUndefined();
  });
});

describe('several controllers: whose cut adds a controller drops or resumes', () => {
  it.each<[string, string | undefined, boolean, boolean]>([
    // deployBy, cluster started, dropped/resumed
    ['its own', 'me', true, true],
    ['from before deployBy existed', undefined, true, true],
    ['a live controller\'s (it is logging in right now)', 'live', true, false],
    ['a dead controller\'s, once the cluster knows who is live', 'dead', true, true],
    ['a dead controller\'s, before the cluster has read who is live', 'dead', false, false],
  ])('a login cut: %s', async (_n, deployBy, started, dropped) => {
    const { t, cluster } = await setup({ sshOpen: new FakeSsh().open });
    t.core.deployer.members = { uuid: 'me', started, isLive: (m) => m === 'live' || m === 'me' };
    const now = Date.now();
    const host = {
      uuid: '4'.repeat(32), name: 'cut', managementIp: '127.0.99.5', description: null, zoneUuid: cluster.zoneUuid, clusterUuid: cluster.uuid, hypervisorType: 'KVM',
      state: 'Enabled', status: 'Connecting', createDate: now, lastOpDate: now, sshPort: 22, statusReason: 'deploying the agent', agentPort: 7070, agentSecret: 'ab'.repeat(32),
      deployPhase: 'login', ...(deployBy ? { deployBy } : {}),
    };
    await t.core.repo.transaction((tx) => tx.insert('host', host as never));
    await t.core.deployer.dropInterruptedLogins();
    expect(!(await t.core.repo.get('host', host.uuid))).toBe(dropped);
  });

  it('a dead controller\'s deployment is claimed by one controller (deployBy compare-and-set) and resumed', async () => {
    const fake = new FakeSsh();
    const playbooks: string[] = [];
    const { t, cluster } = await setup({ sshOpen: fake.open, playbook: async (h) => { playbooks.push(h.name); return { ok: true, changed: 1, seconds: 1 }; } });
    t.core.deployer.members = { uuid: 'me', started: true, isLive: (m) => m === 'me' };
    const now = Date.now();
    const host = {
      uuid: '5'.repeat(32), name: 'cut-deploy', managementIp: '127.0.99.6', description: null, zoneUuid: cluster.zoneUuid, clusterUuid: cluster.uuid, hypervisorType: 'KVM',
      state: 'Enabled', status: 'Connecting', createDate: now, lastOpDate: now, sshPort: 22, statusReason: 'deploying the agent', agentPort: 7070, agentSecret: 'ab'.repeat(32),
      deployPhase: 'deploying', deployBy: 'dead', sshHostKey: fake.hostKey, sshUser: 'root', controllerUrl: 'http://127.0.0.1:1', keepOnFailure: true,
    };
    await t.core.repo.transaction((tx) => tx.insert('host', host as never));
    await t.core.deployer.resumeDeployments();
    for (let i = 0; i < 200 && playbooks.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(playbooks).toEqual([host.uuid]);
    expect((await t.core.repo.get<any>('host', host.uuid))?.deployBy).toBe('me');
    await t.core.jobs.drain();
  });
});
