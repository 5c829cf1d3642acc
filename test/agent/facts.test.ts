/**
 * Facts of a real host, gathered through a fake SystemProbe: tools present, missing,
 * failing or hanging; cpuinfo from Intel, AMD and no-virtualization machines.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CommandError, type CommandRunner } from '../../agent/exec.ts';
import {
  canonicalFacts, gatherSystemFacts, hvmFact, hvmFromCpuinfo, liveSnapshotSupported, parseLastVersionToken, parseQemuImgVersion, realProbe,
  sameFacts, type SysInfo, type SystemProbe, versionAtLeast,
} from '../../agent/facts.ts';
import { AGENT_VERSION, type HostFacts } from '../../protocol/agent.ts';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, 'fixtures', name), 'utf8');

type Tool = string | 'ENOENT' | 'fail' | 'timeout';

/** A runner that plays each tool's `--version` answer, or its absence/failure. */
function runner(tools: Record<string, Tool>): CommandRunner & { calls: string[] } {
  const calls: string[] = [];
  const run: CommandRunner = async (file, args) => {
    calls.push([file, ...args].join(' '));
    const t = tools[file] ?? 'ENOENT';
    if (t === 'ENOENT') throw new CommandError(`${file}: not installed`, file, args, 'ENOENT', '', '');
    if (t === 'fail') throw new CommandError(`${file}: exit 1`, file, args, 1, '', 'error: broken');
    if (t === 'timeout') throw new CommandError(`${file}: timed out`, file, args, null, '', '');
    return { stdout: t, stderr: '' };
  };
  return Object.assign(run, { calls });
}

const fakeSi = (over: Partial<{ speed: number; fail: boolean }> = {}): SysInfo => ({
  osInfo: async () => ({ distro: 'Rocky Linux', codename: 'Blue Onyx', release: '9.3' }),
  cpu: async () => {
    if (over.fail) throw new Error('no cpu info');
    return { manufacturer: 'Intel', brand: 'Xeon Gold 6148', speed: over.speed ?? 2.4, cores: 80, physicalCores: 40, processors: 2 };
  },
  mem: async () => ({ total: 256 * 1024 ** 3, available: 200 * 1024 ** 3 }),
});

function probe(tools: Record<string, Tool>, cpuinfo: string | null, si: SysInfo | null = fakeSi()): SystemProbe {
  return {
    run: runner(tools),
    readText: async (path) => {
      if (path === '/proc/cpuinfo' && cpuinfo !== null) return cpuinfo;
      throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    },
    si: async () => {
      if (!si) throw new Error('cannot load systeminformation');
      return si;
    },
  };
}

const QEMU = 'qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n';
const LIBVIRTD = 'libvirtd (libvirt) 9.0.0\n';

describe('version parsing', () => {
  it.each([
    [QEMU, '7.2.22'],
    ['qemu-img version 1.5.3, Copyright (c) 2004-2008 Fabrice Bellard\n', '1.5.3'],
    ['qemu-img version 2.12\n', '2.12'],
    ['something else', null],
    ['', null],
  ])('qemu-img %j -> %j', (out, v) => expect(parseQemuImgVersion(out)).toBe(v));

  it.each([
    [LIBVIRTD, '9.0.0'],
    ['9.0.0\n', '9.0.0'],
    ['libvirtd (libvirt) 1.2.17', '1.2.17'],
    ['error: failed to connect', null],
    ['', null],
  ])('libvirt %j -> %j', (out, v) => expect(parseLastVersionToken(out)).toBe(v));

  it.each([
    ['1.10.0', '1.3.0', true],
    ['1.3.0', '1.3.0', true],
    ['1.2.99', '1.3.0', false],
    ['2', '1.3.0', true],
    [null, '1.0.0', false],
  ] as const)('%s >= %s is %s', (v, min, ok) => expect(versionAtLeast(v, min)).toBe(ok));

  it.each([
    ['9.0.0', '7.2.22', true],
    ['1.0.0', '1.3.0', true],
    ['0.10.2', '1.5.3', false],
    ['1.2.17', '1.2.0', false],
    [null, '7.2.0', false],
    ['9.0.0', null, false],
  ] as const)('liveSnapshot(libvirt %s, qemu-img %s) is %s', (l, q, ok) => expect(liveSnapshotSupported(l, q)).toBe(ok));
});

