/**
 * Store start-up against journal length: does opening grow linearly with the journal?
 *
 *   npx tsx bench/store-startup.bench.ts [changes ...]      (default: 50000 100000)
 *
 * For each size it builds, in a fresh temp dir, a journal of that many small transactions
 * and no snapshot, as a controller leaves it after kill -9s: 1,000 hosts added, then host
 * status flips (the bulk of real traffic), VMs created, moved, changed and destroyed, so
 * indexes are updated and cleaned up during replay. Then it times `EmbeddedStore.open`
 * with the controller's options (fsync on; the open includes any compaction it decides
 * to do at start) and, after a clean close, the open that follows. Each open runs in a new
 * process, as a restart does: in the building process the replay code is already compiled
 * hot and opens ~2x faster than a real start.
 *
 * Target: 100,000 changes open in < 2 s, and the 100,000 / 50,000 ratio is ~2 (linear).
 * Building the journal goes through the store itself (compaction disabled, no fsync), so
 * the lines are exactly what a controller writes. One run per size: each is a cold
 * process-level measurement, not a micro-benchmark; run it again to see the spread.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EmbeddedStore } from '../controller/store/embedded-store.ts';
import { log, onExit } from './common.ts';
import { fmtMs } from './stats.ts';

// Child mode: `--open DIR` opens the store once, closes it cleanly, prints {ms, rows}.
if (process.argv[2] === '--open') {
  const t0 = performance.now();
  const store = await EmbeddedStore.open(process.argv[3]!);
  const ms = performance.now() - t0;
  const rows = (await store.all('host')).length + (await store.all('vm')).length;
  await store.close();
  process.stdout.write(`${JSON.stringify({ ms, rows })}\n`);
  process.exit(0);
}

const sizes = process.argv.slice(2).map(Number);
if (sizes.some((n) => !Number.isInteger(n) || n < 2000)) throw new Error('usage: store-startup.bench.ts [changes >= 2000 ...]');
if (sizes.length === 0) sizes.push(50_000, 100_000);

const dirs: string[] = [];
onExit(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A small deterministic generator, so every run builds the same journal. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const HOSTS = 1000;
const builders: EmbeddedStore[] = [];

async function build(dir: string, changes: number): Promise<void> {
  // compactBytes this high never compacts: the journal keeps every line, no snapshot.
  const s = await EmbeddedStore.open(dir, { sync: false, compactBytes: Number.MAX_SAFE_INTEGER });
  const rand = rng(42);
  const vms: string[] = [];
  let vmSeq = 0;
  const pick = <T>(a: T[]): T => a[Math.floor(rand() * a.length)]!;
  const txs: Promise<unknown>[] = [];
  for (let i = 0; i < changes; i++) {
    const host = `h${Math.floor(rand() * HOSTS)}`;
    const r = rand();
    let tx: Promise<unknown>;
    if (i < HOSTS) {
      tx = s.transaction((t) => t.insert('host', {
        uuid: `h${i}`, name: `host${i}`, managementIp: `10.1.${i >> 8}.${i & 255}`, clusterUuid: `c${i % 10}`,
        zoneUuid: 'z1', state: 'Enabled', status: 'Connecting', lastSeen: i,
      }));
    } else if (r < 0.6) {
      const status = rand() < 0.5 ? 'Connected' : 'Disconnected';
      tx = s.transaction((t) => t.update<any>('host', host, { status, lastSeen: i }));
    } else if (r < 0.8 || vms.length === 0) {
      const uuid = `vm${vmSeq++}`;
      vms.push(uuid);
      tx = s.transaction((t) => t.insert('vm', {
        uuid, name: uuid, hostUuid: host, state: 'Running', memorySize: 1 << 30, cpuNum: 2,
        vmNics: [{ ip: `172.16.${(vmSeq >> 8) & 255}.${vmSeq & 255}`, mac: 'fa:16:3e:00:00:01' }],
      }));
    } else if (r < 0.9) {
      const uuid = pick(vms);
      tx = s.transaction((t) => t.update<any>('vm', uuid, { hostUuid: host, state: rand() < 0.5 ? 'Running' : 'Stopped' }));
    } else {
      const at = Math.floor(rand() * vms.length);
      const uuid = vms[at]!;
      vms[at] = vms[vms.length - 1]!;
      vms.pop();
      tx = s.transaction((t) => t.remove('vm', uuid));
    }
    txs.push(tx);
    // Bounded batches: group commit as under load, without 100,000 promises in flight.
    if (txs.length >= 1000) await Promise.all(txs.splice(0));
  }
  await Promise.all(txs);
  await s.flush();
  // Not closed, as after kill -9 (a clean close may fold the journal). Kept referenced so
  // its file handle is not closed by the garbage collector, with a warning, mid-run.
  builders.push(s);
}

/** Opens `dir` in a new process (same node flags, so the tsx loader too); see the header. */
function timeOpen(dir: string): { ms: number; rows: number } {
  const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--open', dir], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const results: { changes: number; journalMb: number; snapshotMb: number; open: number; reopen: number; rows: number }[] = [];
for (const changes of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'hk-store-bench-'));
  dirs.push(dir);
  await build(dir, changes);
  const journalMb = (await stat(join(dir, 'journal.ndjson'))).size / 1e6;
  const first = timeOpen(dir);
  const snapshotMb = (await stat(join(dir, 'store.json')).catch(() => ({ size: 0 }))).size / 1e6;
  const second = timeOpen(dir);
  results.push({ changes, journalMb, snapshotMb, open: first.ms, reopen: second.ms, rows: first.rows });
  rmSync(dir, { recursive: true, force: true });
}

log('changes   journal    rows   open (after kill -9)   snapshot then   open (after clean close)');
for (const r of results) {
  const mb = (n: number) => `${n.toFixed(1).padStart(5)} MB`;
  log(`${String(r.changes).padStart(7)}  ${mb(r.journalMb)}  ${String(r.rows).padStart(6)}   ${fmtMs(r.open).padStart(20)}   ${mb(r.snapshotMb).padStart(13)}   ${fmtMs(r.reopen).padStart(24)}`);
}
if (results.length >= 2) {
  const a = results[0]!;
  const b = results[results.length - 1]!;
  log(`ratio ${b.changes}/${a.changes} changes: open x${(b.open / a.open).toFixed(2)} for x${(b.changes / a.changes).toFixed(2)} the journal (linear ~ x${(b.changes / a.changes).toFixed(2)})`);
}
