/**
 * `npx tsx bench/postgres.bench.ts`: the PostgreSQL store side by side with the embedded
 * store, in one run, on the same rows.
 *
 * 1. Seeds an embedded store (bench/seed.ts: default 10,000 hosts, 100,000 VMs) and copies it
 *    into a new database `hk_bench_<time>_<random>` (controller/store/copy.ts, the
 *    `store:copy` command), dropped at the end.
 * 2. Store level: Repository.query (parse included) for `vmInstance.vmNics.ip=<ip>` and
 *    `state=Enabled status=Connected limit=100`, alternating stores round by round so that
 *    background load hits both alike; every answer is checked.
 * 3. API level: a controller core per store (openCore + createApp, in this process, listening
 *    on 127.40.0.1), the same two queries over HTTP, and changeHostState to its 202 (the job
 *    row and the change committed: fdatasync on the embedded store, COMMIT on PostgreSQL),
 *    then its job polled to 200. Client and server share this process's event loop, which
 *    adds nothing between requests (they are sequential) but is not the spawned process
 *    that bench/controller.bench.ts measures.
 *
 * Environment: BENCH_DATABASE_URL (default HOSTKEEPER_TEST_DATABASE_URL: a role that may
 * CREATE DATABASE), BENCH_HOSTS (10000), BENCH_VMS_PER_HOST (10), BENCH_SAMPLES (300),
 * BENCH_WARMUP (30), BENCH_SEED (1), BENCH_TMP (parent of the temp dirs).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { parseQuery } from '../protocol/query.ts';
import { RESOURCES } from '../protocol/resources.ts';
import { createApp } from '../controller/api/app.ts';
import { type Core, openCore } from '../controller/core.ts';
import { copyEmbeddedToPostgres } from '../controller/store/copy.ts';
import { EmbeddedStore } from '../controller/store/embedded-store.ts';
import { PgStore } from '../controller/store/postgres/pg-store.ts';
import type { Repository } from '../controller/store/repository.ts';
import { intEnv, log, onExit } from './common.ts';
import { Client } from './http.ts';
import { prng, seedStore, type Seeded } from './seed.ts';
import { fmtMs, summarize, type Summary, table } from './stats.ts';

const URL_BASE = process.env.BENCH_DATABASE_URL ?? process.env.HOSTKEEPER_TEST_DATABASE_URL ?? '';
const HOSTS = intEnv('BENCH_HOSTS', 10_000);
const VMS_PER_HOST = intEnv('BENCH_VMS_PER_HOST', 10);
const SAMPLES = intEnv('BENCH_SAMPLES', 300, 1);
const WARMUP = intEnv('BENCH_WARMUP', 30);
const SEED = intEnv('BENCH_SEED', 1);
const ADMIN_PASSWORD = 'bench-admin-password';
const LISTEN = '127.40.0.1';

if (!URL_BASE) {
  process.stderr.write('bench/postgres.bench.ts: set BENCH_DATABASE_URL (or HOSTKEEPER_TEST_DATABASE_URL) to a postgres:// URL whose role may CREATE DATABASE\n');
  process.exit(2);
}

// ---- cleanup ------------------------------------------------------------------------------

const tmp = mkdtempSync(join(process.env.BENCH_TMP ?? os.tmpdir(), 'hk-pgbench-'));
const dbName = `hk_bench_${Math.floor(Date.now() / 1000)}_${randomBytes(4).toString('hex')}`;
let dbMade = false;
onExit(() => rmSync(tmp, { recursive: true, force: true }));

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: URL_BASE });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

// ---- measurements -------------------------------------------------------------------------

type Probe = () => Promise<number>;

/** Runs each probe WARMUP then SAMPLES times, round by round (a, b, c, a, b, c, ...). */
async function rounds(probes: Record<string, Probe>): Promise<Record<string, Summary>> {
  const names = Object.keys(probes);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    for (const n of names) {
      const ms = await probes[n]!();
      if (i >= WARMUP) samples[n]!.push(ms);
    }
  }
  return Object.fromEntries(names.map((n) => [n, summarize(samples[n]!)]));
}