describe('hvm flag from /proc/cpuinfo', () => {
  it.each([
    ['cpuinfo-intel.txt', 'vmx'],
    ['cpuinfo-amd.txt', 'svm'],
    ['cpuinfo-none.txt', null],
  ])('%s -> %s', (file, flag) => expect(hvmFromCpuinfo(fixture(file))).toBe(flag));

  it('ignores a flag that is only part of another word or another line', () => {
    expect(hvmFromCpuinfo('flags : fpu vmxnot svmlike\nvmx flags : ept\n')).toBeNull();
  });
});

describe('gatherSystemFacts', () => {
  it('reports everything on a complete Intel host', async () => {
    const f = await gatherSystemFacts(probe({ 'qemu-img': QEMU, libvirtd: LIBVIRTD }, fixture('cpuinfo-intel.txt')));
    expect(f).toEqual({
      osDistribution: 'Rocky Linux', osRelease: 'Blue Onyx', osVersion: '9.3',
      qemuImgVersion: '7.2.22', libvirtVersion: '9.0.0', hvm: 'vmx',
      cpuModel: 'Intel Xeon Gold 6148', cpuCores: 40, cpuSockets: 2, cpuNum: 80, cpuMhz: 2400,
      memoryBytes: 256 * 1024 ** 3, liveSnapshot: true,
    });
  });

  type Row = [name: string, tools: Record<string, Tool>, expected: { qemuImgVersion: string | null; libvirtVersion: string | null; liveSnapshot: boolean }];
  it.each<Row>([
    ['no tools at all', {}, { qemuImgVersion: null, libvirtVersion: null, liveSnapshot: false }],
    ['libvirtd missing, virsh present', { 'qemu-img': QEMU, virsh: '9.0.0\n' }, { qemuImgVersion: '7.2.22', libvirtVersion: '9.0.0', liveSnapshot: true }],
    ['qemu-img failing', { 'qemu-img': 'fail', libvirtd: LIBVIRTD }, { qemuImgVersion: null, libvirtVersion: '9.0.0', liveSnapshot: false }],
    ['libvirtd hanging, virsh failing', { 'qemu-img': QEMU, libvirtd: 'timeout', virsh: 'fail' }, { qemuImgVersion: '7.2.22', libvirtVersion: null, liveSnapshot: false }],
    ['old versions', { 'qemu-img': 'qemu-img version 1.2.0\n', libvirtd: 'libvirtd (libvirt) 0.10.2\n' }, { qemuImgVersion: '1.2.0', libvirtVersion: '0.10.2', liveSnapshot: false }],
    ['garbage output', { 'qemu-img': 'hello', libvirtd: 'world' }, { qemuImgVersion: null, libvirtVersion: null, liveSnapshot: false }],
  ])('%s', async (_n, tools, expected) => {
    const f = await gatherSystemFacts(probe(tools, fixture('cpuinfo-amd.txt')));
    expect(f).toMatchObject({ ...expected, hvm: 'svm' });
  });

  it('survives a missing /proc/cpuinfo and a broken systeminformation', async () => {
    const f = await gatherSystemFacts(probe({}, null, null));
    expect(f).toEqual({
      osDistribution: 'unknown', osRelease: '', osVersion: '', qemuImgVersion: null, libvirtVersion: null, hvm: null,
      cpuModel: 'unknown', cpuCores: 0, cpuSockets: 0, cpuNum: 0, cpuMhz: 0, memoryBytes: 0, liveSnapshot: false,
    });
  });

  it('takes the MHz from /proc/cpuinfo when systeminformation has no speed', async () => {
    const f = await gatherSystemFacts(probe({}, fixture('cpuinfo-amd.txt'), fakeSi({ speed: 0 })));
    expect(f.cpuMhz).toBe(2246);
  });

  it('on this machine (real probes): the right shape, tools installed here found', async () => {
    const f = await gatherSystemFacts(realProbe);
    expect(typeof f.osDistribution).toBe('string');
    expect(f.cpuNum).toBeGreaterThan(0);
    expect(f.memoryBytes).toBeGreaterThan(0);
    expect(['vmx', 'svm', null]).toContain(f.hvm);
    // qemu-utils and libvirt-clients are provisioned for CI; without them the facts say null.
    const has = (tool: string) => spawnSync(tool, ['--version']).status === 0;
    if (has('qemu-img')) expect(f.qemuImgVersion).toMatch(/^\d+\.\d+/);
    else expect(f.qemuImgVersion).toBeNull();
    if (has('virsh') || has('libvirtd')) expect(f.libvirtVersion).toMatch(/^\d+\.\d+/);
    else expect(f.libvirtVersion).toBeNull();
  });
});

