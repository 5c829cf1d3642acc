/**
 * Test hosts that are KVM hosts (createTestHosts(n, { kvm })): each runs its own libvirtd and
 * virtlogd, started by the playbook's kvm role inside the host's namespaces, so two test hosts
 * are two hypervisors that can live-migrate to each other.
 *
 * - Private /etc/libvirt, /run/libvirt (covers /var/run/libvirt), /var/lib/libvirt,
 *   /var/log/libvirt and /var/cache/libvirt: bind mounts of copies of the machine's.
 * - libvirtd.conf gets a host_uuid of its own (the machine's SMBIOS/machine-id uuid is shared,
 *   and libvirt refuses to migrate "to the same host"); qemu.conf runs QEMU as root (no udev
 *   here: /dev/kvm, when there is one, is 0600 root) and sets migration_address/migration_host
 *   to the host's IP (the shared hostname would resolve to loopback).
 * - Its own sysfs on /sys, mounted inside its network namespace (as `ip netns exec` does):
 *   without /sys/fs/cgroup libvirt uses no cgroups, so the daemons of two hosts do not clash
 *   over the machine's.
 * - IPv4 forwarding is switched on in the root namespace (machine-wide, and left on): the
 *   agents and QEMUs of two test hosts talk to each other through it (agent-to-agent
 *   delivery, QEMU's migration stream on 49152-49215).
 *
 * `bare`: the host also gets a private root for /usr, /etc and /var (overlays: the machine's
 * as the lower layer, an empty upper layer in the host's directory) in which the KVM packages
 * are then removed with dpkg, so the playbook really installs them; nothing on the machine
 * is uninstalled. The removal is apt's (remove with autoremove), so what else on the machine
 * needs one of their libraries keeps it and the host stays consistent: a forced dpkg removal of
 * the whole closure broke Chromium's dependencies and apt then refused the playbook's install.
 * Test hosts have no network, so /var/cache/apt/archives is an overlay of the
 * .debs test/provision/kvm.sh downloaded once (its packages.txt lists what a bare host lacks);
 * an overlay too, because Docker's docker-clean would empty a shared directory after each
 * install. Costs ~60 MB of upper layer per bare host after the install.
 *
 * Limits: PID namespaces are the machine's (`ps` shows every host's QEMU; find a host's own
 * by its namespace: qemuPids()). The first libvirtd start probes QEMU's capabilities (~7.5 s
 * under TCG on this machine).
 */
