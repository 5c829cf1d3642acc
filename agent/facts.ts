/**
 * Host facts, as ZStack's kvmagent `/host/fact` gathers them (zstack-notes 4.4), from the
 * real machine: OS (systeminformation osInfo), qemu-img and libvirt versions (their
 * `--version`), the hardware-virtualization flag (/proc/cpuinfo), CPU and memory
 * (systeminformation cpu/mem). Every probe goes through an injectable SystemProbe; a
 * missing tool or a failing probe gives `null` (or an empty/zero value), never a crash.
 */
import { open, readFile } from 'node:fs/promises';
import type { HostFacts } from '../protocol/agent.ts';
import type { HostHardware } from './drivers/driver.ts';
import { type CommandRunner, execRunner } from './exec.ts';

export interface OsFacts {
  osDistribution: string;
  osRelease: string;
  osVersion: string;
}

/** The parts of systeminformation we use (so tests can pass a fake). */
export interface SysInfo {
  osInfo(): Promise<{ distro: string; codename: string; release: string }>;
  cpu(): Promise<{ manufacturer: string; brand: string; speed: number; speedMax?: number; cores: number; physicalCores: number; processors: number }>;
  mem(): Promise<{ total: number; available: number }>;
}

export interface SystemProbe {
  run: CommandRunner;
  readText(path: string): Promise<string>;
  si(): Promise<SysInfo>;
  /**
   * Whether /dev/kvm opens read-write (hardware acceleration usable by QEMU). Optional: a
   * probe without it (older test fakes) is judged by the cpuinfo flags alone.
   */
  kvmUsable?(): Promise<boolean>;
}

/** /dev/kvm exists and this process can open it read-write (as QEMU must). */
export async function kvmUsable(): Promise<boolean> {
  try {
    await (await open('/dev/kvm', 'r+')).close();
    return true;
  } catch {
    return false;
  }
}

const TOOL_TIMEOUT_MS = 10_000;

/**
 * systeminformation is loaded on first use, and only the three of its modules we call
 * (osinfo, cpu, memory), not its index: the index requires all of its ~20 modules (docker,
 * network, wifi, graphics, printers...) at once. Memory, measured in a bare Node 20 process
 * (`require()` then GC): the index +9.3 MB, these three +2.6 MB (most of it their shared
 * util.js). A simulator calls osInfo once per process, so every agent loaded the whole
 * library: in the bundle that was ~1 MB of idle RSS (bench/agent-rss.bench.ts, an agent
 * nobody talks to: 53.4 MB with the index, 52.4 MB with the three) and 200 KB of bundle. The
 * three functions are the ones the index exports under these names (its own lines
 * `exports.osInfo = osInfo.osInfo`, `exports.cpu = cpu.cpu`, `exports.mem = memory.mem`); the
 * index adds nothing to them on Linux (its start-up code runs on Windows only).
 */
let siModule: Promise<SysInfo> | undefined;
export const loadSystemInformation = (): Promise<SysInfo> => (siModule ??= Promise.all([
  import('systeminformation/lib/osinfo.js'),
  import('systeminformation/lib/cpu.js'),
  import('systeminformation/lib/memory.js'),
]).then(([os, cpu, memory]) => {
  const part = <T>(m: T & { default?: T }): T => m.default ?? m;
  return { osInfo: part(os).osInfo, cpu: part(cpu).cpu, mem: part(memory).mem };
}));

export const realProbe: SystemProbe = {
  run: execRunner,
  readText: (path) => readFile(path, 'utf8'),
  si: loadSystemInformation,
  kvmUsable,
};

const VERSION_RE = /^\d+(\.\d+)*$/;

/** `qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7)` -> `7.2.22`. */
export function parseQemuImgVersion(out: string): string | null {
  const m = /qemu-img version (\d+\.\d+(?:\.\d+)?)/.exec(out);
  return m ? m[1]! : null;
}

/** `libvirtd (libvirt) 9.0.0` or `9.0.0` (virsh --version): the last token, if it is a version. */
export function parseLastVersionToken(out: string): string | null {
  const tok = out.trim().split(/\s+/).pop() ?? '';
  return VERSION_RE.test(tok) ? tok : null;
}

/** `vmx` (Intel VT-x) or `svm` (AMD-V) from the flags lines of /proc/cpuinfo, else null. */
export function hvmFromCpuinfo(text: string): 'vmx' | 'svm' | null {
  let svm = false;
  for (const line of text.split('\n')) {
    if (!/^flags\s*:/.test(line)) continue;
    const flags = line.slice(line.indexOf(':') + 1).trim().split(/\s+/);
    if (flags.includes('vmx')) return 'vmx';
    if (flags.includes('svm')) svm = true;
  }
  return svm ? 'svm' : null;
}

/** The first `cpu MHz` or `model name` value in /proc/cpuinfo. */
export function cpuinfoField(text: string, field: 'cpu MHz' | 'model name'): string | undefined {
  const re = new RegExp(`^${field}\\s*:\\s*(.*)$`, 'm');
  return re.exec(text)?.[1]?.trim() || undefined;
}

/**
 * The `hvm` fact (and so the controller's `hvm::` tag): only when hardware acceleration is
 * usable. /dev/kvm is the test: a CPU with vmx/svm whose /dev/kvm is missing or closed to us
 * (module not loaded, disabled in firmware) gets none. A nested guest may run KVM without
 * the flags in cpuinfo (seen on this kind of test machine): the vendor names the extension.
 */
