/**
 * `npx tsx bench/query-worst.bench.ts`: the most expensive queries the query language allows
 * (protocol/query.ts QUERY_LIMITS) on 10,000 hosts and 100,000 VMs, beside a trivial query as
 * the same-run baseline. Target: every worst case under 50 ms.
 *
 * The store is seeded by bench/seed.ts, then made hostile: every host name and VM name is 255
 * characters (`x...xy`, the shape that stalled the old backtracking LIKE for 14 s), and every
 * host description 2,048 (the API's limit). Queries are parsed and evaluated in-process
 * (parseQuery + the embedded store's query), which is where the event loop would be held;
 * HTTP and JSON formatting are bench/controller.bench.ts's business.
 *
 * Each worst case passes every row through every condition it can (a LIKE that matches at the
 * very end, or never), so nothing short-circuits. A query refused by the budget counts as its
 * refusal time: the point is how long the event loop is held.
 *
 * Environment: BENCH_HOSTS (10000), BENCH_VMS_PER_HOST (10), BENCH_SAMPLES (20),
 * BENCH_SEED (1), BENCH_TMP (parent of the temp dir, default os.tmpdir()).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { EmbeddedStore } from '../controller/store/embedded-store.ts';
import { HkError } from '../protocol/errors.ts';
import { parseQuery, QUERY_LIMITS } from '../protocol/query.ts';
import { type HostRow, RESOURCES, type VmRow } from '../protocol/resources.ts';
import { intEnv, log, onExit } from './common.ts';
import { seedStore } from './seed.ts';
import { fmtMs, summarize, table } from './stats.ts';

const HOSTS = intEnv('BENCH_HOSTS', 10_000);
const VMS_PER_HOST = intEnv('BENCH_VMS_PER_HOST', 10);
const SAMPLES = intEnv('BENCH_SAMPLES', 20, 1);
const SEED = intEnv('BENCH_SEED', 1);
const TARGET_MS = 50;

let dir: string | undefined = mkdtempSync(join(process.env.BENCH_TMP ?? os.tmpdir(), 'hk-query-worst-'));
onExit(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const L = QUERY_LIMITS;
const LONG_NAME = `${'x'.repeat(254)}y`;
const LONG_DESCRIPTION = `${'x'.repeat(2047)}y`;
const n = (k: number, f: (i: number) => string) => Array.from({ length: k }, (_, i) => f(i));

/** [label, query parameters] */
const QUERIES: [string, Record<string, unknown>][] = [
  ['baseline: state=Enabled limit=100', { q: 'state=Enabled', limit: '100' }],
  ['the 14 s stall: name~=%x%x%x%x%x%y', { q: 'name~=%x%x%x%x%x%y', count: 'true' }],
  [`${L.likeConditions} LIKEs with _ on 255-char names, all rows`, {
    q: ['name~=%x_y%', 'name!~=%x_z%', `name~=%${'x_'.repeat(15)}y%`, `name~=x%${'x'.repeat(30)}y%`], count: 'true',
  }],
  [`${L.likeConditions} LIKEs with _ on 2,048-char descriptions`, {
    q: ['description~=%x_y%', 'description!~=%x_z%', `description~=%${'x_'.repeat(15)}y%`, 'description~=x%x%y'], count: 'true',
  }],
  [`${L.nestedConditions} LIKEs on 255-char VM names (100,000 VMs) + 2 on host names`, {
    q: ['vmInstance.name~=%x_y%', 'vmInstance.name!~=%x_z%', 'name~=%x_y%', 'name~=x%x%y'], count: 'true',
  }],
  [`${L.nestedConditions} joins over all VMs + ${L.conditions - L.nestedConditions} row conditions, sorted`, {
    q: [
      'vmInstance.memorySize>0', 'vmInstance.vmNics.ip!=1.1.1.1',
      ...n(L.conditions - L.nestedConditions, (i) => (i % 2 ? `cpuNum>=${i - 100}` : `totalMemoryCapacity>${-i}`)),
    ],
    sort: '-name', replyWithCount: 'true', limit: String(L.limit),
  }],
  // A broad join is probed per host and stops at its first VM that matches; a narrow one is a
  // scan of the VM table (controller/store/memory-query.ts). Here the second join matches no
  // VM: every VM is read by one or the other.
  [`${L.nestedConditions} joins, the second matching no VM + ${L.conditions - L.nestedConditions} row conditions, sorted`, {
    q: [
      'vmInstance.memorySize>0', 'vmInstance.cpuNum>1000',
      ...n(L.conditions - L.nestedConditions, (i) => (i % 2 ? `cpuNum>=${i - 100}` : `totalMemoryCapacity>${-i}`)),
    ],
    sort: '-name', replyWithCount: 'true', limit: String(L.limit),
  }],
  [`?= and !?= lists of ${L.inValues}, sorted, limit ${L.limit}`, {
    q: [
      `state?=${n(L.inValues, (i) => ['Enabled', 'Disabled', 'Maintenance', 'PreMaintenance'][i % 4]!).join(',')}`,
      `name!?=${n(L.inValues, (i) => `host-${i}`).join(',')}`,
      `cpuNum!?=${n(L.inValues, (i) => String(1000 + i)).join(',')}`,
    ],
    sort: '+name', replyWithCount: 'true', limit: String(L.limit), start: '0',
  }],
];

