/**
 * Several controller processes on one PostgreSQL database and a simulated fleet registered
 * with one of them: what test/cluster/several-controllers.test.ts and bench/cluster.bench.ts
 * use. Each controller has its own data dir (so its member uuid survives a restart) and its
 * own ports; any of them answers the admin API.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentVm } from '../../protocol/agent.ts';
import { tempDir } from '../helpers.ts';
import { freePort, login, type Proc, ready, ROOT, spawnController } from '../integration/proc.ts';

export const PASSWORD = 'cluster-harness-password';

export interface Member {
  name: string;
  dataDir: string;
  port: number;
  agentPort: number;
  proc?: Proc;
  session: string;
}

export interface PingsView {
  controller: string;
  members: string[];
  holds: string[];
  pings: Record<string, { count: number; first: number; last: number }>;
}

export class ClusterHarness {
  readonly members: Member[] = [];
  private fleet: ChildProcess | undefined;
  private fleetOut = '';
  readonly hostIps = new Map<string, string>();

  constructor(readonly o: { databaseUrl: string; fleetDir: string; firstIp: string; migrateMs?: number; env?: Record<string, string> }) {}

  async add(name: string): Promise<Member> {
    const m: Member = { name, dataDir: await tempDir(), port: await freePort(), agentPort: await freePort(), session: '' };
    this.members.push(m);
    await this.start(m);
    return m;
  }

  url(m: Member): string {
    return `http://127.0.0.1:${m.port}`;
  }

  async start(m: Member): Promise<void> {
    m.proc = spawnController({
      HOSTKEEPER_PORT: String(m.port), HOSTKEEPER_AGENT_PORT: String(m.agentPort), HOSTKEEPER_DATA_DIR: m.dataDir,
      HOSTKEEPER_ADMIN_PASSWORD: PASSWORD, HOSTKEEPER_LOG_LEVEL: 'error', HOSTKEEPER_DATABASE_URL: this.o.databaseUrl, ...this.o.env,
    });
    await ready(m.proc, 30_000);
    m.session = await login(this.url(m), PASSWORD);
  }

  async kill9(m: Member): Promise<void> {
    if (!m.proc) return;
    m.proc.child.kill('SIGKILL');
    await m.proc.exited;
    m.proc = undefined;
  }

  live(): Member[] {
    return this.members.filter((m) => m.proc);
  }

  async api(m: Member, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const r = await fetch(`${this.url(m)}/zstack/v1${path}`, {
      method, headers: { authorization: `OAuth ${m.session}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30_000),
    });
    return { status: r.status, body: await r.json().catch(() => ({})) };
  }

  /** Polls a job on any live controller until it ends. */
  async job(location: string, timeoutMs = 120_000): Promise<{ status: number; body: any }> {
    const path = new URL(location).pathname.replace(/^\/zstack\/v1/, '');
    const end = Date.now() + timeoutMs;
    for (let i = 0; ; i++) {
      const live = this.live();
      const m = live[i % live.length]!;
      const r = await this.api(m, 'GET', path).catch(() => ({ status: 0, body: {} }));
      if (r.status !== 202 && r.status !== 0) return r;
      if (Date.now() > end) throw new Error(`job ${location} did not end within ${timeoutMs} ms`);
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }

  async ok(m: Member, method: string, path: string, body?: unknown): Promise<any> {
    const first = await this.api(m, method, path, body);
    const r = first.status === 202 ? await this.job(first.body.location) : first;
    if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async pings(m: Member): Promise<PingsView> {
    const r = await fetch(`${this.url(m)}/zstack/internal/pings`, { headers: { authorization: `OAuth ${m.session}` }, signal: AbortSignal.timeout(10_000) });
    if (r.status !== 200) throw new Error(`pings of ${m.name}: ${r.status}`);
    return (await r.json()) as PingsView;
  }

  /** Zone, cluster, token, and `count` simulated hosts registered with `via`. */
  async startFleet(via: Member, count: number): Promise<string[]> {
    const zone = await this.ok(via, 'POST', '/zones', { params: { name: 'z' } });
    const cluster = await this.ok(via, 'POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: 'c', hypervisorType: 'KVM' } });
    const tk = await this.api(via, 'POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: cluster.inventory.uuid, ttlSeconds: 3600 } });
    const inv = tk.body.inventory;
    const args = ['--import', 'tsx', 'agent/fleet.ts', '--count', String(count), '--controller', this.url(via), '--bootstrap-token', inv.token,
      '--state-dir', this.o.fleetDir, '--first-ip', this.o.firstIp, '--log-level', 'error', ...(inv.caCertHash ? ['--ca-cert-hash', inv.caCertHash] : [])];
    this.fleet = spawn(process.execPath, args, {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HK_SIM_INJECT: JSON.stringify([{ op: 'migrate', delayMs: this.o.migrateMs ?? 100 }]) },
    });
    const keep = (d: Buffer) => (this.fleetOut = (this.fleetOut + d.toString()).slice(-4000));
    this.fleet.stdout!.on('data', keep);
    this.fleet.stderr!.on('data', keep);
    for (const end = Date.now() + 120_000; ;) {
      const n = (await this.api(via, 'GET', '/hosts?q=status=Connected&count=true')).body.total ?? 0;
      if (n === count) {
        for (let start = 0; start < count; start += 1000) {
          const page = await this.api(via, 'GET', `/hosts?q=status=Connected&limit=1000&start=${start}&fields=uuid,managementIp`);
          for (const h of page.body.inventories) this.hostIps.set(h.uuid, h.managementIp);
        }
        return [...this.hostIps.keys()];
      }
      if (Date.now() > end) throw new Error(`fleet did not connect: ${this.fleetOut}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }

  /** Hosts Connected, as any live controller answers. */
  async connected(): Promise<number> {
    const m = this.live()[0]!;
    const r = await this.api(m, 'GET', '/hosts?q=status=Connected&count=true');
    return r.body.total ?? 0;
  }

  /**
   * Who holds what, from the live controllers themselves: every host held by exactly one
   * live controller. Returns what is wrong (empty: all good) and the share of each.
   */
  async ownership(): Promise<{ wrong: string[]; shares: Record<string, number> }> {
    const views = await Promise.all(this.live().map(async (m) => ({ m, v: await this.pings(m) })));
    const holder = new Map<string, string[]>();
    const shares: Record<string, number> = {};
    for (const { m, v } of views) {
      shares[m.name] = v.holds.length;
      for (const h of v.holds) holder.set(h, [...(holder.get(h) ?? []), m.name]);
    }
    const wrong: string[] = [];
    for (const h of this.hostIps.keys()) {
      const by = holder.get(h) ?? [];
      if (by.length !== 1) wrong.push(`host ${h}: held by ${by.length ? by.join(', ') : 'nobody'}`);
    }
    return { wrong, shares };
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

  async stop(): Promise<void> {
    for (const m of this.members) await this.kill9(m);
    this.fleet?.kill('SIGKILL');
  }
}

/**
 * Pings of one host by two controllers interleaved: for each host, the spans [first, last]
 * of the controllers that pinged it must not overlap (a host changes hands, it is not shared).
 */
export function doublePinged(views: PingsView[]): string[] {
  const spans = new Map<string, { c: string; first: number; last: number }[]>();
  for (const v of views) {
    for (const [h, p] of Object.entries(v.pings)) spans.set(h, [...(spans.get(h) ?? []), { c: v.controller, first: p.first, last: p.last }]);
  }
  const bad: string[] = [];
  for (const [h, list] of spans) {
    list.sort((a, b) => a.first - b.first);
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.first <= list[i - 1]!.last) bad.push(`host ${h}: pinged by ${list[i - 1]!.c} until ${list[i - 1]!.last} and by ${list[i]!.c} from ${list[i]!.first}`);
    }
  }
  return bad;
}

/** Polls `fn` every 200 ms until it gives something truthy; how long that took. Throws naming `what` after `ms`. */
export async function within<T>(ms: number, what: string, fn: () => Promise<T | undefined | false>): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return { value: v, ms: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