function storeProbes(name: string, store: Repository, seeded: Seeded, rnd: () => number): Record<string, Probe> {
  const pickIdx = () => Math.floor(rnd() * seeded.placedIps.length);
  const pickHost = () => seeded.hosts[Math.floor(rnd() * seeded.hosts.length)]!.uuid;
  return {
    // The floor under every figure: one row by primary key (PostgreSQL: one round trip).
    [`${name} get`]: async () => {
      const t0 = performance.now();
      const r = await store.get('host', pickHost());
      const ms = performance.now() - t0;
      if (!r) throw new Error(`${name}: host not found`);
      return ms;
    },
    // One durable change: the embedded store's fdatasync, PostgreSQL's BEGIN..COMMIT.
    [`${name} tx`]: async () => {
      const uuid = pickHost();
      const t0 = performance.now();
      await store.transaction(async (tx) => {
        const h = await tx.get<{ uuid: string; lastOpDate: number }>('host', uuid);
        await tx.update('host', uuid, { lastOpDate: h!.lastOpDate + 1 } as never);
      });
      return performance.now() - t0;
    },
    [`${name} nic`]: async () => {
      const i = pickIdx();
      const t0 = performance.now();
      const r = await store.query(RESOURCES.host, parseQuery(RESOURCES.host, { q: `vmInstance.vmNics.ip=${seeded.placedIps[i]}` }));
      const ms = performance.now() - t0;
      if (r.rows.length !== 1 || r.rows[0]!.uuid !== seeded.placedIpHosts[i]) throw new Error(`${name}: wrong answer for ${seeded.placedIps[i]}`);
      return ms;
    },
    [`${name} state`]: async () => {
      const t0 = performance.now();
      const r = await store.query<{ uuid: string; state: string; status: string }>(
        RESOURCES.host, parseQuery(RESOURCES.host, { q: ['state=Enabled', 'status=Connected'], limit: '100' }),
      );
      const ms = performance.now() - t0;
      if (r.rows.length !== 100 || r.rows.some((h) => h.state !== 'Enabled' || h.status !== 'Connected')) throw new Error(`${name}: wrong page`);
      return ms;
    },
  };
}

interface Api {
  core: Core;
  server: Server;
  client: Client;
}

async function startApi(name: string, dataDir: string, databaseUrl?: string): Promise<Api> {
  const core = await openCore({ dataDir, databaseUrl, adminPassword: ADMIN_PASSWORD, log: pino({ level: 'warn' }), announce: () => undefined });
  const app = createApp(core);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(0, LISTEN, () => resolve(s));
    s.once('error', reject);
  });
  const port = (server.address() as { port: number }).port;
  const client = new Client(port, LISTEN);
  const a = await client.request('PUT', '/zstack/v1/accounts/login', { logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } }, { auth: false });
  if (a.status !== 200) throw new Error(`${name}: login answered ${a.status}: ${a.body}`);
  client.session = JSON.parse(a.body).inventory.uuid;
  return { core, server, client };
}

function apiProbes(name: string, api: Api, seeded: Seeded, rnd: () => number): Record<string, Probe> {
  const http = api.client;
  // Each store's own copy of the hosts' admin states, flipped as its changes succeed.
  const switchable = seeded.hosts.filter((h) => h.state === 'Enabled' || h.state === 'Disabled').map((h) => ({ ...h }));
  const fail = (what: string, a: { status: number; body: string }) => {
    throw new Error(`${name} ${what}: unexpected answer ${a.status}: ${a.body.slice(0, 300)}`);
  };
  return {
    [`${name} baseline`]: async () => {
      const a = await http.request('GET', '/zstack/v1/api-jobs/0123456789abcdef0123456789abcdef');
      if (a.status !== 404) fail('GET unknown job', a);
      return a.ms;
    },
    [`${name} nic`]: async () => {
      const i = Math.floor(rnd() * seeded.placedIps.length);
      const a = await http.request('GET', `/zstack/v1/hosts?q=${encodeURIComponent(`vmInstance.vmNics.ip=${seeded.placedIps[i]}`)}`);
      const inv = a.status === 200 ? JSON.parse(a.body).inventories : undefined;
      if (!inv || inv.length !== 1 || inv[0].uuid !== seeded.placedIpHosts[i]) fail('QueryHost by NIC', a);
      return a.ms;
    },
    [`${name} state`]: async () => {
      const a = await http.request('GET', '/zstack/v1/hosts?q=state=Enabled&q=status=Connected&limit=100');
      const inv = a.status === 200 ? JSON.parse(a.body).inventories : undefined;
      if (!inv || inv.length !== 100) fail('QueryHost state=Enabled status=Connected limit=100', a);
      return a.ms;
    },
    [`${name} change`]: async () => {
      const h = switchable[Math.floor(rnd() * switchable.length)]!;
      const event = h.state === 'Enabled' ? 'disable' : 'enable';
      const a = await http.request('PUT', `/zstack/v1/hosts/${h.uuid}/actions`, { changeHostState: { stateEvent: event } });
      if (a.status !== 202) fail(`changeHostState ${event}`, a);
      const path = new URL(JSON.parse(a.body).location as string).pathname;
      const want = event === 'disable' ? 'Disabled' : 'Enabled';
      for (let i = 0; ; i++) {
        const j = await http.request('GET', path);
        if (j.status === 200 && JSON.parse(j.body).inventory?.state === want) break;
        if (j.status !== 202 || i > 1000) fail(`job of changeHostState ${event}`, j);
        await new Promise((r) => setImmediate(r));
      }
      h.state = want;
      return a.ms;
    },
  };
}

