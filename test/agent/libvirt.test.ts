/**
 * The libvirt driver. Read paths run the real `virsh` against libvirt's test driver
 * (`virsh -c test:///<fixture node XML>`), so the parsing is checked against libvirt's own
 * output. Write paths are checked for the commands they build (the test driver keeps
 * changes only inside one virsh process), plus one define+dumpxml round trip in a single
 * virsh process to prove libvirt accepts the XML we generate.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  domainXml, LibvirtDriver, mapDomainState, MIGRATE_URI, migrationProblems, parseDomainXml, parseEventLine, parseVirshVersion,
} from '../../agent/drivers/libvirt.ts';
import { OUTGOING_FILE } from '../../agent/outgoing.ts';
import { CommandError, type CommandRunner, execRunner } from '../../agent/exec.ts';
import type { SystemProbe } from '../../agent/facts.ts';
import { AGENT_PATHS, type AgentVm } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { makeAgent, signedPost, tempDir, until, vmSpec } from './helpers.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'libvirt-node.xml');
const URI = `test://${FIXTURE}`;
const hasVirsh = spawnSync('virsh', ['--version']).status === 0;
if (!hasVirsh) console.warn('libvirt tests SKIPPED: virsh is not installed (apt-get install -y --no-install-recommends libvirt-clients)');

const WEB: AgentVm = {
  uuid: '5d3b1f0a9c2e4f7b8a6d1e0c3b2a4f5e', name: 'web-1', state: 'Running', memorySize: 2 * 1024 ** 3, cpuNum: 2,
  vmNics: [{ ip: '10.21.100.2', mac: '52:54:00:aa:00:01' }, { ip: '192.168.7.10', mac: '52:54:00:aa:00:02' }],
};
const DB: AgentVm = {
  uuid: '0a1b2c3d4e5f46a7b8c9d0e1f2a3b4c5', name: 'db-1', state: 'Stopped', memorySize: 4 * 1024 ** 3, cpuNum: 4,
  vmNics: [{ ip: '10.21.100.3', mac: '52:54:00:bb:00:01' }],
};
const LEGACY: AgentVm = {
  uuid: '11111111222243338444555555555555', name: 'legacy-vm', state: 'Paused', memorySize: 1024 ** 3, cpuNum: 1,
  vmNics: [{ ip: '', mac: '52:54:00:cc:00:01' }],
};

describe.skipIf(!hasVirsh)('libvirt driver read paths (virsh + libvirt test driver)', () => {
  const driver = async () => new LibvirtDriver({ uri: URI, stateDir: await tempDir() });

  it('lists every domain with its state, memory, vCPUs and NICs', async () => {
    const vms = await (await driver()).list();
    expect(vms.sort((a, b) => a.name.localeCompare(b.name))).toEqual([DB, LEGACY, WEB]);
  });

  it('gets one domain by uuid, and undefined for an unknown one', async () => {
    const d = await driver();
    expect(await d.get(WEB.uuid)).toEqual(WEB);
    expect(await d.get(LEGACY.uuid)).toEqual(LEGACY);
    expect(await d.get('99999999999999999999999999999999')).toBeUndefined();
  });

  it('answers vm/list through an agent running the libvirt driver', async () => {
    const a = await makeAgent({ hypervisor: 'libvirt', libvirtUri: URI, probe: fakeProbe() });
    const r = await signedPost(a, AGENT_PATHS.vmList, {});
    expect(r.status).toBe(200);
    expect(r.body.vms).toHaveLength(3);
    const cap = await signedPost(a, AGENT_PATHS.capacity, {});
    expect(cap.body.capacity).toMatchObject({ usedCpu: WEB.cpuNum + LEGACY.cpuNum, usedMemory: WEB.memorySize + LEGACY.memorySize, availablePhysicalMemory: 12345 });
    const f = await signedPost(a, AGENT_PATHS.fact, {});
    expect(f.body.facts).toMatchObject({ hypervisor: 'libvirt', qemuImgVersion: '7.2.0', libvirtVersion: '9.0.0', hvm: 'vmx', bootId: 'boot-id-from-proc', liveSnapshot: true });
    expect(a.identity().bootId).toBe('boot-id-from-proc');
  });

  it('the XML we generate is accepted by libvirt and reads back as the same VM', async () => {
    const dir = await tempDir();
    const vm = vmSpec(3, { name: 'a <quoted> & "named" vm', vmNics: [{ ip: '10.0.0.3', mac: '52:54:00:00:00:03' }, { ip: '10.0.1.3', mac: '52:54:00:00:01:03' }] });
    const file = join(dir, 'vm.xml');
    await writeFile(file, domainXml(vm, { domainType: 'test' }));
    // One virsh process: the test driver forgets the define when it exits.
    const { stdout } = await execRunner('virsh', ['-c', 'test:///default', `define ${file}; dumpxml ${vm.uuid}`]);
    expect(parseDomainXml(stdout.slice(stdout.indexOf('<domain')))).toEqual(vm);
  });

  it('a missing virsh is a clear 503, not a crash', async () => {
    const d = new LibvirtDriver({ uri: URI, stateDir: await tempDir(), virsh: 'virsh-not-installed-here' });
    await expect(d.list()).rejects.toMatchObject({ status: 503, message: 'virsh is not installed on this host' });
  });
});

describe('libvirt XML and states', () => {
  it.each([
    ['running', 'Running'], ['idle', 'Running'], ['in shutdown', 'Running'], ['paused', 'Paused'], ['pmsuspended', 'Paused'],
    ['shut off', 'Stopped'], ['crashed', 'Stopped'], ['whatever', 'Unknown'],
  ])('domstate %j -> %s', (s, state) => expect(mapDomainState(`${s}\n\n`)).toBe(state));

  it('parses memory in any unit and escapes names', () => {
    const xml = `<domain type='kvm'><name>x</name><uuid>0a1b2c3d-4e5f-46a7-b8c9-d0e1f2a3b4c5</uuid><title>a &amp; b</title>
      <memory unit='GiB'>3</memory><vcpu placement='static'>5</vcpu><devices></devices></domain>`;
    expect(parseDomainXml(xml)).toEqual({ uuid: '0a1b2c3d4e5f46a7b8c9d0e1f2a3b4c5', name: 'a & b', memorySize: 3 * 1024 ** 3, cpuNum: 5, vmNics: [] });
  });
});

/** Records virsh calls and answers them from a small script. */
function recorder(answers: Record<string, string | Error> = {}): CommandRunner & { calls: string[][] } {
  const calls: string[][] = [];
  const run: CommandRunner = async (file, args) => {
    calls.push([file, ...args]);
    const key = args.slice(2).join(' ');
    const hit = Object.entries(answers).find(([k]) => key.startsWith(k));
    if (hit?.[1] instanceof Error) throw hit[1];
    return { stdout: hit ? hit[1] : '', stderr: '' };
  };
  return Object.assign(run, { calls });
}

