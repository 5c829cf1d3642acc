/**
 * A real KVM host through `virsh` (execFile, never a shell), on a configurable connection
 * URI (default qemu:///system; tests use libvirt's test driver, test:///<node.xml>).
 *
 * How Hostkeeper VMs look in libvirt: domain name = the VM uuid (32 hex, as ZStack names its
 * domains), libvirt <uuid> = the same uuid with dashes, <title> = the VM name, and the NIC
 * IPs (which libvirt does not know) in a <metadata> element of our own namespace. Domains
 * defined by someone else are listed too: uuid from libvirt, name from <title> or the
 * domain name, IPs empty.
 *
 * VM changes are announced to watch() listeners after the driver's own operations, and the
 * ones libvirt makes on its own (a guest powering itself off, a QEMU that dies, an admin's
 * `virsh suspend`) from libvirt's event stream: one `virsh event --loop --event lifecycle`
 * child per driver, started with the first watcher, whose lines name the domain that changed;
 * that one domain is re-read (never a poll over every domain) and announced. The child is
 * started again (1 s, then doubling to 30 s) when it ends, e.g. across a libvirtd restart,
 * and every domain is then re-read once, since events may have been missed meanwhile.
 *
 * Live migration (migrate()): qemu+ssh to the destination's management IP (the host of the
 * destination agent's URL) with the cluster's migration key, through the ssh wrapper the
 * playbook installs (ansible/roles/kvm): never libvirt TCP, which has no authentication
 * unless SASL is set up. Why ssh rather than libvirt TLS: the hosts already run sshd, the
 * controller already manages SSH keys, and a per-cluster key restricted by a forced command
 * to libvirt's socket needs no certificate authority, no listening libvirtd port and no
 * libvirtd.conf change. Limit: QEMU's own migration stream goes directly from QEMU to QEMU
 * (the destination's migration_address, ports 49152-49215), authenticated only by libvirt
 * opening that port for this one migration; `--tunnelled` would carry it through ssh at the
 * cost of speed (settable with migrateFlags).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type AgentVm, type AgentVmState, DEFAULT_GRACE_TIMEOUT_MS } from '../../protocol/agent.ts';
import { type Backoff, BackoffSequence } from '../../protocol/backoff.ts';
import { type Clock, sleep, systemClock } from '../clock.ts';
import { CommandError, type CommandRunner } from '../exec.ts';
import { ensureDir } from '../fsutil.ts';
import { createLimiter } from '../limiter.ts';
import { gatherSystemFacts, kvmUsable, readBootId, realProbe, type SystemProbe, systemAvailableMemory } from '../facts.ts';
import { OutgoingMarkers } from '../outgoing.ts';
import {
  DriverError, type HostHardware, type HypervisorDriver, type MigrationTarget, notFound, plainVm, type StopOptions, type VmListener, VmListeners,
  vmName, type VmSpec,
} from './driver.ts';

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
  /**
   * Destination libvirt URI for `virsh migrate`; `{host}` is the destination agent's host
   * (its management IP). Default MIGRATE_URI: qemu+ssh through the playbook's wrapper.
   */
  migrateUri?: string;
  /** Extra `virsh migrate` flags (e.g. --tunnelled --p2p, or --bandwidth N in tests). */
  migrateFlags?: string[];
  /**
   * A live migration that has not completed after this long is aborted (`virsh domjobabort`)
   * and the guest keeps running here: a guest dirtying memory faster than the link copies it
   * never converges. Default 5 minutes (an idle 64 MiB guest takes ~0.3 s).
   */
  convergeTimeoutMs?: number;
  /** Listen to libvirt's lifecycle events (default: yes, except for the test driver's test:/// URIs). */
  events?: boolean;
  /** Test seam: how the event child is started (default: spawn virsh). */
  spawnEvents?: (file: string, args: string[]) => ChildProcess;
  /** Test seam: whether /dev/kvm is usable (decides the domain type when domainType is unset). */
  kvmUsable?: () => Promise<boolean>;
  /** How long a grace stop waits for the guest (ACPI) when the command gives no graceTimeoutMs. */
  stopTimeoutMs?: number;
  /** How long `virsh migrate` may run (a live migration of a large VM takes minutes). */
  migrateTimeoutMs?: number;
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