import { randomUUID } from 'node:crypto';
import { access, appendFile, cp, mkdir, readFile, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { execFile } from 'node:child_process';
import { kvmUsable } from '../../agent/facts.ts';

export type KvmMode = 'installed' | 'bare';

export const KVM_DEB_CACHE = '/var/cache/hostkeeper-kvm-debs';
const LIBVIRT_DIRS = ['/etc/libvirt', '/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt', '/var/cache/libvirt'];
const OVERLAID = ['/usr', '/etc', '/var'];
const ARCHIVES = '/var/cache/apt/archives';

const src = (dir: string, d: string) => join(dir, 'libvirt' + d.replace(/\//g, '-'));

export function kvmBinds(dir: string): [string, string][] {
  return LIBVIRT_DIRS.map((d) => [src(dir, d), d]);
}

/** Whether this machine can make KVM test hosts: the packages (and, for bare hosts, their .debs). */
export async function kvmSupport(mode: KvmMode): Promise<{ ok: true; accel: 'kvm' | 'tcg' } | { ok: false; why: string }> {
  for (const bin of ['/usr/sbin/libvirtd', '/usr/sbin/virtlogd', '/usr/bin/qemu-system-x86_64', '/usr/bin/virsh', '/usr/bin/qemu-img']) {
    if (!(await access(bin).then(() => true, () => false))) return { ok: false, why: `${bin} missing (test/provision/kvm.sh installs the KVM packages)` };
  }
  if (mode === 'bare' && !(await readFile(join(KVM_DEB_CACHE, 'packages.txt'), 'utf8').catch(() => ''))) {
    return { ok: false, why: `${KVM_DEB_CACHE}/packages.txt missing: test/provision/kvm.sh downloads the .debs a bare host installs` };
  }
  return { ok: true, accel: (await kvmUsable()) ? 'kvm' : 'tcg' };
}

/** Before the namespaces: copies of the machine's libvirt directories, edited for this host. */
export async function kvmPrepare(dir: string, name: string, ip: string, mode: KvmMode): Promise<void> {
  for (const d of LIBVIRT_DIRS) {
    await mkdir(d, { recursive: true }); // the mount point, on the machine (empty if new)
    if (!d.startsWith('/run/')) await cp(d, src(dir, d), { recursive: true, preserveTimestamps: true, force: true }).catch(() => mkdir(src(dir, d), { recursive: true }));
    else await mkdir(src(dir, d), { recursive: true });
  }
  await appendFile(join(src(dir, '/etc/libvirt'), 'libvirtd.conf'), `\n# test host ${name} (test/hosts/kvm.ts)\nhost_uuid = "${randomUUID()}"\n`);
  await appendFile(join(src(dir, '/etc/libvirt'), 'qemu.conf'),
    `\n# test host ${name} (test/hosts/kvm.ts)\nuser = "root"\ngroup = "root"\nmigration_address = "${ip}"\nmigration_host = "${ip}"\n`);
  await execFileP('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  if (mode === 'bare') {
    for (const d of [...OVERLAID, ARCHIVES]) {
      const o = join(dir, 'overlay', d.replace(/\//g, '-'));
      await mkdir(join(o, 'upper'), { recursive: true });
      await mkdir(join(o, 'work'), { recursive: true });
    }
  }
}

/**
 * Prepended to the namespace set-up script (before the host's bind mounts, which go on top):
 * the overlays of a bare host. Paths are ours (no spaces), so plain words are safe here.
 */
export function kvmSetupScript(dir: string, mode: KvmMode): string {
  if (mode !== 'bare') return '';
  const ovl = (lower: string, at: string) => {
    const o = join(dir, 'overlay', at.replace(/\//g, '-'));
    return `mount -t overlay overlay -o lowerdir=${lower},upperdir=${o}/upper,workdir=${o}/work ${at} || { echo "overlay on ${at} failed" >&2; exit 1; }\n`;
  };
  return OVERLAID.map((d) => ovl(d, d)).join('') + ovl(KVM_DEB_CACHE, ARCHIVES);
}

/** Run inside the host's namespaces once they exist: its own /sys; a bare host loses the packages. */
export function kvmInside(mode: KvmMode): string {
  const own = 'umount -l /sys && mount -t sysfs sysfs /sys || exit 1\n';
  if (mode !== 'bare') return own;
  return `${own}export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
out=$(apt-get remove -y -qq --autoremove -o DPkg::Lock::Timeout=60 libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils 2>&1) || { echo "$out" | tail -n 5 >&2; exit 1; }
! command -v libvirtd >/dev/null 2>&1 || { echo "libvirtd still present after dpkg --remove" >&2; exit 1; }
`;
}

/**
 * The QEMU processes running in a host's network namespace (found by namespace, since the
 * PID namespace is shared), with the VM uuid each runs (its -uuid argument, undashed).
 */
export async function qemuPids(netnsName: string): Promise<{ pid: number; vmUuid: string }[]> {
  const want = (await stat(`/run/netns/${netnsName}`)).ino;
  const out: { pid: number; vmUuid: string }[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const comm = (await readFile(`/proc/${e}/comm`, 'utf8').catch(() => '')).trim();
    if (!comm.startsWith('qemu-system')) continue;
    const ns = await readlink(`/proc/${e}/ns/net`).catch(() => '');
    if (ns !== `net:[${want}]`) continue;
    const args = (await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const i = args.indexOf('-uuid');
    out.push({ pid: Number(e), vmUuid: i >= 0 ? (args[i + 1] ?? '').replace(/-/g, '') : '' });
  }
  return out;
}

const execFileP = (file: string, args: string[]) => promisify(execFile)(file, args, { timeout: 10_000 });
