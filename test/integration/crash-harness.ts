/**
 * A controller process that can be killed (-9) and started again on the same data dir, a
 * simulated fleet in another process, and the truth about every VM read from the simulated
 * hosts' own files: what the resume test and the soak script (bench/maintenance-soak.ts) use.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentVm } from '../../protocol/agent.ts';
import { freePort, login, type Proc, ready, ROOT, spawnController } from './proc.ts';

export const MiB = 1024 ** 2;
const PASSWORD = 'crash-harness-password';

export interface HarnessOptions {
  dataDir: string;
  fleetDir: string;
  hosts: number;
  firstIp: string;
  /** Every simulated migration takes this long. */
  migrateMs: number;
}

export class CrashHarness {
  proc: Proc | undefined;
  private session = '';
  private fleet: ChildProcess | undefined;
  private port = 0;
  private agentPort = 0;
  readonly hostIps = new Map<string, string>();

  constructor(readonly o: HarnessOptions) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async startController(): Promise<void> {
    this.port ||= await freePort();
    this.agentPort ||= await freePort();
    this.proc = spawnController({
      HOSTKEEPER_PORT: String(this.port), HOSTKEEPER_AGENT_PORT: String(this.agentPort), HOSTKEEPER_DATA_DIR: this.o.dataDir,
      HOSTKEEPER_ADMIN_PASSWORD: PASSWORD, HOSTKEEPER_LOG_LEVEL: 'error',
    });
    await ready(this.proc, 30_000);
    this.session = await login(this.url, PASSWORD);
  }

  /** kill -9: no chance to flush or close anything. */
  async kill9(): Promise<void> {
    if (!this.proc) return;
    this.proc.child.kill('SIGKILL');
    await this.proc.exited;
    this.proc = undefined;
  }

  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const r = await fetch(`${this.url}/zstack/v1${path}`, {
      method, headers: { authorization: `OAuth ${this.session}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30_000),
    });
    return { status: r.status, body: await r.json().catch(() => ({})) };
  }

  /** Polls a job until it ends (across controller restarts, as a client would). */
  async job(location: string, timeoutMs = 120_000): Promise<{ status: number; body: any }> {
    const path = new URL(location).pathname.replace(/^\/zstack\/v1/, '');
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.api('GET', path).catch(() => ({ status: 0, body: {} }));
      if (r.status !== 202 && r.status !== 0) return r;
      if (Date.now() > end) throw new Error(`job ${location} did not end within ${timeoutMs} ms`);
      await new Promise((ok) => setTimeout(ok, 25));
    }
  }

  async ok(method: string, path: string, body?: unknown): Promise<any> {
    const first = await this.api(method, path, body);
    const r = first.status === 202 ? await this.job(first.body.location) : first;
    if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** Zone, cluster, token, and a fleet of simulated hosts registered into it. */
  async startFleet(): Promise<string[]> {
    const zone = await this.ok('POST', '/zones', { params: { name: 'z' } });
    const cluster = await this.ok('POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: 'c', hypervisorType: 'KVM' } });
    const tk = await this.api('POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.inventory.uuid, ttlSeconds: 3600 } });
    const inv = tk.body.inventory;
    const args = ['--import', 'tsx', 'agent/fleet.ts', '--count', String(this.o.hosts), '--controller', this.url, '--bootstrap-token', inv.token,
      '--state-dir', this.o.fleetDir, '--first-ip', this.o.firstIp, '--log-level', 'error', ...(inv.caCertHash ? ['--ca-cert-hash', inv.caCertHash] : [])];
    this.fleet = spawn(process.execPath, args, {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HK_SIM_INJECT: JSON.stringify([{ op: 'migrate', delayMs: this.o.migrateMs }]) },
    });
    let out = '';
    const keep = (d: Buffer) => (out = (out + d.toString()).slice(-4000));
    this.fleet.stdout!.on('data', keep);
    this.fleet.stderr!.on('data', keep);
    for (const end = Date.now() + 60_000; ;) {
      const r = await this.api('GET', '/hosts?q=status=Connected');
      if ((r.body.inventories ?? []).length === this.o.hosts) {
        for (const h of r.body.inventories) this.hostIps.set(h.uuid, h.managementIp);
        return [...this.hostIps.keys()].sort((a, b) => this.hostIps.get(a)!.localeCompare(this.hostIps.get(b)!, 'en', { numeric: true }));
      }
      if (Date.now() > end) throw new Error(`fleet did not connect: ${out}`);
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }

  async createVms(hostUuid: string, n: number, tag: string): Promise<void> {
    for (let i = 0; i < n; i += 16) {
      await Promise.all(Array.from({ length: Math.min(16, n - i) }, (_, k) =>
        this.ok('POST', '/vm-instances', { params: { name: `${tag}-${i + k}`, memorySize: 64 * MiB, cpuNum: 1, hostUuid } })));
    }
  }

  /** Every VM the simulated hosts hold that is not Stopped, by uuid: the hosts holding it. */
  async onHosts(): Promise<Map<string, { host: string; state: AgentVm['state'] }[]>> {
    const out = new Map<string, { host: string; state: AgentVm['state'] }[]>();
    for (const [uuid, ip] of this.hostIps) {
      const text = await readFile(join(this.o.fleetDir, ip, 'simulated-host.json'), 'utf8').catch(() => '{"vms":[]}');
      for (const v of (JSON.parse(text) as { vms: AgentVm[] }).vms) {
        if (v.state === 'Stopped') continue;
        out.set(v.uuid, [...(out.get(v.uuid) ?? []), { host: uuid, state: v.state }]);
      }
    }
    return out;
  }

  /**
   * Checks the one rule: every VM ends running on exactly one host, or stopped; the
   * controller agrees with the hosts. Returns what is wrong (empty: all good).
   */
  async audit(expected: number): Promise<{ lost: string[]; doubled: string[]; disagree: string[]; vms: number }> {
    const rows: any[] = (await this.api('GET', '/vm-instances?limit=10000')).body.inventories ?? [];
    const where = await this.onHosts();
    const lost: string[] = [];
    const doubled: string[] = [];
    const disagree: string[] = [];
    for (const [uuid, holders] of where) if (holders.length > 1) doubled.push(uuid);
    for (const r of rows) {
      const held = where.get(r.uuid) ?? [];
      if (r.state === 'Stopped' && held.length === 0) continue;
      if (held.length === 0) lost.push(r.uuid);
      else if (held.length === 1 && (held[0]!.host !== r.hostUuid || held[0]!.state !== r.state)) disagree.push(`${r.uuid}: controller ${r.state} on ${r.hostUuid}, host ${held[0]!.state} on ${held[0]!.host}`);
    }
    if (rows.length !== expected) lost.push(`${expected - rows.length} VM rows missing`);
    return { lost, doubled, disagree, vms: rows.length };
  }

  async stop(): Promise<void> {
    await this.kill9();
    this.fleet?.kill('SIGKILL');
  }
}
