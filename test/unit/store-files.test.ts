/**
 * The store's files hold sessions, host HMAC secrets and the admin password hash: the data
 * dir must be 0700 and every file the store writes 0600, whatever was there before.
 */
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EmbeddedStore, type StoreLog } from '../../controller/store/embedded-store.ts';
import { tempDir } from '../helpers.ts';

const modeOf = async (path: string) => ((await stat(path)).mode & 0o777).toString(8);

/** A StoreLog that keeps what it was told. */
function recordingLog(): StoreLog & { lines: { level: string; msg: string; fields: any }[] } {
  const lines: { level: string; msg: string; fields: any }[] = [];
  return {
    lines,
    info: (fields, msg) => lines.push({ level: 'info', msg, fields }),
    warn: (fields, msg) => lines.push({ level: 'warn', msg, fields }),
  };
}

describe('store files are private', () => {
  it('creates a new data dir 0700 and writes journal, snapshot and temp file 0600', async () => {
    const dir = join(await tempDir(), 'data', 'store');
    const s = await EmbeddedStore.open(dir, { sync: false, log: recordingLog() });
    await s.transaction((tx) => tx.insert('session', { uuid: 's1', accountUuid: 'a' }));
    await s.snapshot();
    await s.transaction((tx) => tx.insert('session', { uuid: 's2', accountUuid: 'a' }));
    await s.close();
    expect(await modeOf(dir)).toBe('700');
    expect(await modeOf(join(dir, 'journal.ndjson'))).toBe('600');
    // store.json is the renamed temp file: its mode is the one the temp file was created with.
    expect(await modeOf(join(dir, 'store.json'))).toBe('600');
  });

  it('tightens an existing 0755 dir and 0644 files at open, and says so', async () => {
    const dir = join(await tempDir(), 'data');
    await mkdir(dir);
    await writeFile(join(dir, 'store.json'), JSON.stringify({ version: 1, seq: 1, tables: { zone: [{ uuid: 'z' }] } }));
    await writeFile(join(dir, 'journal.ndjson'), '{"s":2,"o":[["zone","y",{"uuid":"y"}]]}\n');
    await chmod(dir, 0o755);
    await chmod(join(dir, 'store.json'), 0o644);
    await chmod(join(dir, 'journal.ndjson'), 0o644);
    const log = recordingLog();
    const s = await EmbeddedStore.open(dir, { sync: false, log });
    expect((await s.all('zone')).map((r) => r.uuid)).toEqual(['z', 'y']);
    expect(await modeOf(dir)).toBe('700');
    expect(await modeOf(join(dir, 'store.json'))).toBe('600');
    expect(await modeOf(join(dir, 'journal.ndjson'))).toBe('600');
    const tightened = log.lines.filter((l) => l.level === 'warn' && /tightened/.test(l.msg));
    expect(tightened.map((l) => [l.fields.path, l.fields.was, l.fields.now])).toEqual([
      [dir, '755', '700'],
      [join(dir, 'store.json'), '644', '600'],
      [join(dir, 'journal.ndjson'), '644', '600'],
    ]);
    await s.close();
  });

  it('a loose temp file left by a crash does not make the snapshot loose', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, '.store.json.tmp'), 'half a snapshot');
    await chmod(join(dir, '.store.json.tmp'), 0o644);
    const s = await EmbeddedStore.open(dir, { sync: false, log: recordingLog() });
    await s.transaction((tx) => tx.insert('zone', { uuid: 'z' }));
    await s.snapshot();
    await s.close();
    expect(await modeOf(join(dir, 'store.json'))).toBe('600');
    await expect(stat(join(dir, '.store.json.tmp'))).rejects.toThrow(/ENOENT/);
  });

  it('leaves an already private dir and files alone, logging nothing', async () => {
    const dir = await tempDir();
    const s = await EmbeddedStore.open(dir, { sync: false, log: recordingLog() });
    await s.transaction((tx) => tx.insert('zone', { uuid: 'z' }));
    await s.snapshot();
    await s.close();
    const log = recordingLog();
    const again = await EmbeddedStore.open(dir, { sync: false, log });
    expect(log.lines).toEqual([]);
    await again.close();
  });
});