// ---- the run ----------------------------------------------------------------------------

const loadAtStart = os.loadavg().map((x) => x.toFixed(1)).join(' ');

async function main(): Promise<void> {
  const embeddedDir = join(tmp, 'embedded');
  log(`seeding ${HOSTS} hosts, ${HOSTS * VMS_PER_HOST} VMs (seed ${SEED}) ...`);
  const seeded = await seedStore(embeddedDir, { hosts: HOSTS, vmsPerHost: VMS_PER_HOST, clusters: Math.max(1, Math.ceil(HOSTS / 500)), seed: SEED });
  log(`seeded the embedded store in ${fmtMs(seeded.ms)}`);
  await admin(`CREATE DATABASE "${dbName}"`);
  dbMade = true;
  const url = new URL(URL_BASE);
  url.pathname = `/${dbName}`;
  const t0 = performance.now();
  const counts = await copyEmbeddedToPostgres(embeddedDir, url.toString());
  log(`store:copy into ${dbName}: ${Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(', ')} in ${fmtMs(performance.now() - t0)}`);

  // Store level.
  const emb = await EmbeddedStore.open(embeddedDir, { sync: false });
  const pgs = await PgStore.open(url.toString());
  const rnd = prng(SEED + 1);
  const store = await rounds({ ...storeProbes('embedded', emb, seeded, rnd), ...storeProbes('postgres', pgs, seeded, rnd) });
  await emb.close();
  await pgs.close();

  // API level: the embedded core on a copy-free data dir of its own; the PostgreSQL core's
  // data dir holds only its SSH key and the like.
  const apiEmb = await startApi('embedded', embeddedDir);
  const apiPg = await startApi('postgres', join(tmp, 'pg-data'), url.toString());
  const api = await rounds({ ...apiProbes('embedded', apiEmb, seeded, rnd), ...apiProbes('postgres', apiPg, seeded, rnd) });
  for (const a of [apiEmb, apiPg]) {
    a.client.close();
    await new Promise((r) => a.server.close(r));
    await a.core.close();
  }

  const row = (what: string, s: Record<string, Summary>, key: string, target: number): string[] => {
    const e = s[`embedded ${key}`]!;
    const p = s[`postgres ${key}`]!;
    return [what, fmtMs(e.median), fmtMs(e.p95), fmtMs(p.median), fmtMs(p.p95), `< ${target} ms`, p.median < target ? 'yes' : 'NO'];
  };
  log('');
  log(`${HOSTS} hosts, ${seeded.vms} VMs, ${seeded.nics} NICs; ${SAMPLES} samples each after ${WARMUP} warm-up, medians and p95;`);
  log(`${os.cpus().length} cores, load average ${loadAtStart} at the start, ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the end (other work on the machine slows both stores)`);
  log(table(
    ['measurement', 'embedded median', 'p95', 'postgres median', 'p95', 'target (pg)', 'met'],
    [
      row('store: get one host (floor: one round trip)', store, 'get', 5),
      row('store: transaction get + update one host', store, 'tx', 10),
      row('store: query vmInstance.vmNics.ip=', store, 'nic', 5),
      row('store: query state=Enabled status=Connected limit=100', store, 'state', 5),
      row('HTTP: GET unknown job -> 404 (floor: session + one get)', api, 'baseline', 5),
      row('HTTP: QueryHost vmInstance.vmNics.ip=', api, 'nic', 5),
      row('HTTP: QueryHost state=Enabled status=Connected limit=100', api, 'state', 5),
      row('HTTP: changeHostState -> 202 (committed)', api, 'change', 10),
    ],
  ));
}

try {
  await main();
} finally {
  if (dbMade) await admin(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`).catch((e: unknown) => log(`could not drop ${dbName}: ${(e as Error).message}`));
}
