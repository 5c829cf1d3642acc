/**
 * The test-host harness against the real machine: ssh with each host's own password, the
 * bind-mounted /opt and /root stay private, background processes die with the host, and
 * nothing is left behind, neither by destroy() nor after a simulated crash.
 * Skipped, with the reason, where test hosts cannot be made (not root, tools missing).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanStaleTestHosts, createTestHosts, SSH_OPTS, sshExec, TEST_HOSTS_BASE, type TestHost, testHostsSupport, unreachableIp,
} from '../hosts/testhosts.ts';

const support = await testHostsSupport();

// Own prefixes and a high index range, so this file can run beside others that use hosts.
const PREFIX = 'hks';
const CRASH_PREFIX = 'hksz';
const FIRST = 241;

const exists = (p: string) => access(p).then(() => true, () => false);

/** Alive and not a zombie (init may be slow to reap what destroy() killed). */
async function running(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return s !== '' && !/^\S+ \(.*\) [ZX]/.test(s);
}

/** Everything a host leaves on the machine, as a list of what is still there. */
async function leftovers(name: string): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const found: string[] = [];
  if (await exists(`/run/netns/${name}`)) found.push(`/run/netns/${name}`);
  if (await exists(`/sys/class/net/${name}r`)) found.push(`link ${name}r`);
  for (const f of [join(TEST_HOSTS_BASE, name), join(TEST_HOSTS_BASE, '.ns', `${name}.mnt`), join(TEST_HOSTS_BASE, '.ns', `${name}.uts`)]) {
    if (await exists(f)) found.push(f);
  }
  for (const line of mountinfo.split('\n')) if (line.includes(`/${name}/`) || line.includes(`/${name}.`)) found.push(`mount ${line}`);
  return found;
}

/** Starts `sleep 1000` detached from the session (ssh, or exec() where ssh is not the point) and returns its pid. */
async function startBackground(h: TestHost, via: 'ssh' | 'exec'): Promise<number> {
  const cmd = 'setsid nohup sleep 1000 >/dev/null 2>&1 </dev/null & echo $!';
  const r = via === 'ssh' ? await sshExec(h, cmd) : await h.exec(cmd);
  expect(r.code, r.stderr).toBe(0);
  const pid = Number(r.stdout.trim());
  expect(await running(pid)).toBe(true);
  return pid;
}

