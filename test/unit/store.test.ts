import { appendFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { tempDir } from '../helpers.ts';

const row = (uuid: string, extra: Record<string, unknown> = {}) => ({ uuid, name: uuid, ...extra });

// Transactions, finds and queries are the store contract, run on both stores:
// test/store/contract.ts. What is here is the embedded store's own: its journal and snapshot.
describe('embedded store', () => {
  it('replays the journal after a crash (no snapshot written)', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir);
    for (let i = 0; i < 50; i++) await s.transaction((tx) => tx.insert('vm', row(`v${i}`, { hostUuid: 'h', vmNics: [{ ip: `10.0.0.${i}` }] })));
    await s.transaction((tx) => tx.remove('vm', 'v7'));
    // No close(): as after kill -9 the snapshot was never written, only the journal.
    const again = await EmbeddedStore.open(dir);
    expect((await again.all('vm')).length).toBe(49);
    expect((await again.find('vm', { 'vmNics.ip': '10.0.0.8' } as never)).map((r) => r.uuid)).toEqual(['v8']);
    await again.close();
  });

  it('drops a torn last journal line and keeps appending cleanly', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir);
    await s.transaction((tx) => tx.insert('zone', row('a')));
    await appendFile(join(dir, 'journal.ndjson'), '{"s":2,"o":[["zone","b",{"uuid":"b"');
    const s2 = await EmbeddedStore.open(dir);
    expect((await s2.all('zone')).map((r) => r.uuid)).toEqual(['a']);
    await s2.transaction((tx) => tx.insert('zone', row('c')));
    const s3 = await EmbeddedStore.open(dir);
    expect((await s3.all('zone')).map((r) => r.uuid)).toEqual(['a', 'c']);
    await s3.close();
  });

  it('compacts into a snapshot and keeps every change, including ones pending during compaction', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { compactBytes: 2000 });
    await Promise.all(Array.from({ length: 200 }, (_, i) => s.transaction((tx) => tx.insert('zone', row(`z${i}`)))));
    await s.flush();
    const snap = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(snap.seq).toBeGreaterThan(0);
    // Compaction waits for the journal to reach the live data's size (~6 KB of zones here).
    expect(await s.journalSize()).toBeLessThan(8000);
    const again = await EmbeddedStore.open(dir);
    expect((await again.all('zone')).length).toBe(200);
    await again.close();
  });

  it('close() folds a large journal into a snapshot, and leaves a small one to replay', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { compactBytes: 10 });
    await s.transaction((tx) => tx.insert('zone', row('a')));
    await s.close();
    expect(await readFile(join(dir, 'journal.ndjson'), 'utf8')).toBe('');
    const snap = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(snap.tables.zone).toEqual([row('a')]);

    const dir2 = await tempDir();
    const s2 = await EmbeddedStore.open(dir2);
    await s2.transaction((tx) => tx.insert('zone', row('b')));
    await s2.close();
    expect(await readFile(join(dir2, 'journal.ndjson'), 'utf8')).not.toBe('');
    const again = await EmbeddedStore.open(dir2);
    expect((await again.all('zone')).map((r) => r.uuid)).toEqual(['b']);
    await again.close();
  });

  it('cuts a torn tail at the right byte when rows hold multi-byte text', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { sync: false });
    await s.transaction((tx) => tx.insert('zone', row('a', { description: 'zóna – 区域 🌍' })));
    await appendFile(join(dir, 'journal.ndjson'), '{"s":2,"o":[["zone","b",{"uuid":"b","description":"é');
    const s2 = await EmbeddedStore.open(dir, { sync: false });
    await s2.transaction((tx) => tx.insert('zone', row('c', { description: 'ünïcode' })));
    const s3 = await EmbeddedStore.open(dir, { sync: false });
    expect((await s3.all<any>('zone')).map((r) => [r.uuid, r.description])).toEqual([['a', 'zóna – 区域 🌍'], ['c', 'ünïcode']]);
    await s3.close();
  });
});

/** A journal of `n` one-change transactions as a controller writes them: host status flips. */
function journalOf(n: number, hosts = 500): string {
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const h = i % hosts;
    const host = { uuid: `h${h}`, name: `host-${h}`, managementIp: `10.0.${h >> 8}.${h & 255}`, clusterUuid: 'c1', zoneUuid: 'z1', state: 'Enabled', status: i % 3 ? 'Connected' : 'Disconnected', lastSeen: i };
    lines.push(JSON.stringify({ s: i, o: [['host', host.uuid, host]] }));
  }
  return lines.join('\n') + '\n';
}

