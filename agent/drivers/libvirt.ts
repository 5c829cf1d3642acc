/**
 * A real KVM host through `virsh` (execFile, never a shell), on a configurable connection
 * URI (default qemu:///system; tests use libvirt's test driver, test:///<node.xml>).
 *
 * How Hostkeeper VMs look in libvirt: domain name = the VM uuid (32 hex, as ZStack names its
 * domains), libvirt <uuid> = the same uuid with dashes, <title> = the VM name, and the NIC
 * IPs (which libvirt does not know) in a <metadata> element of our own namespace. Domains
 * defined by someone else are listed too: uuid from libvirt, name from <title> or the
 * domain name, IPs empty.
 */
import { randomBytes } from 'node:crypto';
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentVm, AgentVmState } from '../../protocol/agent.ts';
import { type Clock, sleep, systemClock } from '../clock.ts';
import { CommandError, type CommandRunner } from '../exec.ts';
import { ensureDir } from '../fsutil.ts';
import { gatherSystemFacts, readBootId, realProbe, type SystemProbe, systemAvailableMemory } from '../facts.ts';
import { DriverError, type HostHardware, type HypervisorDriver, type MigrationTarget, notFound, vmName, type VmSpec } from './driver.ts';

export const HK_XMLNS = 'https://hostkeeper.dev/xmlns/vm/1';

export interface LibvirtOptions {
  /** virsh -c URI; default qemu:///system. */
  uri?: string;
  /** Where generated domain XML is written before `virsh define` (the agent's state dir). */
  stateDir: string;
  run?: CommandRunner;
  probe?: SystemProbe;
  clock?: Clock;
  /** <domain type=...>: kvm on a real host, test for the test driver. */
  domainType?: string;
  /** The libvirt network NICs attach to. */
  network?: string;
  /** Destination libvirt URI for `virsh migrate`; `{host}` is the destination agent's host. */
  migrateUri?: string;
  /** How long `stop` waits for a guest to shut down (ACPI) before pulling the plug. */
  stopTimeoutMs?: number;
  virsh?: string;
}

const dashed = (u: string) => `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`;
const undashed = (u: string) => u.replace(/-/g, '').toLowerCase();

const unescapeXml = (s: string) =>
  s.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' };
    if (named[e]) return named[e]!;
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
export const escapeXml = (s: string) => s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);

const UNIT_BYTES: Record<string, number> = {
  b: 1, bytes: 1, k: 1024, kib: 1024, kb: 1000, m: 1024 ** 2, mib: 1024 ** 2, mb: 1e6, g: 1024 ** 3, gib: 1024 ** 3, gb: 1e9, t: 1024 ** 4, tib: 1024 ** 4, tb: 1e12,
};

function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`).exec(tag);
  return m ? unescapeXml(m[1] ?? m[2] ?? '') : undefined;
}

/** The fields Hostkeeper reads from `virsh dumpxml` (libvirt's own, normalised, output). */
export function parseDomainXml(xml: string): VmSpec {
  const text = (re: RegExp) => {
    const m = re.exec(xml);
    return m ? unescapeXml(m[1]!.trim()) : undefined;
  };
  const name = text(/<name>([^<]*)<\/name>/);
  const uuid = text(/<uuid>([^<]*)<\/uuid>/);
  if (!name || !uuid) throw new Error('domain XML without <name> or <uuid>');
  const title = text(/<title>([^<]*)<\/title>/);
  const memTag = /<memory\b([^>]*)>\s*(\d+)\s*<\/memory>/.exec(xml);
  const unit = (memTag && attr(memTag[1]!, 'unit')?.toLowerCase()) || 'kib';
  const memorySize = memTag ? Number(memTag[2]) * (UNIT_BYTES[unit] ?? 1024) : 0;
  const cpuNum = Number(text(/<vcpu\b[^>]*>(\d+)<\/vcpu>/) ?? 0);

  // IPs recorded by Hostkeeper at define time, keyed by MAC, under whatever prefix our namespace got.
  const ipByMac = new Map<string, string>();
  const ns = new RegExp(`xmlns:([A-Za-z_][\\w.-]*)\\s*=\\s*["']${HK_XMLNS.replace(/[.]/g, '\\.')}["']`).exec(xml);
  if (ns) {
    for (const m of xml.matchAll(new RegExp(`<${ns[1]}:nic\\b([^>]*)/?>`, 'g'))) {
      const mac = attr(m[1]!, 'mac')?.toLowerCase();
      if (mac) ipByMac.set(mac, attr(m[1]!, 'ip') ?? '');
    }
  }
  const vmNics: AgentVm['vmNics'] = [];
  for (const m of xml.matchAll(/<interface\b[^>]*>([\s\S]*?)<\/interface>/g)) {
    const macTag = /<mac\b([^>]*)\/?>/.exec(m[1]!);
    const mac = macTag ? attr(macTag[1]!, 'address')?.toLowerCase() : undefined;
    if (mac) vmNics.push({ ip: ipByMac.get(mac) ?? '', mac });
  }
  return { uuid: undashed(uuid), name: title || name, memorySize, cpuNum, vmNics };
}