/**
 * The domain XML Hostkeeper defines for a VM (see the header comment for the mapping). No
 * disks (images are outside this project): the firmware tries to boot from the network
 * and, without a NIC, idles in SeaBIOS, a real QEMU that starts, stops and migrates. ACPI
 * lets a guest OS react to a grace stop; no <cpu> element, so QEMU's default model, which
 * every x86 host can run (what keeps migrations between unlike CPUs possible).
 */
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
    <boot dev='network'/>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
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
/** How often a grace stop polls `virsh domstate`. */
const STOP_POLL_MS = 1_000;
const DEFAULT_MIGRATE_TIMEOUT_MS = 60 * 60_000;
const DEFAULT_CONVERGE_TIMEOUT_MS = 5 * 60_000;
/** The playbook's ssh wrapper for migrations (ansible/roles/kvm/vars/main.yml hk_migration_ssh). */
export const MIGRATION_SSH = '/opt/hostkeeper/bin/hostkeeper-migration-ssh';
export const MIGRATE_URI = `qemu+ssh://root@{host}/system?command=${MIGRATION_SSH}&no_tty=1`;
/** How long the compatibility check may take (one ssh connect and two virsh calls). */
const COMPAT_TIMEOUT_MS = 30_000;
/** A `virsh event` child that ended is restarted after 1 s, doubling to 30 s while it keeps failing. */
const EVENTS_RESTART: Backoff = { initialMs: 1_000, maxMs: 30_000 };

/** `virsh version` -> the versions of libvirt and the hypervisor (QEMU). */
export function parseVirshVersion(out: string): { libvirt?: string; qemu?: string } {
  return {
    libvirt: /Using library: libvirt (\d+(?:\.\d+)*)/.exec(out)?.[1],
    qemu: /Running hypervisor: QEMU (\d+(?:\.\d+)*)/.exec(out)?.[1],
  };
}

/** A line of `virsh event --loop --event lifecycle`: the domain's name (ours: the uuid), else undefined. */
export function parseEventLine(line: string): string | undefined {
  return /^event 'lifecycle' for domain '?([^':]+)'?:/.exec(line.trim())?.[1];
}

const cmp = (a: string, b: string) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
};

/**
 * Whether a guest can move from `src` to `dst` (what each `virsh version`/`capabilities`
 * said), as a list of reasons it cannot, in an admin's words; empty when it can.
 * - QEMU: a running guest moves to the same or a newer QEMU only (an older one may not know
 *   its machine type or device state).
 * - Machine type: the destination's QEMU must offer the guest's (e.g. pc-i440fx-7.2).
 * - Acceleration: a KVM guest needs a destination where KVM is usable.
 * - CPU: a guest defined with host-passthrough needs the same host CPU model; Hostkeeper's
 *   own guests have no <cpu> (QEMU's default model) and pass. Limit: a custom <cpu> model is
 *   not compared here; libvirt refuses it at migration time with its own reason.
 */
export function migrationProblems(
  src: { qemu?: string; cpuModel?: string },
  dst: { qemu?: string; libvirt?: string; machines: readonly string[]; kvm: boolean; cpuModel?: string },
  guest: { machine?: string; type: string; hostPassthrough: boolean },
  dstName: string,
): string[] {
  const out: string[] = [];
  if (src.qemu && dst.qemu && cmp(dst.qemu, src.qemu) < 0) out.push(`${dstName} runs QEMU ${dst.qemu}, older than this host's QEMU ${src.qemu}: a running guest cannot move to an older QEMU`);
  if (guest.machine && !dst.machines.some((m) => m === guest.machine)) out.push(`${dstName}'s QEMU does not offer the guest's machine type ${guest.machine}`);
  if (guest.type === 'kvm' && !dst.kvm) out.push(`the guest runs with KVM acceleration and ${dstName} has no usable KVM (/dev/kvm)`);
  if (guest.hostPassthrough && src.cpuModel !== dst.cpuModel) out.push(`the guest uses the host's CPU model (host-passthrough, ${src.cpuModel ?? 'unknown'}) and ${dstName} has another CPU (${dst.cpuModel ?? 'unknown'})`);
  return out;
}