async function main(): Promise<void> {
  log(`seeding ${HOSTS} hosts x ${VMS_PER_HOST} VMs (seed ${SEED}) ...`);
  const seeded = await seedStore(dir!, { hosts: HOSTS, vmsPerHost: VMS_PER_HOST, clusters: 10, seed: SEED });
  const store = await EmbeddedStore.open(dir!, { sync: false });
  const t0 = performance.now();
  const hosts = await store.all<HostRow>('host');
  const vms = await store.all<VmRow>('vm');
  for (let i = 0; i < hosts.length; i += 1000) {
    await store.transaction(async (tx) => {
      for (const h of hosts.slice(i, i + 1000)) await tx.update<HostRow>('host', h.uuid, { name: LONG_NAME, description: LONG_DESCRIPTION });
    });
  }
  for (let i = 0; i < vms.length; i += 5000) {
    await store.transaction(async (tx) => {
      for (const v of vms.slice(i, i + 5000)) await tx.update<VmRow>('vm', v.uuid, { name: LONG_NAME });
    });
  }
  log(`seeded in ${fmtMs(seeded.ms)}; names and descriptions lengthened in ${fmtMs(performance.now() - t0)}`);

  const rows: string[][] = [];
  let over = 0;
  for (const [label, params] of QUERIES) {
    const times: number[] = [];
    let outcome = '';
    for (let s = 0; s < SAMPLES + 2; s++) {
      const start = performance.now();
      try {
        const r = await store.query(RESOURCES.host, parseQuery(RESOURCES.host, params));
        outcome = `${r.rows.length} rows${r.total !== undefined ? `, total ${r.total}` : ''}`;
      } catch (e) {
        if (!(e instanceof HkError)) throw e;
        outcome = `refused: ${e.details.slice(0, 60)}...`;
      }
      // The first two runs warm the JIT and are not counted.
      if (s >= 2) times.push(performance.now() - start);
    }
    const sum = summarize(times);
    if (!label.startsWith('baseline') && sum.max >= TARGET_MS) over++;
    rows.push([label, fmtMs(sum.median), fmtMs(sum.p95), fmtMs(sum.max), outcome]);
  }
  log('');
  log(table(['query', 'p50', 'p95', 'max', 'outcome'], rows));
  log('');
  log(over === 0 ? `every worst case under ${TARGET_MS} ms` : `${over} worst case(s) at or over ${TARGET_MS} ms`);
  await store.close();
  process.exitCode = over === 0 ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
