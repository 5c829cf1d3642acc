/**
 * Real test hosts on this machine (needs root): each host is a network namespace with a veth
 * link to the root namespace, a persistent mount + UTS namespace in which /etc/shadow, /opt,
 * /etc/hostkeeper, /var/lib/hostkeeper-agent, /root, /etc/hosts and /etc/resolv.conf are
 * bind-mounted from the host's own directory, and a real OpenSSH sshd listening on the
 * host's address. Anything a session starts (ansible modules, an agent under setsid/nohup)
 * inherits all three namespaces, so it listens on the host's IP and writes into the host's
 * private /opt, never the real one.
 *
 * Layout (N is the host's index, 1..254; it is also the third octet of its /24):
 *   netns     /run/netns/<prefix>N
 *   link      <prefix>Nr, root side, 10.199.N.1/24  <->  eth0 in the netns, 10.199.N.2/24
 *   mnt, uts  /tmp/hostkeeper-testhosts/.ns/<prefix>N.{mnt,uts}  (ns files on a private mount)
 *   files     /tmp/hostkeeper-testhosts/<prefix>N/  (shadow, hosts, resolv.conf, opt/, root/,
 *             sshd_config, host key, sshd.pid, sshd.log, root-password)
 *
 * The prefix keeps names apart, `first` keeps subnets apart: the /24 depends only on N, so two
 * test files running at once need different prefixes AND disjoint [first, first+count) ranges.
 * createTestHosts refuses a subnet another interface already uses rather than guessing.
 * One prefix belongs to one test file: cleaning a prefix tears down every host that has it.
 *
 * Limits:
 * - Hosts reach only the root namespace (no forwarding, so not each other, not the internet)
 *   and have no nameserver; each resolves its own name from its /etc/hosts.
 * - The hostname is the host's name (own UTS namespace), but PID, IPC and user namespaces are
 *   the machine's: `ps` inside a host shows every host, and `pkill -f hostkeeper-agent` run
 *   in one host kills the agents of all of them.
 * - /etc/shadow is a bind-mounted file, so tools that replace it by rename (passwd, chpasswd,
 *   ansible's user module setting a password) fail with EBUSY.
 * - sshd runs with UsePAM no, so it records logins in the machine's real utmp/wtmp.
 * - A mount namespace someone else creates while hosts exist copies their /run/netns mounts
 *   and keeps those (emptied) network namespaces alive until it ends; harmless, as destroy
 *   deletes the link, so the address goes with it.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, chown, constants, mkdir, readdir, readFile, readlink, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { type KvmMode, kvmBinds, kvmPrepare, kvmSetupScript, kvmInside } from './kvm.ts';

export interface TestHost {
  name: string; // e.g. 'hkt1'; also the hostname inside and the netns name
  index: number; // N: the third octet of the host's /24
  ip: string; // 10.199.N.2, where sshd listens
  gatewayIp: string; // 10.199.N.1: the root namespace on this link (reach a controller bound to 0.0.0.0 here)
  rootPassword: string; // random per host; also in <dir>/root-password for manual work
  dir: string; // the host's private directory on the real fs
  /** `sh -c cmd` as root inside the host's namespaces, cwd /, with an ssh-session-like env. */
  exec(cmd: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Stops the listening sshd; open sessions stay, as with `systemctl stop ssh`. */
  stopSshd(): Promise<void>;
  /** Starts sshd; resolves once it listens (it writes its pid file after binding). */
  startSshd(): Promise<void>;
  /** Kills every process in the namespaces, unmounts, deletes the netns, the link and the dir. Idempotent. */
  destroy(): Promise<void>;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export const TEST_HOSTS_BASE = '/tmp/hostkeeper-testhosts';
const NS_DIR = join(TEST_HOSTS_BASE, '.ns');
const LOCK = join(TEST_HOSTS_BASE, '.lock');
const NETNS_DIR = '/run/netns';
const SSHD = '/usr/sbin/sshd';
const NSFS_MAGIC = 0x6e736673;
const DEFAULT_PREFIX = 'hkt';

/** The environment of commands run by exec(): what an ssh session as root gets, not the test runner's. */
const HOST_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  USER: 'root',
  LOGNAME: 'root',
  LANG: 'C.UTF-8',
};

// ---------------------------------------------------------------------------------------------
// Public API

