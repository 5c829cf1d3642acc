/**
 * bin/hostkeeper.mjs as users start it: a separate node process, from a directory that is
 * not the repository, with argv, stdout/stderr and the exit code passed through.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeController, type FakeController } from './fake-controller.ts';

const BIN = fileURLToPath(new URL('../../bin/hostkeeper.mjs', import.meta.url));

let cwd: string;
let fake: FakeController;

beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), 'hk-bin-'));
  fake = await startFakeController({ 'GET /zstack/v1/zones': [{ status: 200, json: { inventories: [{ uuid: 'z', name: 'z1' }] } }] });
});
afterAll(async () => {
  await fake.close();
  await rm(cwd, { recursive: true, force: true });
});

function runBin(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, HOSTKEEPER_URL: fake.base, HOSTKEEPER_SESSION_FILE: join(cwd, 'session') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('bin/hostkeeper.mjs', () => {
  it('help works from another directory', async () => {
    const r = await runBin(['help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('  QueryHost [<field><op><value> ...]');
    expect(r.stderr).toBe('');
  }, 30_000);

  it('passes the exit code of a usage mistake', async () => {
    const r = await runBin(['Nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('Error: unknown action [Nope]; run: hostkeeper help\n');
  }, 30_000);

  it('talks to the controller and prints its answer', async () => {
    const r = await runBin(['QueryZone', 'name=z1']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ inventories: [{ uuid: 'z', name: 'z1' }] });
    expect(fake.requests.at(-1)!.url).toBe('/zstack/v1/zones?q=name%3Dz1');
  }, 30_000);
});