/** The domain XML Hostkeeper defines for a VM (see the header comment for the mapping). */
export function domainXml(vm: VmSpec, opts: { domainType?: string; network?: string } = {}): string {
  const nics = vm.vmNics
    .map(
      (n) => `    <interface type='network'>
      <mac address='${escapeXml(n.mac)}'/>
      <source network='${escapeXml(opts.network ?? 'default')}'/>
      <model type='virtio'/>
    </interface>`,
    )
    .join('\n');
  const meta = vm.vmNics.map((n) => `      <hk:nic mac='${escapeXml(n.mac)}' ip='${escapeXml(n.ip)}'/>`).join('\n');
  return `<domain type='${escapeXml(opts.domainType ?? 'kvm')}'>
  <name>${vm.uuid}</name>
  <uuid>${dashed(vm.uuid)}</uuid>
  <title>${escapeXml(vm.name)}</title>
  <metadata>
    <hk:vm xmlns:hk='${HK_XMLNS}'>
${meta}
    </hk:vm>
  </metadata>
  <memory unit='KiB'>${Math.ceil(vm.memorySize / 1024)}</memory>
  <vcpu>${vm.cpuNum}</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
${nics}
  </devices>
</domain>
`;
}

/** `virsh domstate` words -> VM state. */
export function mapDomainState(s: string): AgentVmState {
  switch (s.trim().toLowerCase()) {
    case 'running':
    case 'idle':
    case 'blocked':
    case 'in shutdown':
      return 'Running';
    case 'paused':
    case 'pmsuspended':
      return 'Paused';
    case 'shut off':
    case 'crashed':
      return 'Stopped';
    default:
      return 'Unknown';
  }
}

const isNoDomain = (err: unknown) => err instanceof CommandError && /failed to get domain|Domain not found|no domain with matching/i.test(err.stderr);
const isNotRunning = (err: unknown) => err instanceof CommandError && /domain is not running|not running/i.test(err.stderr);

/** How many `virsh dumpxml` run at once while listing. */
const LIST_CONCURRENCY = 8;

export class LibvirtDriver implements HypervisorDriver {
  readonly kind = 'libvirt' as const;
  readonly uri: string;
  private readonly run: CommandRunner;
  private readonly probe: SystemProbe;
  private readonly clock: Clock;

  constructor(private readonly opts: LibvirtOptions) {
    this.uri = opts.uri ?? 'qemu:///system';
    this.probe = opts.probe ?? realProbe;
    this.run = opts.run ?? this.probe.run;
    this.clock = opts.clock ?? systemClock;
  }

  /** The argv of one virsh call (exported through the class for tests of command construction). */
  args(...cmd: string[]): string[] {
    return ['-c', this.uri, ...cmd];
  }

  private async virsh(...cmd: string[]): Promise<string> {
    try {
      return (await this.run(this.opts.virsh ?? 'virsh', this.args(...cmd))).stdout;
    } catch (err) {
      if (err instanceof CommandError && err.code === 'ENOENT') throw new DriverError(503, 'virsh is not installed on this host');
      throw err;
    }
  }

  private async uuids(filter: string): Promise<string[]> {
    const out = await this.virsh('list', filter, '--uuid');
    return out.split('\n').map((l) => l.trim()).filter(Boolean).map(undashed);
  }

  // ---- host -----------------------------------------------------------------------------

  bootId(): Promise<string> {
    return readBootId(this.probe);
  }

  hostFacts(): Promise<HostHardware> {
    return gatherSystemFacts(this.probe);
  }

  availableMemory(): Promise<number> {
    return systemAvailableMemory(this.probe);
  }

  // ---- read paths -----------------------------------------------------------------------

