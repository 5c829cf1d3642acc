/**
 * A console to look at: a real controller (HTTP, embedded store) and a simulated fleet of
 * agents in this process on 127.30.x.y, in two clusters, with a few VMs; and Debian's
 * chromium driven by playwright-core. Shared by the browser tests, `npm run screenshots` and
 * bench/console.bench.ts.
 */
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startFleet, type FleetAgent } from '../../agent/fleet-core.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { type RunningController, startController } from '../../controller/server.ts';

export const PASSWORD = 'console-test-password';
const GiB = 1024 ** 3;

export interface ConsoleFleet {
  c: RunningController;
  base: string;
  agents: FleetAgent[];
  clusters: string[];
  /** OAuth header for direct API calls. */
  auth: Record<string, string>;
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

async function waitFor(fn: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

/**
 * `hosts` agents split over two clusters; `vms` VMs spread by the allocator. Listens on
 * `ip` (127.30.0.1), agents from 127.30.1.1 upwards.
 */
export async function startConsoleFleet(opts: { hosts: number; vms?: number; ip?: string; firstAgentIp?: string } = { hosts: 50 }): Promise<ConsoleFleet> {
  const dir = await mkdtemp(join(tmpdir(), 'hk-console-'));
  const ip = opts.ip ?? '127.30.0.1';
  const c = await startController({
    dataDir: join(dir, 'data'), port: 0, host: ip, adminPassword: PASSWORD, sync: false, log: pino({ level: 'silent' }),
    vms: { settlePollMs: 50, graceStopMs: 300 },
  });
  const base = `http://${ip}:${c.port}`;
  const login = await fetch(`${base}/zstack/v1/accounts/login`, { method: 'PUT', body: JSON.stringify({ logInByAccount: { accountName: 'admin', password: PASSWORD } }) });
  const auth = { Authorization: `OAuth ${((await login.json()) as any).inventory.uuid}` };
  /** An API call, following a 202 to its job's end (the job location's host is the one we listen on). */
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${base}/zstack/v1${path}`, { method, headers: auth, body: body === undefined ? undefined : JSON.stringify(body) });
    let out = { status: r.status, body: (await r.json().catch(() => ({}))) as any };
    while (out.status === 202 && out.body.location) {
      await new Promise((ok) => setTimeout(ok, 20));
      const j = await fetch(out.body.location.replace(/^http:\/\/[^/]+/, base), { headers: auth });
      const b = (await j.json().catch(() => ({}))) as any;
      if (j.status !== 202) out = { status: j.status, body: b };
    }
    return out;
  };
  const zone = (await call('POST', '/zones', { params: { name: 'zone-a' } })).body.inventory.uuid;
  const clusters: string[] = [];
  for (const name of ['compute-a', 'compute-b']) {
    clusters.push((await call('POST', '/clusters', { params: { zoneUuid: zone, name, hypervisorType: 'KVM' } })).body.inventory.uuid);
  }
  // A cluster-level reservation, so the host page shows where reserved memory comes from.
  await call('POST', '/system-tags', { params: { resourceType: 'ClusterVO', resourceUuid: clusters[1], tag: 'host::reservedMemory::2G' } });
  const agents: FleetAgent[] = [];
  const firstAgent = opts.firstAgentIp ?? '127.30.1.1';
  const half = Math.ceil(opts.hosts / 2);
  const [a, b, c3] = firstAgent.split('.').map(Number);
  for (const [i, count] of [half, opts.hosts - half].entries()) {
    if (count === 0) continue;
    const tk = await call('POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: clusters[i], ttlSeconds: 3600 } });
    const fleet = await startFleet({
      inProcess: true, count, controllerUrl: base, token: tk.body.inventory.token, caCertHash: tk.body.inventory.caCertHash,
      stateDir: join(dir, `fleet-${i}`), firstIp: `${a}.${b}.${c3! + i}.1`, logLevel: 'silent',
    });
    agents.push(...fleet.agents);
  }
  await waitFor(async () => (await c.core.repo.all<HostRow>('host')).filter((h) => h.status === 'Connected').length === opts.hosts, 'every host Connected', 60_000);
  for (let i = 0; i < (opts.vms ?? 0); i++) {
    const r = await call('POST', '/vm-instances', { params: { name: `vm-${String(i + 1).padStart(3, '0')}`, memorySize: (1 + (i % 4)) * GiB, cpuNum: 1 + (i % 3), clusterUuid: clusters[i % 2], vmNics: [{ ip: `10.20.${Math.floor(i / 250)}.${(i % 250) + 1}` }] } });
    if (r.status !== 200) throw new Error(`creating a VM failed: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return {
    c, base, agents, clusters, auth, call,
    async close() {
      for (const ag of agents) ag.kill();
      await c.close();
    },
  };
}

/** Debian's chromium (test/provision/chromium.sh installs it). */
export const CHROMIUM = process.env.HOSTKEEPER_CHROMIUM ?? '/usr/bin/chromium';
export const haveChromium = () => existsSync(CHROMIUM);

export async function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'] });
}

/** A page logged in through the console's form. */
export async function loggedIn(browser: Browser, base: string, width = 1440, height = 900): Promise<Page> {
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(`${base}/`);
  await page.fill('input[name=password]', PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForSelector('nav.side');
  return page;
}