export function hvmFact(cpuinfo: string, kvm: boolean | undefined): 'vmx' | 'svm' | null {
  const flag = hvmFromCpuinfo(cpuinfo);
  if (kvm === undefined) return flag;
  if (!kvm) return null;
  if (flag) return flag;
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];
  return vendor === 'AuthenticAMD' ? 'svm' : 'vmx';
}

/** Numeric dotted-version comparison: `versionAtLeast('1.10.0', '1.3.0')` is true. */
export function versionAtLeast(v: string | null, min: string): boolean {
  if (!v) return false;
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

/** ZStack's rule for capability:liveSnapshot: libvirt >= 1.0.0 and qemu-img >= 1.3.0. */
export function liveSnapshotSupported(libvirt: string | null, qemuImg: string | null): boolean {
  return versionAtLeast(libvirt, '1.0.0') && versionAtLeast(qemuImg, '1.3.0');
}

async function quiet<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch {
    return undefined;
  }
}

export async function gatherOsFacts(probe: SystemProbe): Promise<OsFacts> {
  const os = await quiet(probe.si().then((si) => si.osInfo()));
  return { osDistribution: os?.distro || 'unknown', osRelease: os?.codename || '', osVersion: os?.release || '' };
}

export async function toolVersions(probe: SystemProbe): Promise<{ qemuImgVersion: string | null; libvirtVersion: string | null }> {
  const run = (file: string, args: string[]) => quiet(probe.run(file, args, { timeoutMs: TOOL_TIMEOUT_MS }));
  const [qemu, libvirtd] = await Promise.all([run('qemu-img', ['--version']), run('libvirtd', ['--version'])]);
  let libvirtVersion = libvirtd ? parseLastVersionToken(libvirtd.stdout) : null;
  if (!libvirtVersion) {
    // A host with only the client library (or libvirtd elsewhere) still tells us its libvirt.
    const virsh = await run('virsh', ['--version']);
    libvirtVersion = virsh ? parseLastVersionToken(virsh.stdout) : null;
  }
  return { qemuImgVersion: qemu ? parseQemuImgVersion(qemu.stdout) : null, libvirtVersion };
}

/** Everything a real host's driver reports as facts. */
export async function gatherSystemFacts(probe: SystemProbe): Promise<HostHardware> {
  const [os, tools, cpuinfo, si, kvm] = await Promise.all([
    gatherOsFacts(probe),
    toolVersions(probe),
    quiet(probe.readText('/proc/cpuinfo')),
    quiet(probe.si()),
    probe.kvmUsable ? quiet(probe.kvmUsable()).then((k) => k ?? false) : Promise.resolve(undefined),
  ]);
  const [cpu, mem] = await Promise.all([quiet(si ? si.cpu() : Promise.reject()), quiet(si ? si.mem() : Promise.reject())]);
  const ghz = cpu?.speed || cpu?.speedMax || 0;
  const mhzFromCpuinfo = Number(cpuinfoField(cpuinfo ?? '', 'cpu MHz'));
  const model = cpu ? `${cpu.manufacturer} ${cpu.brand}`.trim() : '';
  return {
    ...os,
    ...tools,
    hvm: hvmFact(cpuinfo ?? '', kvm),
    cpuModel: model || cpuinfoField(cpuinfo ?? '', 'model name') || 'unknown',
    cpuCores: cpu?.physicalCores ?? 0,
    cpuSockets: cpu?.processors ?? 0,
    cpuNum: cpu?.cores ?? 0,
    cpuMhz: ghz ? Math.round(ghz * 1000) : Number.isFinite(mhzFromCpuinfo) ? Math.round(mhzFromCpuinfo) : 0,
    memoryBytes: mem?.total ?? 0,
    liveSnapshot: liveSnapshotSupported(tools.libvirtVersion, tools.qemuImgVersion),
  };
}

/** Real available memory (bytes), 0 when it cannot be read. */
export async function systemAvailableMemory(probe: SystemProbe): Promise<number> {
  const m = await quiet(probe.si().then((si) => si.mem()));
  return m?.available ?? 0;
}

export async function readBootId(probe: SystemProbe): Promise<string> {
  const id = await quiet(probe.readText('/proc/sys/kernel/random/boot_id'));
  return id?.trim() || 'unknown';
}

const FACT_KEYS: (keyof HostFacts)[] = [
  'osDistribution', 'osRelease', 'osVersion', 'architecture', 'qemuImgVersion', 'libvirtVersion', 'hvm', 'cpuModel', 'cpuCores', 'cpuSockets',
  'cpuNum', 'cpuMhz', 'memoryBytes', 'bootId', 'agentVersion', 'hypervisor', 'liveSnapshot',
];

/** The machine's name as `uname -m` says it (Node names x86_64 x64 and aarch64 arm64). */
export const MACHINE_ARCH: string = ({ x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', ppc64: 'ppc64le' } as Record<string, string>)[process.arch] ?? process.arch;

/** The facts in one fixed key order (what is pushed and compared). */
export function canonicalFacts(f: HostFacts): HostFacts {
  const out = {} as Record<string, unknown>;
  for (const k of FACT_KEYS) if (f[k] !== undefined) out[k] = f[k];
  return out as unknown as HostFacts;
}

/** Deep equality of two fact sets (all fields are scalars). */
export function sameFacts(a: HostFacts, b: HostFacts): boolean {
  return FACT_KEYS.every((k) => a[k] === b[k]);
}