  async list(): Promise<AgentVm[]> {
    // Four listings give every domain's state exactly (no parsing of the padded table,
    // whose names and states may both contain spaces).
    const [all, running, paused, shutoff] = await Promise.all([
      this.uuids('--all'), this.uuids('--state-running'), this.uuids('--state-paused'), this.uuids('--state-shutoff'),
    ]);
    const state = new Map<string, AgentVmState>();
    for (const u of running) state.set(u, 'Running');
    for (const u of paused) state.set(u, 'Paused');
    for (const u of shutoff) state.set(u, 'Stopped');
    const out: (AgentVm | undefined)[] = new Array(all.length);
    let next = 0;
    const worker = async () => {
      while (next < all.length) {
        const i = next++;
        const u = all[i]!;
        try {
          const spec = parseDomainXml(await this.virsh('dumpxml', dashed(u)));
          out[i] = { ...spec, state: state.get(u) ?? 'Unknown' };
        } catch (err) {
          if (!isNoDomain(err)) throw err; // gone since the listing: skip it
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, all.length) }, worker));
    return out.filter((v): v is AgentVm => !!v);
  }

  async get(uuid: string): Promise<AgentVm | undefined> {
    try {
      const [xml, st] = await Promise.all([this.virsh('dumpxml', dashed(uuid)), this.virsh('domstate', dashed(uuid))]);
      return { ...parseDomainXml(xml), state: mapDomainState(st) };
    } catch (err) {
      if (isNoDomain(err)) return undefined;
      throw err;
    }
  }

  private async mustGet(uuid: string): Promise<AgentVm> {
    const vm = await this.get(uuid);
    if (!vm) throw notFound(uuid);
    return vm;
  }

  // ---- write paths ----------------------------------------------------------------------

  async create(spec: VmSpec, start: boolean): Promise<AgentVm> {
    if (await this.get(spec.uuid)) throw new DriverError(409, `${vmName(spec.uuid)} already exists on this host`);
    const dir = join(this.opts.stateDir, 'tmp');
    await ensureDir(dir);
    const file = join(dir, `${spec.uuid}.${randomBytes(4).toString('hex')}.xml`);
    await writeFile(file, domainXml(spec, this.opts), { mode: 0o600 });
    try {
      await this.virsh('define', file);
    } finally {
      await unlink(file).catch(() => {});
    }
    if (start) await this.virsh('start', dashed(spec.uuid));
    return this.mustGet(spec.uuid);
  }

  async start(uuid: string): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state === 'Paused') await this.virsh('resume', dashed(uuid));
    else if (vm.state !== 'Running') await this.virsh('start', dashed(uuid));
    return this.mustGet(uuid);
  }

  /** ACPI shutdown, then `virsh destroy` (power off) if the guest is still up after stopTimeoutMs. */
  async stop(uuid: string): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state === 'Stopped') return vm;
    try {
      await this.virsh('shutdown', dashed(uuid));
    } catch (err) {
      if (!isNotRunning(err)) throw err;
    }
    const deadline = this.clock.now() + (this.opts.stopTimeoutMs ?? 60_000);
    while (this.clock.now() < deadline) {
      const st = mapDomainState(await this.virsh('domstate', dashed(uuid)));
      if (st === 'Stopped') return this.mustGet(uuid);
      await sleep(this.clock, 1000);
    }
    await this.powerOff(uuid);
    return this.mustGet(uuid);
  }

  private async powerOff(uuid: string): Promise<void> {
    try {
      await this.virsh('destroy', dashed(uuid));
    } catch (err) {
      if (!isNotRunning(err)) throw err;
    }
  }

  async destroy(uuid: string): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    await this.powerOff(uuid);
    await this.virsh('undefine', dashed(uuid), '--nvram');
    return { ...vm, state: 'Stopped' };
  }

  async prepareMigration(vm: AgentVm): Promise<void> {
    if (await this.get(vm.uuid)) throw new DriverError(409, `${vmName(vm.uuid)} already exists on this host`);
  }

  /**
   * The destination agent accepts the VM first (token check); then libvirt moves it. If
   * `virsh migrate` fails, libvirt leaves the domain running here.
   */
  async migrate(uuid: string, to: MigrationTarget): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state !== 'Running') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running VM migrates`);
    await to.deliver(vm);
    const host = new URL(to.url).hostname;
    const dest = (this.opts.migrateUri ?? 'qemu+tcp://{host}/system').replace('{host}', host);
    try {
      await this.virsh('migrate', '--live', '--persistent', '--undefinesource', dashed(uuid), dest);
    } catch (err) {
      throw new DriverError(502, `libvirt could not migrate ${vmName(uuid)} to ${dest}: ${(err as Error).message}`);
    }
    return vm;
  }

  /** libvirt itself moves the domain; the destination only acknowledges it. */
  async receive(vm: AgentVm): Promise<AgentVm> {
    return { ...vm, state: 'Running' };
  }

  async close(): Promise<void> {}
}