describe('embedded store start-up and compaction', () => {
  it('opens a journal of 30,000 changes in well under 3 s (was quadratic: 17.5 s)', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'journal.ndjson'), journalOf(30_000));
    const t0 = performance.now();
    // Compaction off: this times the replay alone.
    const s = await EmbeddedStore.open(dir, { sync: false, compactBytes: Number.MAX_SAFE_INTEGER });
    const ms = performance.now() - t0;
    expect(await s.count('host', { status: 'Disconnected' })).toBe(167);
    expect(ms).toBeLessThan(3000);
    await s.close();
  }, 30_000);

  it('folds a journal that is large next to the snapshot at start, and keeps every row', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'journal.ndjson'), journalOf(2000, 50));
    const s = await EmbeddedStore.open(dir, { sync: false, compactBytes: 64 * 1024 });
    expect(await s.journalSize()).toBe(0);
    const snap = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect([snap.seq, snap.tables.host.length]).toEqual([2000, 50]);
    await s.transaction((tx) => tx.update<any>('host', 'h1', { status: 'Maintenance' }));
    const again = await EmbeddedStore.open(dir, { sync: false, compactBytes: 64 * 1024 });
    expect((await again.all('host')).length).toBe(50);
    expect(await again.find('host', { status: 'Maintenance' })).toHaveLength(1);
    await again.close();
  });

  it('compacts when the journal reaches the live data\'s size, not at a fixed size', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { sync: false, compactBytes: 1024 });
    // ~40 KB of live rows, folded into a snapshot.
    await s.transaction(async (tx) => {
      for (let i = 0; i < 400; i++) await tx.insert('vm', row(`v${i}`, { hostUuid: 'h1', pad: 'x'.repeat(64) }));
    });
    await s.snapshot();
    const live = (await stat(join(dir, 'store.json'))).size;
    const seqOf = async () => JSON.parse(await readFile(join(dir, 'store.json'), 'utf8')).seq;
    const first = await seqOf();
    expect(live).toBeGreaterThan(30_000);
    // Journal well past the 1 KB floor but below the live size: kept.
    for (let i = 0; i < 100; i++) await s.transaction((tx) => tx.update<any>('vm', `v${i}`, { hostUuid: 'h2' }));
    await s.flush();
    const kept = await s.journalSize();
    expect(kept).toBeGreaterThan(4 * 1024);
    expect(kept).toBeLessThan(live);
    expect(await seqOf()).toBe(first);
    // Past the live size: folded.
    for (let i = 0; i < 400; i++) await s.transaction((tx) => tx.update<any>('vm', `v${i}`, { hostUuid: 'h3' }));
    await s.flush();
    expect(await seqOf()).toBeGreaterThan(first);
    expect(await s.journalSize()).toBeLessThan(live);
    const again = await EmbeddedStore.open(dir, { sync: false });
    expect(await again.count('vm', { hostUuid: 'h3' })).toBe(400);
    await again.close();
    await s.close();
  });

  it('snapshot() while transactions commit loses none of them', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { sync: false });
    for (let i = 0; i < 50; i++) await s.transaction((tx) => tx.insert('zone', row(`a${i}`, { pad: 'x'.repeat(2000) })));
    const writes: Promise<unknown>[] = [];
    const snap = s.snapshot();
    // Commit while the snapshot is being written.
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setImmediate(r));
      writes.push(s.transaction((tx) => tx.insert('zone', row(`b${i}`))));
    }
    await Promise.all([snap, ...writes]);
    await s.flush();
    const again = await EmbeddedStore.open(dir, { sync: false });
    expect((await again.all('zone')).length).toBe(70);
    await again.close();
  });

  it.each([
    ['not JSON', '{"version":1,'],
    ['not a store', '{"hello":"world"}'],
  ])('refuses an unreadable store file (%s) with one clear message', async (_what, text) => {
    const dir = await tempDir();
    await writeFile(join(dir, 'store.json'), text);
    await expect(EmbeddedStore.open(dir)).rejects.toThrow(/store file .*store\.json/);
  });
});