const DASHED = '00000001-0000-0000-0000-000000000000';

/** Moves the fake clock a second at a time whenever `p` waits on it, until `p` settles. */
async function drive(clock: FakeClock, p: Promise<unknown>): Promise<void> {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  while (!settled) {
    await until(() => settled || clock.pending > 0);
    if (!settled) clock.advance(1_000);
  }
}
const xmlOf = (n: number) => domainXml(vmSpec(n));
const notRunning = new CommandError('virsh: domain is not running', 'virsh', [], 1, '', 'error: Requested operation is not valid: domain is not running');
const noDomain = new CommandError('virsh: no domain', 'virsh', [], 1, '', "error: failed to get domain '00000001'");

describe('libvirt driver write paths (command construction)', () => {
  const make = async (answers: Record<string, string | Error>, clock = new FakeClock()) => {
    const run = recorder(answers);
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock, stopTimeoutMs: 3_000, events: false, kvmUsable: async () => true });
    return { d, run, clock };
  };
  const virshCalls = (run: { calls: string[][] }) => run.calls.map((c) => c.slice(3).join(' ')).filter((c) => !c.startsWith('dumpxml') && !c.startsWith('domstate'));

  it('every call is `virsh -c <uri> ...` (execFile, no shell)', async () => {
    const { d, run } = await make({ dumpxml: xmlOf(1), domstate: 'shut off' });
    await d.start(vmSpec(1).uuid);
    for (const c of run.calls) expect(c.slice(0, 3)).toEqual(['virsh', '-c', 'qemu:///system']);
  });

  it('list: dumpxml of every domain, at most 8 at once (the agent\'s one limiter), a domain gone since the listing skipped', async () => {
    const specs = Array.from({ length: 20 }, (_, i) => vmSpec(i + 1));
    const dashedOf = (u: string) => `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`;
    let active = 0;
    let peak = 0;
    const run: CommandRunner = async (_file, args) => {
      const [cmd, arg] = args.slice(2);
      if (cmd === 'list') return { stdout: arg === '--all' || arg === '--state-running' ? `${specs.map((v) => dashedOf(v.uuid)).join('\n')}\n` : '', stderr: '' };
      if (cmd !== 'dumpxml') return { stdout: '', stderr: '' };
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setImmediate(r));
      active--;
      const i = specs.findIndex((v) => dashedOf(v.uuid) === arg);
      if (i === 4) throw noDomain;
      return { stdout: xmlOf(i + 1), stderr: '' };
    };
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock: new FakeClock(), events: false, kvmUsable: async () => true });
    const vms = await d.list();
    expect(vms.map((v) => [v.uuid, v.state])).toEqual(specs.filter((_, i) => i !== 4).map((v) => [v.uuid, 'Running']));
    expect(peak).toBe(8);
  });

  it('start: `virsh start <uuid>`; a paused VM is resumed instead', async () => {
    const a = await make({ dumpxml: xmlOf(1), domstate: 'shut off' });
    await a.d.start(vmSpec(1).uuid);
    expect(virshCalls(a.run)).toEqual([`start ${DASHED}`]);
    const b = await make({ dumpxml: xmlOf(1), domstate: 'paused' });
    await b.d.start(vmSpec(1).uuid);
    expect(virshCalls(b.run)).toEqual([`resume ${DASHED}`]);
  });

  it('stop grace: ACPI shutdown, polled until the timeout, then GRACE_TIMEOUT without powering off', async () => {
    const { d, run, clock } = await make({ dumpxml: xmlOf(1), domstate: 'running' });
    const p = d.stop(vmSpec(1).uuid, { type: 'grace', graceTimeoutMs: 2_500 });
    await drive(clock, p);
    await expect(p).rejects.toMatchObject({ status: 409, code: 'GRACE_TIMEOUT', message: expect.stringMatching(/did not shut down within 2500 ms/) });
    expect(virshCalls(run)).toEqual([`shutdown ${DASHED}`]);
    expect(run.calls.filter((c) => c[3] === 'domstate').length).toBe(5); // the VM's read, then polls at 0, 1 s, 2 s, 2.5 s
  });

  it('stop grace: answers the Stopped VM as soon as the guest is off', async () => {
    let polls = 0;
    const run: CommandRunner = async (_f, args) => {
      const sub = args[2];
      if (sub === 'dumpxml') return { stdout: xmlOf(1), stderr: '' };
      if (sub === 'domstate') return { stdout: polls++ < 2 ? 'running\n' : 'shut off\n', stderr: '' };
      return { stdout: '', stderr: '' };
    };
    const clock = new FakeClock();
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock, events: false });
    const p = d.stop(vmSpec(1).uuid);
    await drive(clock, p);
    expect((await p).state).toBe('Stopped');
  });

  it.each([
    ['stop cold', (d: LibvirtDriver) => d.stop(vmSpec(1).uuid, { type: 'cold' }), 'running', [`destroy ${DASHED}`]],
    ['reboot', (d: LibvirtDriver) => d.reboot(vmSpec(1).uuid), 'running', [`reboot ${DASHED}`]],
    ['resolve, not completed: resumes a VM that was running', async (d: LibvirtDriver, dir: string) => {
      await writeFile(join(dir, OUTGOING_FILE), JSON.stringify({ [vmSpec(1).uuid]: { to: 'http://10.0.0.7:7070', resume: 'Running' } }));
      return d.resolveMigration(vmSpec(1).uuid, false);
    }, 'paused', [`resume ${DASHED}`]],
    ['resolve, completed: destroys and undefines the copy here', async (d: LibvirtDriver, dir: string) => {
      await writeFile(join(dir, OUTGOING_FILE), JSON.stringify({ [vmSpec(1).uuid]: { to: 'http://10.0.0.7:7070', resume: 'Running' } }));
      return d.resolveMigration(vmSpec(1).uuid, true);
    }, 'paused', [`destroy ${DASHED}`, `undefine ${DASHED} --nvram`]],
    ['a marker left by a previous process: the running domain is suspended at start', async (d: LibvirtDriver, dir: string) => {
      await writeFile(join(dir, OUTGOING_FILE), JSON.stringify({ [vmSpec(1).uuid]: { to: 'http://10.0.0.7:7070', resume: 'Running' } }));
      const vm = await d.get(vmSpec(1).uuid);
      expect(vm?.migratingTo).toBe('http://10.0.0.7:7070');
      await expect(d.start(vmSpec(1).uuid)).rejects.toMatchObject({ status: 409, message: expect.stringMatching(/awaits the outcome of its migration/) });
      return vm;
    }, 'running', [`suspend ${DASHED}`]],
  ])('%s: the virsh commands', async (_n, op, domstate, calls) => {
    const dir = await tempDir();
    const run = recorder({ dumpxml: xmlOf(1), domstate });
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: dir, run, clock: new FakeClock(), events: false });
    await op(d, dir);
    expect(virshCalls(run)).toEqual(calls);
  });

  it('stop grace of a Paused domain: GRACE_TIMEOUT at once (its guest cannot see ACPI)', async () => {
    const { d, run } = await make({ dumpxml: xmlOf(1), domstate: 'paused' });
    await expect(d.stop(vmSpec(1).uuid)).rejects.toMatchObject({ status: 409, code: 'GRACE_TIMEOUT' });
    expect(virshCalls(run)).toEqual([]);
  });

  it('announces its own changes to watchers (the seam for libvirt events: notifyExternalChange)', async () => {
    const { d } = await make({ dumpxml: xmlOf(1), domstate: 'running' });
    const seen: [string, string | null][] = [];
    d.watch((uuid, vm) => seen.push([uuid, vm?.state ?? null]));
    await d.reboot(vmSpec(1).uuid);
    await d.notifyExternalChange(vmSpec(1).uuid);
    expect(seen).toEqual([[vmSpec(1).uuid, 'Running'], [vmSpec(1).uuid, 'Running']]);
  });

  it('destroy: power off (tolerating a stopped domain) and undefine', async () => {
    const { d, run } = await make({ dumpxml: xmlOf(1), domstate: 'shut off', destroy: notRunning });
    const vm = await d.destroy(vmSpec(1).uuid);
    expect(vm.state).toBe('Stopped');
    expect(virshCalls(run)).toEqual([`destroy ${DASHED}`, `undefine ${DASHED} --nvram`]);
  });

  it('create: `virsh define <file>` of the generated XML (file removed after), then start', async () => {
    let xmlAtDefine = '';
    let definedFile = '';
    const calls: string[] = [];
    const run: CommandRunner = async (_file, args) => {
      const [sub, arg] = args.slice(2);
      calls.push(args.slice(2).join(' '));
      if (sub === 'define') {
        definedFile = arg!;
        xmlAtDefine = await readFile(arg!, 'utf8');
      }
      if (sub === 'dumpxml' || sub === 'domstate') {
        if (!xmlAtDefine) throw noDomain;
        return { stdout: sub === 'dumpxml' ? xmlAtDefine : 'running\n', stderr: '' };
      }
      return { stdout: '', stderr: '' };
    };
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, events: false, kvmUsable: async () => true });
    const vm = await d.create(vmSpec(1), true);
    expect(vm).toEqual({ ...vmSpec(1), state: 'Running' });
    expect(xmlAtDefine).toBe(domainXml(vmSpec(1)));
    expect(calls.filter((c) => !/^(dumpxml|domstate)/.test(c))).toEqual([`define ${definedFile}`, `start ${DASHED}`]);
    await expect(stat(definedFile)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('migrate: compatibility asked over the transport, marker on disk, the destination agent accepts, then `virsh migrate --live` over qemu+ssh; marker removed', async () => {
    const { d, run } = await make(COMPATIBLE);
    const dir = (d as unknown as { opts: { stateDir: string } }).opts.stateDir;
    const delivered: string[] = [];
    const markerAtDelivery: unknown[] = [];
    await d.migrate(vmSpec(1).uuid, {
      url: 'http://10.0.0.7:7070',
      deliver: async (vm) => {
        delivered.push(vm.uuid);
        markerAtDelivery.push(JSON.parse(await readFile(join(dir, OUTGOING_FILE), 'utf8')));
        expect((await d.get(vm.uuid))?.state).toBe('Migrating');
      },
    });
    expect(delivered).toEqual([vmSpec(1).uuid]);
    expect(markerAtDelivery).toEqual([{ [vmSpec(1).uuid]: { to: 'http://10.0.0.7:7070', resume: 'Running' } }]);
    expect(JSON.parse(await readFile(join(dir, OUTGOING_FILE), 'utf8'))).toEqual({});
    const dest = MIGRATE_URI.replace('{host}', '10.0.0.7');
    expect(dest).toMatch(/^qemu\+ssh:\/\/root@10\.0\.0\.7\/system\?command=/);
    expect(run.calls.filter((c) => c[3] === 'migrate' || c[2] === dest).map((c) => c.slice(2).join(' '))).toEqual([
      `${dest} version; capabilities; echo HK-KVM; domcapabilities --virttype kvm`,
      `qemu:///system migrate --live --persistent --undefinesource ${DASHED} ${dest}`,
    ]);
  });

  it('migrate: a refusal by the destination runs no virsh migrate', async () => {
    const { d, run } = await make(COMPATIBLE);
    await expect(d.migrate(vmSpec(1).uuid, { url: 'http://10.0.0.7:7070', deliver: async () => { throw new Error('refused'); } })).rejects.toThrow('refused');
    expect(run.calls.filter((c) => c[3] === 'migrate')).toEqual([]);
  });
});