export class LibvirtDriver implements HypervisorDriver {
  readonly kind = 'libvirt' as const;
  readonly uri: string;
  private readonly run: CommandRunner;
  private readonly probe: SystemProbe;
  private readonly clock: Clock;
  private readonly listeners = new VmListeners();
  /** Loaded on first use; a marker left by a previous process has its domain paused then. */
  private markersP: Promise<OutgoingMarkers> | undefined;
  /** VMs this process is sending right now (listed Migrating). */
  private readonly inFlight = new Set<string>();
  private events?: { child: ChildProcess; stopped: boolean };
  private readonly eventsRestart = new BackoffSequence(EVENTS_RESTART);
  private eventsTimer?: { cancel(): void };
  private closed = false;
  /** Per domain: a re-read running, and whether another event came meanwhile. */
  private readonly rereads = new Map<string, { again: boolean }>();
  private domainTypeP?: Promise<string>;

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
    return this.virshWithin(undefined, ...cmd);
  }

  private async virshWithin(timeoutMs: number | undefined, ...cmd: string[]): Promise<string> {
    try {
      return (await this.run(this.opts.virsh ?? 'virsh', this.args(...cmd), timeoutMs ? { timeoutMs } : undefined)).stdout;
    } catch (err) {
      if (err instanceof CommandError && err.code === 'ENOENT') throw new DriverError(503, 'virsh is not installed on this host');
      throw err;
    }
  }

  private async uuids(filter: string): Promise<string[]> {
    const out = await this.virsh('list', filter, '--uuid');
    return out.split('\n').map((l) => l.trim()).filter(Boolean).map(undashed);
  }

  private markers(): Promise<OutgoingMarkers> {
    this.markersP ??= (async () => {
      const m = await OutgoingMarkers.open(this.opts.stateDir);
      // A previous process was sending these: never let them run here until the controller
      // resolves the migration (the destination may run them). Best effort: a domain that
      // cannot be suspended is reported as libvirt sees it, migratingTo set.
      for (const [uuid] of m.entries()) {
        const vm = await this.read(uuid).catch(() => undefined);
        if (vm?.state === 'Running') await this.virsh('suspend', dashed(uuid)).catch(() => {});
      }
      return m;
    })();
    this.markersP.catch(() => {
      this.markersP = undefined;
    });
    return this.markersP;
  }

  /** A domain as libvirt reports it, with migratingTo from an outgoing marker. */
  private overlay(vm: AgentVm, markers: OutgoingMarkers): AgentVm {
    const m = markers.get(vm.uuid);
    if (!m) return vm;
    return { ...vm, state: this.inFlight.has(vm.uuid) ? 'Migrating' : vm.state, migratingTo: m.to };
  }

  watch(listener: VmListener): () => void {
    const off = this.listeners.add(listener);
    if (this.opts.events ?? !this.uri.startsWith('test:')) this.startEvents(false);
    return off;
  }

  // ---- libvirt's event stream --------------------------------------------------------------

  /** One `virsh event --loop` child; `resync`: re-read every domain (events may have been missed). */
  private startEvents(resync: boolean): void {
    if (this.events || this.closed) return;
    const spawnIt = this.opts.spawnEvents ?? ((file, args) => spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } }));
    let child: ChildProcess;
    try {
      child = spawnIt(this.opts.virsh ?? 'virsh', this.args('event', '--loop', '--event', 'lifecycle'));
    } catch {
      this.restartEvents();
      return;
    }
    const ev = { child, stopped: false };
    this.events = ev;
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const name = parseEventLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (name) void this.onEvent(name);
      }
      // Once lines flow the connection works: the next failure starts from the short pause.
      this.eventsRestart.reset();
    });
    child.stderr?.resume();
    child.on('error', () => undefined); // ENOENT and the like: 'close' follows
    child.on('close', () => {
      if (this.events === ev) this.events = undefined;
      if (!ev.stopped) this.restartEvents();
    });
    if (resync) void this.resyncAll();
  }

  private restartEvents(): void {
    if (this.closed || this.eventsTimer) return;
    const ms = this.eventsRestart.next();
    const cancel = this.clock.setTimer(ms, () => {
      this.eventsTimer = undefined;
      this.startEvents(true);
    });
    this.eventsTimer = { cancel };
  }

  private async resyncAll(): Promise<void> {
    const all = await this.uuids('--all').catch(() => [] as string[]);
    for (const u of all) await this.onEvent(u);
  }

  /**
   * A lifecycle event for a domain (by name; ours are named by the uuid). Re-read once; an
   * event arriving during the re-read triggers one more. A VM this process is sending is
   * skipped: migrate() announces its outcome itself, and the controller ignores pushes for a
   * VM whose migration it is settling.
   */
  private async onEvent(name: string): Promise<void> {
    let uuid = /^[0-9a-f]{32}$/i.test(name) ? name.toLowerCase() : undefined;
    uuid ??= await this.virsh('domuuid', name).then((o) => undashed(o.trim()), () => undefined);
    if (!uuid || this.inFlight.has(uuid)) return;
    const r = this.rereads.get(uuid);
    if (r) {
      r.again = true;
      return;
    }
    const entry = { again: false };
    this.rereads.set(uuid, entry);
    try {
      do {
        entry.again = false;
        await this.notifyExternalChange(uuid).catch(() => undefined);
      } while (entry.again);
    } finally {
      this.rereads.delete(uuid);
    }
  }

  /** kvm when /dev/kvm is usable, else qemu (TCG); an explicit domainType wins. */
  private domainType(): Promise<string> {
    if (this.opts.domainType) return Promise.resolve(this.opts.domainType);
    this.domainTypeP ??= (this.opts.kvmUsable ?? kvmUsable)().then((k) => (k ? 'kvm' : 'qemu'));
    return this.domainTypeP;
  }

  /**
   * Re-reads a VM and tells the listeners. The seam for libvirt's own events: a lifecycle
   * event listener calls this for the domain that changed.
   */
  async notifyExternalChange(uuid: string): Promise<AgentVm | undefined> {
    const vm = await this.get(uuid);
    this.listeners.emit(uuid, vm ?? null);
    return vm;
  }

  /** After one of our operations: the VM now, announced. */
  private async changed(uuid: string): Promise<AgentVm> {
    const vm = await this.notifyExternalChange(uuid);
    if (!vm) throw notFound(uuid);
    return vm;
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
    const markers = await this.markers();
    // Four listings give every domain's state exactly (no parsing of the padded table,
    // whose names and states may both contain spaces).
    const [all, running, paused, shutoff] = await Promise.all([
      this.uuids('--all'), this.uuids('--state-running'), this.uuids('--state-paused'), this.uuids('--state-shutoff'),
    ]);
    const state = new Map<string, AgentVmState>();
    for (const u of running) state.set(u, 'Running');
    for (const u of paused) state.set(u, 'Paused');
    for (const u of shutoff) state.set(u, 'Stopped');
    const limit = createLimiter(LIST_CONCURRENCY);
    const out = await Promise.all(all.map((u) => limit.run(async (): Promise<AgentVm | undefined> => {
      try {
        const spec = parseDomainXml(await this.virsh('dumpxml', dashed(u)));
        return this.overlay({ ...spec, state: state.get(u) ?? 'Unknown' }, markers);
      } catch (err) {
        if (!isNoDomain(err)) throw err; // gone since the listing: skip it
        return undefined;
      }
    })));
    return out.filter((v): v is AgentVm => !!v);
  }

  /** libvirt's view of one domain, without markers. */
  private async read(uuid: string): Promise<AgentVm | undefined> {
    try {
      const [xml, st] = await Promise.all([this.virsh('dumpxml', dashed(uuid)), this.virsh('domstate', dashed(uuid))]);
      return { ...parseDomainXml(xml), state: mapDomainState(st) };
    } catch (err) {
      if (isNoDomain(err)) return undefined;
      throw err;
    }
  }

  async get(uuid: string): Promise<AgentVm | undefined> {
    const [markers, vm] = await Promise.all([this.markers(), this.read(uuid)]);
    return vm && this.overlay(vm, markers);
  }

  /** The VM, if no migration holds it (being sent, or awaiting its outcome). */
  private async mustGet(uuid: string): Promise<AgentVm> {
    const vm = await this.get(uuid);
    if (!vm) throw notFound(uuid);
    if (this.inFlight.has(uuid)) throw new DriverError(409, `${vmName(uuid)} is being migrated`);
    if (vm.migratingTo) throw new DriverError(409, `${vmName(uuid)} awaits the outcome of its migration to ${vm.migratingTo}: resolve it first (/vm/migrate/resolve)`);
    return vm;
  }

  // ---- write paths ----------------------------------------------------------------------

  async create(spec: VmSpec, start: boolean): Promise<AgentVm> {
    if (await this.get(spec.uuid)) throw new DriverError(409, `${vmName(spec.uuid)} already exists on this host`);
    const dir = join(this.opts.stateDir, 'tmp');
    await ensureDir(dir);
    const file = join(dir, `${spec.uuid}.${randomBytes(4).toString('hex')}.xml`);
    await writeFile(file, domainXml(spec, { network: this.opts.network, domainType: await this.domainType() }), { mode: 0o600 });
    try {
      await this.virsh('define', file);
    } finally {
      await unlink(file).catch(() => {});
    }
    if (start) await this.virsh('start', dashed(spec.uuid));
    return this.changed(spec.uuid);
  }

  async start(uuid: string): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state === 'Paused') await this.virsh('resume', dashed(uuid));
    else if (vm.state !== 'Running') await this.virsh('start', dashed(uuid));
    return this.changed(uuid);
  }

  /**
   * grace: `virsh shutdown` (ACPI), then `domstate` every second until the guest is off or
   * the timeout passes (409 GRACE_TIMEOUT: the caller goes cold if it wants). cold: `virsh
   * destroy` (power off).
   */
  async stop(uuid: string, opts: StopOptions = {}): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state === 'Stopped') return vm;
    if (opts.type === 'cold') {
      await this.powerOff(uuid);
      return this.changed(uuid);
    }
    if (vm.state === 'Paused') {
      throw new DriverError(409, `${vmName(uuid)} is Paused: its guest cannot react to an ACPI shutdown (grace stop); stop it with type cold`, 'GRACE_TIMEOUT');
    }
    try {
      await this.virsh('shutdown', dashed(uuid));
    } catch (err) {
      if (!isNotRunning(err)) throw err;
    }
    const timeoutMs = opts.graceTimeoutMs ?? this.opts.stopTimeoutMs ?? DEFAULT_GRACE_TIMEOUT_MS;
    const deadline = this.clock.now() + timeoutMs;
    for (;;) {
      const st = mapDomainState(await this.virsh('domstate', dashed(uuid)));
      if (st === 'Stopped') return this.changed(uuid);
      const left = deadline - this.clock.now();
      if (left <= 0) break;
      await sleep(this.clock, Math.min(STOP_POLL_MS, left));
    }
    throw new DriverError(409, `${vmName(uuid)} did not shut down within ${timeoutMs} ms of an ACPI shutdown (grace stop); stop it with type cold`, 'GRACE_TIMEOUT');
  }

  async reboot(uuid: string): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state !== 'Running') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running VM reboots`);
    await this.virsh('reboot', dashed(uuid));
    return this.changed(uuid);
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
    this.listeners.emit(uuid, null);
    return plainVm(vm, 'Stopped');
  }

  async prepareMigration(vm: AgentVm): Promise<void> {
    if (await this.get(vm.uuid)) throw new DriverError(409, `${vmName(vm.uuid)} already exists on this host`);
  }

  /**
   * Marker on disk, then the destination agent accepts (token check), then libvirt moves
   * the domain. The destination agent only acknowledges, so a failed (even an unknown)
   * delivery moved nothing: the VM stays here as it was. If `virsh migrate` fails, libvirt
   * leaves the domain here; if the domain is gone anyway, it moved.
   */
  async migrate(uuid: string, to: MigrationTarget): Promise<AgentVm> {
    const vm = await this.mustGet(uuid);
    if (vm.state !== 'Running' && vm.state !== 'Paused') throw new DriverError(409, `${vmName(uuid)} is ${vm.state}; only a Running or Paused VM migrates`);
    const markers = await this.markers();
    this.inFlight.add(uuid);
    try {
      await markers.set(uuid, { to: to.url, resume: vm.state });
    } catch (err) {
      this.inFlight.delete(uuid);
      throw err;
    }
    this.listeners.emit(uuid, { ...vm, state: 'Migrating', migratingTo: to.url });
    const done = async (moved: boolean) => {
      this.inFlight.delete(uuid);
      await markers.delete(uuid);
      this.listeners.emit(uuid, moved ? null : vm);
    };
    const host = new URL(to.url).hostname;
    const dest = (this.opts.migrateUri ?? MIGRATE_URI).replace('{host}', host);
    try {
      // Before the destination agent hears of it: nothing has moved if this refuses.
      await this.checkDestination(uuid, host, dest);
      await to.deliver(plainVm(vm));
    } catch (err) {
      await done(false);
      throw err instanceof DriverError ? new DriverError(err.status === 409 ? 409 : 502, err.message) : err;
    }
    const convergeMs = this.opts.convergeTimeoutMs ?? DEFAULT_CONVERGE_TIMEOUT_MS;
    let aborted = false;
    // Not converged in time: abort the job; libvirt then leaves the guest running here.
    const cancelAbort = this.clock.setTimer(convergeMs, () => {
      aborted = true;
      void this.virsh('domjobabort', dashed(uuid)).catch(() => undefined);
    });
    try {
      await this.virshWithin(this.opts.migrateTimeoutMs ?? DEFAULT_MIGRATE_TIMEOUT_MS,
        'migrate', '--live', '--persistent', '--undefinesource', ...(this.opts.migrateFlags ?? []), dashed(uuid), dest);
    } catch (err) {
      const still = await this.read(uuid).catch(() => vm);
      await done(!still);
      if (still) {
        if (aborted) throw new DriverError(502, `${vmName(uuid)} did not finish migrating to ${host} within ${Math.round(convergeMs / 1000)} s (its memory changes faster than it can be copied, or the link is slow): the migration was aborted and the VM keeps running on this host`);
        throw new DriverError(502, `libvirt refused to migrate ${vmName(uuid)} to ${host}: ${libvirtReason(err)}`);
      }
    } finally {
      cancelAbort();
    }
    if (this.inFlight.has(uuid)) await done(true);
    return plainVm(vm);
  }

  /**
   * Asks the destination's libvirtd, over the migration transport itself (so a missing or
   * refused key shows here, before anything moves), for its versions and capabilities, and
   * refuses (409) with every reason the guest could not run there.
   */
  private async checkDestination(uuid: string, host: string, dest: string): Promise<void> {
    // One virsh session, so one ssh connection (~0.5 s each here): `;` separates commands.
    // domcapabilities for kvm fails where KVM is not usable, so it goes last.
    let dst: string;
    try {
      dst = (await this.run(this.opts.virsh ?? 'virsh', ['-c', dest, 'version; capabilities; echo HK-KVM; domcapabilities --virttype kvm'], { timeoutMs: COMPAT_TIMEOUT_MS })
        .catch((err: unknown) => {
          // Only the last command failed (no KVM there): the answers before it count.
          if (err instanceof CommandError && err.stdout.includes('HK-KVM')) return { stdout: err.stdout };
          throw err;
        })).stdout;
    } catch (err) {
      throw new DriverError(502, `cannot reach libvirt on ${host} over the migration transport (qemu+ssh with the cluster's migration key): ${libvirtReason(err)}`);
    }
    const [dstVersion, dstCaps] = [dst, dst.slice(0, dst.indexOf('HK-KVM') >>> 0)];
    const dstKvm = /<domainCapabilities>/.test(dst.slice(dst.indexOf('HK-KVM')));
    const [srcVersion, srcCaps, xml] = await Promise.all([this.virsh('version'), this.virsh('capabilities'), this.virsh('dumpxml', dashed(uuid))]);
    const hostCpu = (caps: string) => /<host>[\s\S]*?<cpu>[\s\S]*?<model>([^<]+)<\/model>/.exec(caps)?.[1];
    const problems = migrationProblems(
      { qemu: parseVirshVersion(srcVersion).qemu, cpuModel: hostCpu(srcCaps) },
      { ...parseVirshVersion(dstVersion), machines: [...dstCaps.matchAll(/<machine\b[^>]*>([^<]+)<\/machine>/g)].map((m) => m[1]!), kvm: dstKvm, cpuModel: hostCpu(dstCaps) },
      {
        machine: /<type\b[^>]*\bmachine=['"]([^'"]+)['"]/.exec(xml)?.[1],
        type: /<domain\b[^>]*\btype=['"]([^'"]+)['"]/.exec(xml)?.[1] ?? 'kvm',
        hostPassthrough: /<cpu\b[^>]*mode=['"]host-passthrough['"]/.test(xml),
      },
      `host ${host}`,
    );
    if (problems.length) throw new DriverError(409, `${vmName(uuid)} cannot live-migrate to ${host}: ${problems.join('; ')}`);
  }

  async resolveMigration(uuid: string, completed: boolean): Promise<AgentVm | null> {
    const markers = await this.markers();
    if (this.inFlight.has(uuid)) throw new DriverError(409, `${vmName(uuid)} is being migrated right now: resolve it once that has ended`);
    const m = markers.get(uuid);
    const vm = await this.read(uuid);
    if (!vm) {
      await markers.delete(uuid);
      if (completed) return null;
      throw notFound(uuid);
    }
    if (!m) {
      if (!completed) return vm;
      throw new DriverError(409, `${vmName(uuid)} is not migrating away from this host: refusing to destroy it`);
    }
    if (completed) {
      await this.powerOff(uuid);
      try {
        await this.virsh('undefine', dashed(uuid), '--nvram');
      } catch (err) {
        if (!isNoDomain(err)) throw err;
      }
      await markers.delete(uuid);
      this.listeners.emit(uuid, null);
      return null;
    }
    if (m.resume === 'Running' && vm.state === 'Paused') await this.virsh('resume', dashed(uuid));
    await markers.delete(uuid);
    return this.changed(uuid);
  }

  /** libvirt itself moves the domain; the destination only acknowledges it. */
  async receive(vm: AgentVm): Promise<AgentVm> {
    return plainVm(vm, vm.state === 'Paused' ? 'Paused' : 'Running');
  }

  async close(): Promise<void> {
    this.closed = true;
    this.eventsTimer?.cancel();
    if (this.events) {
      this.events.stopped = true;
      this.events.child.kill();
      this.events = undefined;
    }
    if (this.markersP) await (await this.markersP.catch(() => undefined))?.flush();
  }
}

/** libvirt's own reason from a failed virsh call: its `error: ...` lines, without the prefix. */
function libvirtReason(err: unknown): string {
  if (err instanceof CommandError) {
    const lines = err.stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('error:')).map((l) => l.replace(/^error:\s*/, ''));
    if (lines.length) return lines.join(': ');
  }
  return (err as Error).message;
}
