/**
 * The controller as a process: crash safety under kill -9, and the start/stop contract
 * (one clear line and a non-zero exit on bad settings, a clean SIGTERM).
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers.ts';
import { freePort, login, ready, spawnController } from './proc.ts';

const PW = 'crash-test-password';

/** Starts the controller on `dir`; returns it, a session header and the zone names it holds. */
async function startAndList(dir: string) {
  const port = await freePort();
  const p = spawnController({ HOSTKEEPER_DATA_DIR: dir, HOSTKEEPER_PORT: String(port), HOSTKEEPER_ADMIN_PASSWORD: PW });
  await ready(p);
  const auth = { Authorization: `OAuth ${await login(p.url, PW)}` };
  const zones = (await (await fetch(`${p.url}/zstack/v1/zones?fields=name`, { headers: auth })).json()) as { inventories: { name: string }[] };
  return { p, auth, have: new Set(zones.inventories.map((z) => z.name)) };
}

describe('kill -9 during a burst of writes', () => {
  it('loses no acknowledged change, over three crash rounds', async () => {
    const dir = await tempDir();
    const acked = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const { p, auth, have } = await startAndList(dir);
      // Everything acknowledged so far must be there.
      for (const name of acked) expect(have.has(name), `acknowledged zone ${name} lost`).toBe(true);

      let stop = false;
      const worker = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const name = `r${round}-w${w}-${i}`;
          try {
            const r = await fetch(`${p.url}/zstack/v1/zones`, { method: 'POST', headers: auth, body: JSON.stringify({ params: { name } }) });
            if (r.status === 202) acked.add(name);
          } catch {
            return; // the process is gone
          }
        }
      };
      const workers = Array.from({ length: 6 }, (_, w) => worker(w));
      const before = acked.size;
      while (acked.size < before + 150) await new Promise((r) => setTimeout(r, 5));
      p.child.kill('SIGKILL');
      stop = true;
      await p.exited;
      await Promise.all(workers);
    }
    const { p, have } = await startAndList(dir);
    const lost = [...acked].filter((n) => !have.has(n));
    expect(lost).toEqual([]);
    expect(acked.size).toBeGreaterThanOrEqual(450);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  }, 120_000);
});

describe('start and stop', () => {
  it('stops cleanly on SIGTERM and starts again from the snapshot', async () => {
    const dir = await tempDir();
    const port = await freePort();
    const env = { HOSTKEEPER_DATA_DIR: dir, HOSTKEEPER_PORT: String(port), HOSTKEEPER_ADMIN_PASSWORD: PW };
    const p = spawnController(env);
    await ready(p);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    const again = spawnController(env);
    await ready(again);
    await login(again.url, PW);
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  });

  it.each([
    ['a bad port', { HOSTKEEPER_PORT: 'eighty' }, /HOSTKEEPER_PORT\[eighty\]/],
    ['an unreadable store', { HOSTKEEPER_PORT: '0', corrupt: '1' }, /store file .*store\.json is unreadable/],
    ['a data dir that is a file', { HOSTKEEPER_PORT: '0', fileDir: '1' }, /data dir .*afile cannot be used/],
  ])('exits non-zero with one clear line on %s', async (_what, env, re) => {
    const dir = await tempDir();
    let dataDir = join(dir, 'data');
    if ((env as any).corrupt) {
      await mkdir(dataDir);
      await writeFile(join(dataDir, 'store.json'), '{"version":1,"seq":');
    }
    if ((env as any).fileDir) {
      dataDir = join(dir, 'afile');
      await writeFile(dataDir, 'x');
      await chmod(dataDir, 0o600);
    }
    const p = spawnController({ HOSTKEEPER_DATA_DIR: dataDir, HOSTKEEPER_ADMIN_PASSWORD: PW, HOSTKEEPER_PORT: env.HOSTKEEPER_PORT! });
    const code = await p.exited;
    expect(code).not.toBe(0);
    const lines = p.output().trim().split('\n').filter((l) => l.startsWith('hostkeeper:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
    expect(p.output()).not.toMatch(/\n\s+at /);
  });

  it('exits non-zero with one clear line when the port is in use', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '0.0.0.0', r));
    const port = (blocker.address() as { port: number }).port;
    const p = spawnController({ HOSTKEEPER_DATA_DIR: await tempDir(), HOSTKEEPER_PORT: String(port), HOSTKEEPER_ADMIN_PASSWORD: PW });
    expect(await p.exited).not.toBe(0);
    blocker.close();
    expect(p.output()).toMatch(new RegExp(`hostkeeper: port ${port} is already in use`));
  });
});