// ---- migration: compatibility, transport, convergence; libvirt events ------------------------

const versionOut = (qemu: string) => `Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\nRunning hypervisor: QEMU ${qemu}\n`;
const capsOut = (model: string, machines = ['pc-i440fx-7.2']) =>
  `<capabilities><host><uuid>x</uuid><cpu><arch>x86_64</arch><model>${model}</model></cpu></host>` +
  `<guest><arch name='x86_64'>${machines.map((m) => `<machine maxCpus='255'>${m}</machine>`).join('')}</arch></guest></capabilities>\n`;
const domcaps = '<domainCapabilities>\n<domain>kvm</domain></domainCapabilities>\n';
const guestXml = xmlOf(1).replace("<type arch='x86_64'>", "<type arch='x86_64' machine='pc-i440fx-7.2'>");
/** Answers (longest key first: the recorder takes the first prefix that matches). */
const COMPATIBLE: Record<string, string | Error> = {
  'version; capabilities': versionOut('7.2.22') + capsOut('Skylake') + 'HK-KVM\n' + domcaps,
  version: versionOut('7.2.22'), capabilities: capsOut('Skylake'), dumpxml: guestXml, domstate: 'running',
};

describe('live migration checks (command construction)', () => {
  const src = { qemu: '7.2.0', cpuModel: 'Skylake' };
  const dst = { qemu: '7.2.0', libvirt: '9.0.0', machines: ['pc-i440fx-7.2'], kvm: true, cpuModel: 'Skylake' };
  const guest = { machine: 'pc-i440fx-7.2', type: 'kvm', hostPassthrough: false };
  it.each([
    ['same versions', {}, {}, {}, []],
    ['a newer QEMU there', {}, { qemu: '8.0.0' }, {}, []],
    ['an older QEMU there', {}, { qemu: '6.2.0' }, {}, [/runs QEMU 6\.2\.0, older than this host's QEMU 7\.2\.0/]],
    ['the machine type unknown there', {}, { machines: ['pc-i440fx-6.2'] }, {}, [/does not offer the guest's machine type pc-i440fx-7\.2/]],
    ['no KVM there for a KVM guest', {}, { kvm: false }, {}, [/has no usable KVM/]],
    ['no KVM there for a TCG guest', {}, { kvm: false }, { type: 'qemu' }, []],
    ['host-passthrough to another CPU', {}, { cpuModel: 'EPYC' }, { hostPassthrough: true }, [/host-passthrough, Skylake\) and host d has another CPU \(EPYC\)/]],
    ['the default CPU model to another CPU', {}, { cpuModel: 'EPYC' }, {}, []],
  ] as const)('%s', (_n, s, d, g, want) => {
    const out = migrationProblems({ ...src, ...s }, { ...dst, ...d }, { ...guest, ...g }, 'host d');
    expect(out).toHaveLength(want.length);
    want.forEach((re, i) => expect(out[i]).toMatch(re));
  });

  it('parses `virsh version` and event lines', () => {
    expect(parseVirshVersion(versionOut('7.2.22'))).toEqual({ libvirt: '9.0.0', qemu: '7.2.22' });
    expect(parseEventLine("event 'lifecycle' for domain '0123456789abcdef0123456789abcdef': Stopped Failed")).toBe('0123456789abcdef0123456789abcdef');
    expect(parseEventLine("event 'lifecycle' for domain legacy-vm: Started Booted")).toBe('legacy-vm');
    expect(parseEventLine('event loop ended')).toBeUndefined();
  });

  const make = async (answers: Record<string, string | Error>, clock = new FakeClock()) => {
    const run = recorder(answers);
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock, events: false, convergeTimeoutMs: 5_000 });
    return { d, run, clock };
  };
  const sent: string[] = [];
  const target = { url: 'http://10.0.0.7:7070', deliver: async (v: AgentVm) => void sent.push(v.uuid) };

  it('an incompatible destination: 409 with the reasons, before the destination agent hears of it; nothing moves', async () => {
    const { d, run } = await make({ ...COMPATIBLE, 'version; capabilities': versionOut('6.2.0') + capsOut('Skylake', ['pc-i440fx-6.2']) + 'HK-KVM\n' });
    sent.length = 0;
    await expect(d.migrate(vmSpec(1).uuid, target)).rejects.toMatchObject({
      status: 409, message: expect.stringMatching(/cannot live-migrate to 10\.0\.0\.7: host 10\.0\.0\.7 runs QEMU 6\.2\.0, older .*; .*machine type pc-i440fx-7\.2; .*no usable KVM/),
    });
    expect(sent).toEqual([]);
    expect(run.calls.some((c) => c[3] === 'migrate')).toBe(false);
    expect((await d.get(vmSpec(1).uuid))?.migratingTo).toBeUndefined();
  });

  it('no credentials for the transport: 502 with ssh\'s reason, nothing moves', async () => {
    const refused = new CommandError('virsh failed', 'virsh', [], 1, '', 'error: failed to connect to the hypervisor\nerror: Cannot recv data: root@10.0.0.7: Permission denied (publickey).: Connection reset by peer\n');
    const { d } = await make({ ...COMPATIBLE, 'version; capabilities': refused });
    await expect(d.migrate(vmSpec(1).uuid, target)).rejects.toMatchObject({
      status: 502, message: expect.stringMatching(/cannot reach libvirt on 10\.0\.0\.7 over the migration transport .*Permission denied \(publickey\)/),
    });
  });

  it('a guest that does not converge: domjobabort after the timeout, 502 saying so, the VM still here', async () => {
    const clock = new FakeClock();
    let fail!: (e: Error) => void;
    const base = recorder(COMPATIBLE);
    const run: CommandRunner & { calls: string[][] } = Object.assign(async (file: string, args: string[], o?: { timeoutMs?: number }) => {
      if (args[2] === 'migrate') {
        base.calls.push([file, ...args]);
        return new Promise<never>((_, rej) => (fail = rej));
      }
      if (args[2] === 'domjobabort') fail(new CommandError('aborted', 'virsh', args, 1, '', 'error: operation aborted: migration out job: canceled by client'));
      return base(file, args, o);
    }, { calls: base.calls });
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock, events: false, convergeTimeoutMs: 5_000 });
    const p = d.migrate(vmSpec(1).uuid, target);
    await until(() => base.calls.some((c) => c[3] === 'migrate'));
    clock.advance(5_000);
    await expect(p).rejects.toMatchObject({ status: 502, message: expect.stringMatching(/did not finish migrating to 10\.0\.0\.7 within 5 s .*keeps running on this host/) });
    const after = await d.get(vmSpec(1).uuid);
    expect([after?.state, after?.migratingTo]).toEqual(['Running', undefined]);
  });

  it('libvirt events: one `virsh event --loop` child; a line re-reads that domain only and tells the watchers; restarted when it ends', async () => {
    const clock = new FakeClock();
    const children: (ChildProcess & { stdout: PassThrough })[] = [];
    const spawned: string[][] = [];
    const spawnEvents = (file: string, args: string[]) => {
      spawned.push([file, ...args]);
      const c = Object.assign(new EventEmitter(), { stdout: new PassThrough(), stderr: new PassThrough(), kill: () => true }) as unknown as ChildProcess & { stdout: PassThrough };
      children.push(c);
      return c;
    };
    const run = recorder({ 'list --all': `${DASHED}\n`, dumpxml: xmlOf(1), domstate: 'shut off' });
    const d = new LibvirtDriver({ uri: 'qemu:///system', stateDir: await tempDir(), run, clock, spawnEvents });
    const seen: [string, string | null][] = [];
    d.watch((u, vm) => seen.push([u, vm?.state ?? null]));
    d.watch(() => undefined);
    expect(spawned).toEqual([['virsh', '-c', 'qemu:///system', 'event', '--loop', '--event', 'lifecycle']]);
    children[0]!.stdout.write(`event 'lifecycle' for domain '${vmSpec(1).uuid}': Stopped Failed\n`);
    await until(() => seen.length === 1);
    expect(seen).toEqual([[vmSpec(1).uuid, 'Stopped']]);
    expect(run.calls.filter((c) => c[3] === 'list')).toEqual([]); // no poll over every domain
    children[0]!.emit('close', 1);
    clock.advance(1_000);
    expect(spawned).toHaveLength(2);
    await until(() => seen.length === 2); // after a restart every domain is read once
    await d.close();
  });
});

function fakeProbe(): SystemProbe {
  const run: CommandRunner = async (file, args) => {
    if (file === 'qemu-img') return { stdout: 'qemu-img version 7.2.0\n', stderr: '' };
    if (file === 'libvirtd') return { stdout: 'libvirtd (libvirt) 9.0.0\n', stderr: '' };
    if (file === 'virsh') return execRunner(file, args);
    throw new CommandError('nope', file, [], 'ENOENT', '', '');
  };
  return {
    run,
    readText: async (p) => (p === '/proc/cpuinfo' ? 'flags : vmx\n' : p.endsWith('boot_id') ? 'boot-id-from-proc\n' : ''),
    si: async () => ({
      osInfo: async () => ({ distro: 'Debian GNU/Linux', codename: 'bookworm', release: '12' }),
      cpu: async () => ({ manufacturer: 'X', brand: 'Y', speed: 2, cores: 4, physicalCores: 2, processors: 1 }),
      mem: async () => ({ total: 99999, available: 12345 }),
    }),
  };
}