describe('comparing facts', () => {
  const base: HostFacts = canonicalFacts({
    osDistribution: 'x', osRelease: 'y', osVersion: '1', qemuImgVersion: '7.2.0', libvirtVersion: '9.0.0', hvm: 'vmx', cpuModel: 'm',
    cpuCores: 1, cpuSockets: 1, cpuNum: 2, cpuMhz: 1000, memoryBytes: 1, bootId: 'b', agentVersion: AGENT_VERSION, hypervisor: 'simulator', liveSnapshot: true,
  });
  it('equal regardless of key order; different on any field', () => {
    const reordered = Object.fromEntries(Object.entries(base).reverse()) as unknown as HostFacts;
    expect(sameFacts(base, reordered)).toBe(true);
    expect(JSON.stringify(canonicalFacts(reordered))).toBe(JSON.stringify(base));
    for (const k of Object.keys(base) as (keyof HostFacts)[]) {
      expect(sameFacts(base, { ...base, [k]: k === 'hvm' ? null : `${String(base[k])}!` }), k).toBe(false);
    }
  });
});

describe('hvm fact: only when hardware acceleration is usable (/dev/kvm)', () => {
  const intel = 'vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx sse\n';
  const amd = 'vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sse\n';
  const nestedIntel = 'vendor_id\t: GenuineIntel\nflags\t\t: fpu sse\n';
  const nestedAmd = 'vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse\n';
  it.each([
    ['VT-x, /dev/kvm usable', intel, true, 'vmx'],
    ['AMD-V, /dev/kvm usable', amd, true, 'svm'],
    ['VT-x in cpuinfo, /dev/kvm missing or closed', intel, false, null],
    ['nested guest: no flag in cpuinfo, /dev/kvm works (Intel)', nestedIntel, true, 'vmx'],
    ['nested guest: no flag in cpuinfo, /dev/kvm works (AMD)', nestedAmd, true, 'svm'],
    ['no flag, no /dev/kvm', nestedIntel, false, null],
    ['a probe that cannot tell (older fakes): the cpuinfo flag alone', intel, undefined, 'vmx'],
  ] as const)('%s -> %s', (_n, cpuinfo, kvm, want) => expect(hvmFact(cpuinfo, kvm)).toBe(want));

  it('gatherSystemFacts asks the probe about /dev/kvm', async () => {
    const probe = {
      ...realProbe,
      run: (async () => { throw new CommandError('x', 'x', [], 'ENOENT', '', ''); }) as CommandRunner,
      readText: async (p: string) => (p === '/proc/cpuinfo' ? intel : ''),
      kvmUsable: async () => false,
    };
    expect((await gatherSystemFacts(probe)).hvm).toBeNull();
    expect((await gatherSystemFacts({ ...probe, kvmUsable: async () => true })).hvm).toBe('vmx');
  });
});