describe.skipIf(!support.ok)(`test hosts${support.ok ? '' : ` (skipped: ${support.why})`}`, () => {
  let hosts: TestHost[] = [];

  beforeAll(async () => {
    hosts = await createTestHosts(2, { prefix: PREFIX, first: FIRST });
  });
  afterAll(async () => {
    await Promise.all(hosts.map((h) => h.destroy()));
  });

  it('gives each host its own address, link and /24', () => {
    expect(hosts.map((h) => [h.name, h.ip, h.gatewayIp, unreachableIp(h)])).toEqual([
      ['hks241', '10.199.241.2', '10.199.241.1', '10.199.241.3'],
      ['hks242', '10.199.242.2', '10.199.242.1', '10.199.242.3'],
    ]);
    expect(hosts[0].rootPassword).not.toBe(hosts[1].rootPassword);
  });

  it('lets root in over ssh with the host’s own password, into the namespaces exec() uses', async () => {
    const nsOf = 'readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts';
    for (const h of hosts) {
      const r = await sshExec(h, `hostname; hostname -I; ip -4 -o addr show dev eth0; ${nsOf}`);
      expect(r.code, r.stderr).toBe(0);
      const [hostname, addrs, eth0, ...ns] = r.stdout.split('\n');
      expect(hostname).toBe(h.name);
      expect(addrs.trim()).toBe(h.ip);
      expect(eth0).toContain(`inet ${h.ip}/24`);
      expect((await h.exec(nsOf)).stdout).toBe(ns.join('\n'));
    }
    expect(await hosts[0].exec('hostname -I; exit 3')).toEqual({ code: 3, stdout: `${hosts[0].ip} \n`, stderr: '' });
  });

  it('refuses the other host’s password', async () => {
    const r = await sshExec(hosts[0], 'true', { password: hosts[1].rootPassword });
    expect(r.code).toBe(5); // sshpass: invalid password
  });

  it('keeps /opt private to each host', async () => {
    const marker = `hkt-marker-${randomBytes(4).toString('hex')}`;
    expect((await sshExec(hosts[0], `mkdir -p /opt/hostkeeper && echo one > /opt/hostkeeper/${marker}`)).code).toBe(0);
    expect((await hosts[0].exec(`cat /opt/hostkeeper/${marker}`)).stdout).toBe('one\n');
    expect((await hosts[1].exec(`test -e /opt/hostkeeper/${marker}`)).code).toBe(1);
    expect(await exists(`/opt/hostkeeper/${marker}`)).toBe(false);
    expect(await readFile(join(hosts[0].dir, 'opt', 'hostkeeper', marker), 'utf8')).toBe('one\n');
  });

  it('keeps /root/.ssh private to each host, and key login works with StrictModes', async () => {
    const realBefore = await readFile('/root/.ssh/authorized_keys', 'utf8').catch(() => undefined);
    const keyDir = join(hosts[0].dir, 'client');
    const key = join(keyDir, 'id');
    await promisify(execFile)('sh', ['-c', 'mkdir -p "$1" && ssh-keygen -q -t ed25519 -N "" -f "$2"', 'sh', keyDir, key]);
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    const add = await sshExec(hosts[0], `umask 077 && mkdir -p ~/.ssh && echo '${pub}' >> ~/.ssh/authorized_keys`);
    expect(add.code, add.stderr).toBe(0);

    const byKey = await promisify(execFile)('ssh', [...SSH_OPTS, '-o', 'BatchMode=yes', '-i', key, `root@${hosts[0].ip}`, 'hostname']);
    expect(byKey.stdout.trim()).toBe(hosts[0].name);
    expect(await readFile('/root/.ssh/authorized_keys', 'utf8').catch(() => undefined)).toBe(realBefore);
    expect((await hosts[1].exec('test -e /root/.ssh/authorized_keys')).code).toBe(1);
  });

  it('stops and starts sshd', async () => {
    await hosts[1].stopSshd();
    expect((await sshExec(hosts[1], 'true')).code).toBe(255); // connection refused
    await hosts[1].startSshd();
    expect((await sshExec(hosts[1], 'true')).code).toBe(0);
  });

  it('destroy() kills background processes and leaves nothing behind', async () => {
    const h = hosts[0];
    const pid = await startBackground(h, 'ssh');
    expect(await readlink(`/proc/${pid}/ns/net`)).toBe(`net:[${(await stat(`/run/netns/${h.name}`)).ino}]`);
    expect(await leftovers(h.name)).not.toEqual([]);

    await h.destroy();
    expect(await running(pid)).toBe(false);
    expect(await leftovers(h.name)).toEqual([]);
    await h.destroy(); // idempotent
  });

  it('cleanStaleTestHosts removes a host a crashed run left behind', async () => {
    const [lost] = await createTestHosts(1, { prefix: CRASH_PREFIX, first: FIRST + 2 });
    const pid = await startBackground(lost, 'exec');
    // "Crash": forget the TestHost object; only the name prefix is known.
    await cleanStaleTestHosts(CRASH_PREFIX);
    expect(await running(pid)).toBe(false);
    expect(await leftovers(lost.name)).toEqual([]);
  });

  it('refuses a subnet another host already uses', async () => {
    await expect(createTestHosts(1, { prefix: 'hksx', first: FIRST + 1 })).rejects.toThrow(/10\.199\.242\.0\/24 is already used by interface hks242r/);
    expect(await leftovers('hksx242')).toEqual([]);
  });
});
