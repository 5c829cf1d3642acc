/**
 * The console and /metrics at 10,000 hosts (issue 13's figures), printed:
 *   1. /metrics answer time (median, p95, max of 30 scrapes) and the CPU one scrape costs,
 *      as a share of a core when scraped every 5 s;
 *   2. the hosts page's first render in Chromium (navigation start -> first rows shown);
 *   3. a status change recorded by the controller -> the row shows it (10 changes);
 *   4. during 1,000 status changes a second, a click on a host -> its detail shown (5 clicks).
 * The store is seeded by bench/seed.ts; no agents: the controller is started without
 * connecting hosts and status changes are recorded as the tracker records them
 * (Hosts.applyStatusEvent in a transaction, events emitted after commit).
 *   npx tsx bench/console.bench.ts [hosts]
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { HostRow } from '../protocol/resources.ts';
import { startController } from '../controller/server.ts';
import { launch } from '../test/console/fixture.ts';
import { seedStore } from './seed.ts';

const N = Number(process.argv[2] ?? 10_000);
const IP = '127.30.0.5';
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const fmt = (xs: number[]) => `median ${q(xs, 0.5).toFixed(1)} ms, p95 ${q(xs, 0.95).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;

const dir = await mkdtemp(join(tmpdir(), 'hk-console-bench-'));
const seeded = await seedStore(dir, { hosts: N, vmsPerHost: 2, clusters: 10, seed: 13 });
console.log(`seeded ${N} hosts, ${seeded.vms} VMs in ${seeded.ms.toFixed(0)} ms`);
const c = await startController({ dataDir: dir, port: 0, host: IP, adminPassword: 'bench', sync: false, loadHosts: false, log: pino({ level: 'warn' }) });
const base = `http://${IP}:${c.port}`;
const login = await fetch(`${base}/zstack/v1/accounts/login`, { method: 'PUT', body: JSON.stringify({ logInByAccount: { accountName: 'admin', password: 'bench' } }) });
const auth = { Authorization: `OAuth ${((await login.json()) as { inventory: { uuid: string } }).inventory.uuid}` };

// ---- 1. /metrics -------------------------------------------------------------------------
{
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 3; i++) await (await fetch(`${base}/metrics`, { headers: auth })).text();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < 30; i++) {
    const t0 = performance.now();
    const r = await fetch(`${base}/metrics`, { headers: auth });
    bytes = (await r.text()).length;
    times.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const perScrapeMs = (cpu.user + cpu.system) / 1000 / 30;
  console.log(`/metrics at ${N} hosts: ${fmt(times)}; ${bytes} bytes`);
  console.log(`/metrics CPU per scrape (server and client, one process): ${perScrapeMs.toFixed(1)} ms -> every 5 s = ${(perScrapeMs / 5000 * 100).toFixed(2)}% of a core`);
}

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
try {
  await page.goto(`${base}/`);
  await page.fill('input[name=password]', 'bench');
  await page.click('button[type=submit]');
  await page.waitForSelector('nav.side');

  // ---- 2. first render ---------------------------------------------------------------------
  const renders: number[] = [];
  for (let i = 0; i < 3; i++) {
    await page.goto('about:blank');
    await page.goto(`${base}/#/hosts`);
    await page.waitForFunction('performance.getEntriesByName("hk:hosts-rows").length > 0');
    renders.push((await page.evaluate('performance.getEntriesByName("hk:hosts-rows")[0].startTime')) as number);
  }
  const total = await page.textContent('.head .sub');
  console.log(`hosts page first render (navigation -> rows, ${total}): ${fmt(renders)}`);

  // ---- 3. status change -> row -------------------------------------------------------------
  await page.waitForFunction('document.querySelector(".live.on")');
  const visible = await page.$$eval('#hosts-table tbody tr', (rows) => rows.map((r) => r.getAttribute('data-uuid')!));
  const lat: number[] = [];
  for (let i = 0; i < 10; i++) {
    const uuid = visible[i]!;
    const h = (await c.core.repo.get<HostRow>('host', uuid))!;
    const to = h.status === 'Connecting' ? 'Connected' : 'Connecting';
    // A string, not a function: tsx's helpers (__name) do not exist in the page.
    const seen = page.evaluate(`new Promise((ok) => {
      const obs = new MutationObserver(() => {
        const cell = document.querySelector('#hosts-table tr[data-uuid="${uuid}"] td.status [data-v]');
        if (cell && cell.getAttribute('data-v') === '${to}') { obs.disconnect(); ok(performance.timeOrigin + performance.now()); }
      });
      obs.observe(document.querySelector('#hosts-table tbody'), { subtree: true, childList: true, attributes: true, characterData: true });
    })`) as Promise<number>;
    await new Promise((ok) => setTimeout(ok, 50));
    await c.core.repo.transaction((tx) => c.core.hosts.applyStatusEvent(tx, uuid, to === 'Connected' ? 'connected' : 'connecting'));
    const committed = performance.timeOrigin + performance.now();
    lat.push((await seen) - committed);
  }
  console.log(`status change recorded -> row shows it: ${fmt(lat)}`);

  // ---- 4. click -> detail during 1,000 changes a second ------------------------------------
  const all = (await c.core.repo.all<HostRow>('host')).filter((h) => h.status !== 'Disconnected').map((h) => h.uuid);
  let changes = 0;
  let running = true;
  const churn = (async () => {
    // Paced to 1,000 a second by the clock: each round records what is due (at most 100, in
    // one transaction, as the tracker batches), so a slow round is caught up by the next.
    const start = performance.now();
    let i = 0;
    while (running) {
      const due = Math.min(100, Math.floor((performance.now() - start) * 1.0) - changes);
      if (due <= 0) {
        await new Promise((ok) => setTimeout(ok, 5));
        continue;
      }
      await c.core.repo.transaction(async (tx) => {
        for (let k = 0; k < due; k++, i++) {
          const u = all[(i * 7919) % all.length]!;
          const h = (await tx.get<HostRow>('host', u))!;
          await c.core.hosts.applyStatusEvent(tx, u, h.status === 'Connecting' ? 'connected' : 'connecting');
          changes++;
        }
      });
    }
  })();
  await page.goto(`${base}/#/hosts`);
  await page.waitForSelector('#hosts-table tbody tr');
  const c0 = changes;
  const t0 = performance.now();
  const clicks: number[] = [];
  const loaded: number[] = [];
  for (let i = 0; i < 8; i++) {
    await page.waitForSelector('#hosts-table tbody tr');
    const [shown, full] = (await page.evaluate(`new Promise((ok) => {
      const row = document.querySelectorAll('#hosts-table tbody tr')[${i * 3}];
      const start = performance.now();
      let first = 0;
      const obs = new MutationObserver(() => {
        if (!first && document.querySelector('#host-capacity')) first = performance.now() - start;
        if (first && document.querySelector('#reserved-source')) { obs.disconnect(); ok([first, performance.now() - start]); }
      });
      obs.observe(document.body, { subtree: true, childList: true });
      row.click();
    })`)) as [number, number];
    clicks.push(shown);
    loaded.push(full);
    await page.goBack();
  }
  const rate = ((changes - c0) / ((performance.now() - t0) / 1000)).toFixed(0);
  running = false;
  await churn;
  console.log(`click on a host -> detail shown (facts, state, capacity), during ${rate} status changes/s: ${fmt(clicks)}`);
  console.log(`click on a host -> detail complete (reserved memory source, tags, VMs, events): ${fmt(loaded)}`);
} finally {
  await browser.close();
  await c.close();
}