export async function testHostsSupport(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (process.platform !== 'linux') return { ok: false, why: `needs Linux, this is ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, why: 'needs root (network and mount namespaces, bind mounts)' };
  const tools = ['ip', 'unshare', 'nsenter', 'flock', 'mount', 'umount', 'openssl', 'ssh-keygen', 'ssh', 'sshpass', 'ansible-playbook'];
  const missing: string[] = [];
  for (const t of tools) if (!(await onPath(t))) missing.push(t);
  if (!(await executable(SSHD))) missing.push(SSHD);
  if (missing.length) return { ok: false, why: `missing: ${missing.join(', ')} (test/run.sh installs them)` };
  try {
    await run('unshare --net --mount --uts true (can this machine make namespaces?)', 'unshare', ['--net', '--mount', '--uts', 'true']);
  } catch (e) {
    return { ok: false, why: errMsg(e) };
  }
  return { ok: true };
}

/**
 * Creates hosts <prefix><first> .. <prefix><first+count-1> in parallel, after removing any
 * leftovers with those names. If one fails, the others are destroyed and the error names the
 * host and the step.
 */
export async function createTestHosts(count: number, opts: { prefix?: string; first?: number; kvm?: KvmMode } = {}): Promise<TestHost[]> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const first = opts.first ?? 1;
  checkPrefix(prefix);
  if (!Number.isInteger(count) || count < 1) throw new Error(`count must be a positive integer, got ${count}`);
  const indexes = Array.from({ length: count }, (_, i) => first + i);
  for (const n of indexes) checkName(prefix, n);
  const names = indexes.map((n) => prefix + n);

  await Promise.all(names.map((name) => teardown(name)));
  await checkSubnetsFree(prefix, indexes);
  await prepareShared();

  const settled = await Promise.allSettled(indexes.map((n) => createOne(prefix, n, opts.kvm)));
  const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  const hosts = settled.filter((s): s is PromiseFulfilledResult<TestHost> => s.status === 'fulfilled').map((s) => s.value);
  if (failed.length) {
    await Promise.allSettled(hosts.map((h) => h.destroy()));
    throw new Error(failed.map((f) => errMsg(f.reason)).join('\n'));
  }
  return hosts;
}

/**
 * Removes everything an earlier (crashed) run may have left for hosts named <prefix>N:
 * processes in their namespaces or naming their directory, veths, netns, ns files, dirs.
 */
export async function cleanStaleTestHosts(prefix = DEFAULT_PREFIX): Promise<void> {
  checkPrefix(prefix);
  const names = await staleNames(prefix);
  const results = await Promise.allSettled([...names].map((name) => teardown(name)));
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [errMsg(r.reason)] : []));
  if (errors.length) throw new Error(errors.join('\n'));
}

/** Tears down one host by name (for the CLI and for hosts whose TestHost object is lost). */
export async function destroyTestHostNamed(name: string): Promise<void> {
  const m = /^([a-z]+)(\d+)$/.exec(name);
  if (!m) throw new Error(`not a test host name: ${name}`);
  await teardown(name);
}

/** An address in the host's /24 that nobody answers (connects to it fail after ARP times out). */
export function unreachableIp(host: TestHost): string {
  return `10.199.${host.index}.3`;
}

/**
 * `ssh root@host cmd` with a password through sshpass (password in SSHPASS, never in argv),
 * no host key checking and password authentication only. Exit 5 from sshpass means the
 * password was refused; 255 is ssh's own failure (e.g. connection refused).
 */
export async function sshExec(
  host: Pick<TestHost, 'ip' | 'rootPassword'>,
  cmd: string,
  opts: { password?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return capture(
    'sshpass',
    ['-e', 'ssh', ...SSH_OPTS, '-o', 'PreferredAuthentications=password', '-o', 'PubkeyAuthentication=no', `root@${host.ip}`, cmd],
    { ...process.env, SSHPASS: opts.password ?? host.rootPassword },
    opts.timeoutMs ?? 30_000,
    `ssh root@${host.ip}`,
  );
}

/** Options for ssh to a test host: its key is new on every run, so no known_hosts. */
export const SSH_OPTS = [
  '-o', 'StrictHostKeyChecking=no',
  '-o', 'UserKnownHostsFile=/dev/null',
  '-o', 'LogLevel=ERROR',
  '-o', 'ConnectTimeout=5',
];

// ---------------------------------------------------------------------------------------------
// Names and paths

interface Paths {
  name: string;
  dir: string;
  netNs: string;
  mntNs: string;
  utsNs: string;
  veth: string;
  sshdConfig: string;
  hostKey: string;
  pidFile: string;
  logFile: string;
  /** [source in dir, mount point inside the host] */
  binds: [string, string][];
}

function paths(name: string, kvm?: KvmMode): Paths {
  const dir = join(TEST_HOSTS_BASE, name);
  const p: Paths = {
    name,
    dir,
    netNs: join(NETNS_DIR, name),
    mntNs: join(NS_DIR, `${name}.mnt`),
    utsNs: join(NS_DIR, `${name}.uts`),
    veth: `${name}r`,
    sshdConfig: join(dir, 'sshd_config'),
    hostKey: join(dir, 'ssh_host_ed25519_key'),
    pidFile: join(dir, 'sshd.pid'),
    logFile: join(dir, 'sshd.log'),
    binds: [
      [join(dir, 'shadow'), '/etc/shadow'],
      [join(dir, 'opt'), '/opt'],
      [join(dir, 'etc-hostkeeper'), '/etc/hostkeeper'],
      [join(dir, 'var-lib-hostkeeper-agent'), '/var/lib/hostkeeper-agent'],
      [join(dir, 'root'), '/root'],
      [join(dir, 'hosts'), '/etc/hosts'],
      [join(dir, 'resolv.conf'), '/etc/resolv.conf'],
    ],
  };
  // A KVM host also gets its own libvirt directories (test/hosts/kvm.ts).
  if (kvm) p.binds.push(...kvmBinds(dir));
  return p;
}

/** The bind mounts that are files (written by the steps); the others are directories. */
const FILE_BINDS = new Set(['/etc/shadow', '/etc/hosts', '/etc/resolv.conf']);

// Letters only, so <prefix>N parses back unambiguously ('hkt1' + '2' vs 'hkt' + '12').
function checkPrefix(prefix: string): void {
  if (!/^[a-z]{1,10}$/.test(prefix)) throw new Error(`test host prefix must be 1-10 lowercase letters, got '${prefix}'`);
}

function checkName(prefix: string, n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 254) throw new Error(`test host index must be 1..254 (third octet of 10.199.N.0/24), got ${n}`);
  // The root-side link is <name>r and interface names are at most 15 characters.
  if ((prefix + n + 'r').length > 15) throw new Error(`test host name ${prefix}${n} too long: its link ${prefix}${n}r must fit in 15 characters`);
}

// ---------------------------------------------------------------------------------------------
// Creation

/**
 * Once per machine (guarded by a lock, as several test files may start together):
 * - the ns-file directory is a private bind mount: the kernel refuses to bind a mount
 *   namespace file where the mount would propagate into that namespace itself;
 * - the mount points the hosts bind over must exist on the real fs, and sshd wants /run/sshd.
 */
async function prepareShared(): Promise<void> {
  await mkdir(NS_DIR, { recursive: true });
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  await mkdir('/etc/hostkeeper', { recursive: true });
  await mkdir('/var/lib/hostkeeper-agent', { recursive: true });
  await run(`make ${NS_DIR} a private mount`, 'flock', [
    LOCK, 'sh', '-c', 'mountpoint -q "$1" || { mount --bind "$1" "$1" && mount --make-private "$1"; }', 'sh', NS_DIR,
  ]);
}

/**
 * Run inside a new mount + UTS namespace: sh -c SETUP_NAMESPACES sh <hostname> <netns dir>
 * <ns dir> <src> <dst> [<src> <dst>...]. The new mount namespace starts as a copy of the root
 * one, including the bind-mounted ns files of the other hosts (/run/netns/*, our .uts files),
 * which would keep those namespaces alive after they are destroyed: drop the copies (a failing
 * umount only means nothing was mounted there). Then the host's bind mounts and its hostname.
 */
const SETUP_NAMESPACES = `
name=$1
umount -l "$2" 2>/dev/null
umount -l "$3" 2>/dev/null
shift 3
while [ $# -gt 0 ]; do
  mount --bind "$1" "$2" || { echo "mount --bind $1 $2 failed" >&2; exit 1; }
  shift 2
done
hostname "$name" || { echo "hostname $name failed" >&2; exit 1; }
`;

interface Step {
  name: string;
  run: () => Promise<unknown>;
}

/**
 * Steps have no individual rollbacks: teardown(name) is idempotent and removes whatever
 * exists (it is also what cleans up after a crash), so it is the rollback of every step.
 */
async function createOne(prefix: string, n: number, kvm?: KvmMode): Promise<TestHost> {
  const p = paths(prefix + n, kvm);
  const ip = `10.199.${n}.2`;
  const gatewayIp = `10.199.${n}.1`;
  const rootPassword = randomBytes(12).toString('base64url');
  const inNs = (args: string[]) => ['--mount=' + p.mntNs, '--uts=' + p.utsNs, '--net=' + p.netNs, '--', ...args];

  const steps: Step[] = [
    { name: 'make directories', run: () => makeDirs(p) },
    ...(kvm ? [{ name: `libvirt files (${kvm})`, run: () => kvmPrepare(p.dir, p.name, ip, kvm) }] : []),
    {
      name: 'write shadow, hosts, resolv.conf, sshd config and host key',
      run: () => Promise.all([writeShadow(p, rootPassword), writeResolver(p, ip), writeSshd(p, ip)]),
    },
    { name: `ip netns add ${p.name}`, run: () => run(`ip netns add ${p.name}`, 'flock', [LOCK, 'ip', 'netns', 'add', p.name]) },
    {
      // Batches: every process costs ~0.1 s on a busy machine. ip stops at the first failing
      // line and names it ("Command failed -:2").
      name: 'link',
      run: async () => {
        await run(`ip -batch (link ${p.veth}, ${gatewayIp}/24, up)`, 'ip', ['-batch', '-'], {
          input: [
            `link add ${p.veth} type veth peer name eth0 netns ${p.name}`,
            `addr add ${gatewayIp}/24 dev ${p.veth}`,
            `link set ${p.veth} up`,
          ].join('\n') + '\n',
        });
        await run(`ip -n ${p.name} -batch (lo up, eth0 ${ip}/24 up, default via ${gatewayIp})`, 'ip', ['-n', p.name, '-batch', '-'], {
          input: ['link set lo up', `addr add ${ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${gatewayIp}`].join('\n') + '\n',
        });
      },
    },
    {
      // unshare binds the ns files, then runs the script inside the new namespaces.
      name: 'mount and uts namespaces',
      run: async () => {
        await writeFile(p.mntNs, '');
        await writeFile(p.utsNs, '');
        await run(`unshare --mount=${p.mntNs} --uts=${p.utsNs}`, 'unshare', [
          `--mount=${p.mntNs}`, `--uts=${p.utsNs}`, '--propagation', 'private',
          'sh', '-c', (kvm ? kvmSetupScript(p.dir, kvm) : '') + SETUP_NAMESPACES, 'sh', p.name, NETNS_DIR, NS_DIR, ...p.binds.flat(),
        ]);
      },
    },
    ...(kvm ? [{
      name: kvm === 'bare' ? 'own /sys; remove the KVM packages from the private root' : 'own /sys',
      run: () => run(`set up ${p.name} for libvirt`, 'nsenter', inNs(['sh', '-c', kvmInside(kvm)]), { timeoutMs: 120_000 }),
    }] : []),
    { name: 'start sshd', run: () => startSshd(p) },
  ];
  for (const [i, s] of steps.entries()) {
    try {
      await s.run();
    } catch (e) {
      const why = `creating test host ${p.name}: step ${i + 1}/${steps.length} (${s.name}): ${errMsg(e)}`;
      try {
        await teardown(p.name);
      } catch (te) {
        throw new Error(`${why}\n  and cleaning up after it: ${errMsg(te)}`);
      }
      throw new Error(why);
    }
  }

  let destroyed: Promise<void> | undefined;
  return {
    name: p.name,
    index: n,
    ip,
    gatewayIp,
    rootPassword,
    dir: p.dir,
    exec: (cmd, opts) => capture('nsenter', inNs(['sh', '-c', cmd]), HOST_ENV, opts?.timeoutMs ?? 60_000, `exec in ${p.name}`),
    stopSshd: () => stopSshd(p),
    startSshd: () => startSshd(p),
    // Concurrent calls share one teardown; a failed one can be retried.
    destroy: () => (destroyed ??= teardown(p.name).catch((e) => {
      destroyed = undefined;
      throw e;
    })),
  };
}

async function makeDirs(p: Paths): Promise<void> {
  await mkdir(p.dir, { recursive: true, mode: 0o700 });
  for (const [src, dst] of p.binds) if (!FILE_BINDS.has(dst)) await mkdir(src, { recursive: true });
  // sshd's StrictModes checks the home directory: root-owned, not group/world writable.
  await chmod(join(p.dir, 'root'), 0o700);
}

/** A copy of the real /etc/shadow (same owner and mode) with root's entry replaced. */
async function writeShadow(p: Paths, password: string): Promise<void> {
  const hash = (await run('openssl passwd -6', 'openssl', ['passwd', '-6', '-stdin'], { input: password + '\n' })).trim();
  const real = await readFile('/etc/shadow', 'utf8');
  const st = await stat('/etc/shadow');
  // Last change = today: 0 would make sshd (without PAM) demand a password change at login.
  const today = Math.floor(Date.now() / 86_400_000);
  const entry = `root:${hash}:${today}:0:99999:7:::`;
  const lines = real.split('\n').filter((l) => l !== '');
  const out = lines.some((l) => l.startsWith('root:')) ? lines.map((l) => (l.startsWith('root:') ? entry : l)) : [entry, ...lines];
  const file = bindSource(p, '/etc/shadow');
  await writeFile(file, out.join('\n') + '\n', { mode: st.mode & 0o777 });
  await chown(file, st.uid, st.gid);
  await chmod(file, st.mode & 0o777);
  await writeFile(join(p.dir, 'root-password'), password + '\n', { mode: 0o600 });
}

/**
 * The host reaches nothing but the root namespace, so the machine's nameserver would time out
 * (10 s per lookup: ansible's fact gathering looks up the fqdn). The host resolves its own
 * name from /etc/hosts and has no nameserver, so other lookups fail at once (glibc then asks
 * 127.0.0.1:53, where nothing listens).
 */
async function writeResolver(p: Paths, ip: string): Promise<void> {
  const hosts = await readFile('/etc/hosts', 'utf8').catch(() => '127.0.0.1 localhost\n');
  await writeFile(bindSource(p, '/etc/hosts'), `${hosts.trimEnd()}\n${ip} ${p.name}\n`, { mode: 0o644 });
  await writeFile(bindSource(p, '/etc/resolv.conf'), `# test host ${p.name}: no nameserver, see test/hosts/testhosts.ts\n`, { mode: 0o644 });
}

function bindSource(p: Paths, mountPoint: string): string {
  const b = p.binds.find(([, dst]) => dst === mountPoint);
  if (!b) throw new Error(`no bind mount for ${mountPoint}`);
  return b[0];
}

async function writeSshd(p: Paths, ip: string): Promise<void> {
  await run('ssh-keygen', 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${p.name}-host-key`, '-f', p.hostKey]);
  const config = [
    `# Test host ${p.name}, written by test/hosts/testhosts.ts`,
    `ListenAddress ${ip}`,
    'Port 22',
    `HostKey ${p.hostKey}`,
    `PidFile ${p.pidFile}`,
    'PermitRootLogin yes',
    'PasswordAuthentication yes',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'AuthorizedKeysFile .ssh/authorized_keys',
    // Without PAM sshd checks passwords against /etc/shadow itself: the host's bind-mounted copy.
    'UsePAM no',
    'StrictModes yes',
    'UseDNS no',
    'PrintMotd no',
    // Ansible opens many connections at once; the default 10:30:100 drops some.
    'MaxStartups 100:30:200',
    'MaxSessions 100',
    'LogLevel VERBOSE',
    // In-process sftp: no dependency on where the distribution puts sftp-server.
    'Subsystem sftp internal-sftp',
    '',
  ].join('\n');
  await writeFile(p.sshdConfig, config, { mode: 0o600 });
}

async function startSshd(p: Paths): Promise<void> {
  if (await sshdPid(p)) return;
  await rm(p.pidFile, { force: true });
  const ns = ['--mount=' + p.mntNs, '--uts=' + p.utsNs, '--net=' + p.netNs, '--'];
  try {
    // sshd daemonises first, then binds, then writes the pid file: the pid file means "listening".
    await run(`start sshd in ${p.name}`, 'nsenter', [...ns, SSHD, '-f', p.sshdConfig, '-E', p.logFile]);
    await until(() => sshdPid(p), 5_000, `sshd in ${p.name} to write ${p.pidFile}`);
  } catch (e) {
    throw new Error(`${errMsg(e)}\n  ${p.logFile}: ${(await tail(p.logFile)) || '(empty)'}`);
  }
}

async function stopSshd(p: Paths): Promise<void> {
  const pid = await sshdPid(p);
  if (!pid) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  await until(async () => !(await alive(pid)), 5_000, `sshd (pid ${pid}) in ${p.name} to exit`);
  await rm(p.pidFile, { force: true });
}

/** The pid in the pid file if that process is alive and is an sshd, else undefined. */
async function sshdPid(p: Paths): Promise<number | undefined> {
  const pid = Number((await readFile(p.pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0 || !(await alive(pid))) return undefined;
  const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
  return comm === 'sshd' ? pid : undefined;
}

/**
 * Each /24 is routed to one link; a second link with the same /24 (another test file that
 * picked the same `first`) would break both quietly, so fail loudly instead.
 */
async function checkSubnetsFree(prefix: string, indexes: number[]): Promise<void> {
  const out = await run('ip -o -4 addr show', 'ip', ['-o', '-4', 'addr', 'show']);
  for (const line of out.split('\n')) {
    const m = /^\d+:\s+([^\s@]+)\S*\s+inet\s+10\.199\.(\d+)\./.exec(line);
    if (!m) continue;
    const n = Number(m[2]);
    if (indexes.includes(n)) {
      throw new Error(`10.199.${n}.0/24 is already used by interface ${m[1]}: another test file has hosts with index ${n}; ` +
        `give each file its own range with createTestHosts(count, { prefix: '${prefix}', first })`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Teardown

/**
 * Removes whatever exists of host `name`, in an order that lets each part go: processes first
 * (they hold the namespaces), then the link (which takes eth0 with it at once, instead of when
 * the kernel gets round to freeing the netns), the netns, the ns files, the directory.
 * Goes on past a failing part and reports all of them.
 */
async function teardown(name: string): Promise<void> {
  const p = paths(name);
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (e) {
      errors.push(`${what}: ${errMsg(e)}`);
    }
  };
  await attempt('kill processes', () => killProcesses(p));
  await attempt(`ip link del ${p.veth}`, async () => {
    if (await exists(`/sys/class/net/${p.veth}`)) await run(`ip link del ${p.veth}`, 'ip', ['link', 'del', p.veth]);
  });
  await attempt(`ip netns del ${name}`, async () => {
    if (!(await exists(p.netNs))) return;
    await mkdir(TEST_HOSTS_BASE, { recursive: true });
    await run(`ip netns del ${name}`, 'flock', [LOCK, 'ip', 'netns', 'del', name]);
  });
  for (const f of [p.mntNs, p.utsNs]) {
    await attempt(`umount ${f}`, async () => {
      if (await isNsFile(f)) await run(`umount ${f}`, 'umount', [f]);
      await rm(f, { force: true });
    });
  }
  await attempt(`rm -rf ${p.dir}`, async () => {
    // Nothing is ever mounted under the dir in the root namespace; if something is, deleting
    // recursively would walk into it, so stop instead.
    const mounted = (await mountPoints()).filter((m) => m === p.dir || m.startsWith(p.dir + '/'));
    if (mounted.length) throw new Error(`refusing to delete: ${mounted.join(', ')} mounted in the root namespace`);
    await rm(p.dir, { recursive: true, force: true });
  });
  if (errors.length) throw new Error(`destroying test host ${name}: ${errors.join('; ')}`);
}

/**
 * SIGKILLs every process in the host's namespaces, plus any naming the host's directory in its
 * command line (an sshd whose namespace files are already gone), until none is left: killed
 * processes can have forked in the meantime. Zombies do not count (their namespaces are released).
 */
async function killProcesses(p: Paths): Promise<void> {
  const ns = new Set<string>();
  for (const [kind, file] of [['net', p.netNs], ['mnt', p.mntNs], ['uts', p.utsNs]] as const) {
    if (await isNsFile(file)) ns.add(`${kind}:[${(await stat(file)).ino}]`);
  }
  const mark = p.dir + '/';
  let pids = await processesIn(ns, mark);
  for (let round = 0; pids.length > 0; round++) {
    if (round === 100) throw new Error(`processes still running after SIGKILL: ${pids.join(', ')}`);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await sleep(20);
    pids = await processesIn(ns, mark);
  }
}

async function processesIn(ns: Set<string>, mark: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || pid === 1) continue;
    let hit = false;
    for (const kind of ['net', 'mnt', 'uts']) {
      const link = await readlink(`/proc/${entry}/ns/${kind}`).catch(() => '');
      if (link && ns.has(link)) hit = true;
    }
    if (!hit) {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      hit = cmdline.replaceAll('\0', ' ').includes(mark);
    }
    if (hit && (await alive(pid))) found.push(pid);
  }
  return found;
}

/** Names <prefix>N with anything left of them: netns, link, ns files, directory, processes. */
async function staleNames(prefix: string): Promise<Set<string>> {
  const names = new Set<string>();
  const take = (entries: string[], re: RegExp) => {
    for (const e of entries) {
      const m = re.exec(e);
      if (m) names.add(m[1]);
    }
  };
  const ls = (dir: string) => readdir(dir).catch(() => [] as string[]);
  take(await ls(NETNS_DIR), new RegExp(`^(${prefix}\\d+)$`));
  take(await ls('/sys/class/net'), new RegExp(`^(${prefix}\\d+)r$`));
  take(await ls(NS_DIR), new RegExp(`^(${prefix}\\d+)\\.(mnt|uts)$`));
  take(await ls(TEST_HOSTS_BASE), new RegExp(`^(${prefix}\\d+)$`));
  const dirMark = new RegExp(`${TEST_HOSTS_BASE}/(${prefix}\\d+)/`);
  for (const entry of await ls('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const m = dirMark.exec(cmdline.replaceAll('\0', ' '));
    if (m) names.add(m[1]);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until<T>(fn: () => Promise<T | undefined | false>, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(() => true, () => false);
}

async function onPath(cmd: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (d && (await executable(join(d, cmd)))) return true;
  }
  return false;
}

/** Alive and not a zombie (a killed process can linger as a zombie until init reaps it). */
async function alive(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!s) return false;
  const state = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** A bind-mounted namespace file (a plain file left by a crash is not one). */
async function isNsFile(path: string): Promise<boolean> {
  const s = await statfs(path).catch(() => undefined);
  return s !== undefined && s.type === NSFS_MAGIC;
}

async function mountPoints(): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').filter(Boolean).map((l) => l.split(' ')[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

async function tail(file: string, lines = 8): Promise<string> {
  const s = await readFile(file, 'utf8').catch(() => '');
  return s.trimEnd().split('\n').slice(-lines).join('\n  ');
}

/** execFile that fails with "<step> failed: <stderr>". */
function run(step: string, file: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: opts.timeoutMs ?? 15_000, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${step} failed: ${(stderr.trim() || err.message).replace(/\s+$/, '')}`));
      else resolve(stdout);
    });
    // A command that exits without reading its stdin makes this write fail with EPIPE: harmless.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

/**
 * Runs a command to completion and returns code and output; rejects only on timeout (after
 * killing its whole process group) or when it cannot start. The child gets its own session,
 * so a timeout kill reaches what it started. If the command leaves a background process that
 * still holds stdout/stderr (`cmd &` without redirection), it returns shortly after the
 * command itself exits, with the output so far, instead of waiting for the pipes to close.
 */
function capture(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, what: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let code: number | undefined;
    let done = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      if (err) reject(err);
      else resolve({ code: code ?? 1, stdout, stderr });
    };
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      finish(new Error(`${what} timed out after ${timeoutMs} ms: ${args.at(-1)}`));
    }, timeoutMs);
    child.on('error', (e) => finish(new Error(`${what} failed to start ${file}: ${e.message}`)));
    child.on('exit', (c, signal) => {
      code = c ?? 128 + (signal ? osConstants.signals[signal] : 0);
      setTimeout(() => finish(), 200).unref();
    });
    child.on('close', () => finish());
  });
}
