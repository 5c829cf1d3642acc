/**
 * Runs the real controller process (`node --import tsx controller/main.ts`) for tests.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

export interface Proc {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
}

export function spawnController(env: Record<string, string>): Proc {
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', 'controller/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, HOSTKEEPER_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, url: `http://127.0.0.1:${env.HOSTKEEPER_PORT}`, output: () => out, exited };
}

/** Waits until the controller answers HTTP (any status), or throws with its output. */
export async function ready(p: Proc, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (p.child.exitCode !== null) throw new Error(`controller exited ${p.child.exitCode}: ${p.output()}`);
    try {
      await fetch(`${p.url}/zstack/v1/zones`, { signal: AbortSignal.timeout(500) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`controller not ready: ${p.output()}`);
}

export async function login(url: string, password: string): Promise<string> {
  const r = await fetch(`${url}/zstack/v1/accounts/login`, {
    method: 'PUT', body: JSON.stringify({ logInByAccount: { accountName: 'admin', password } }),
  });
  if (r.status !== 200) throw new Error(`login ${r.status}`);
  return ((await r.json()) as { inventory: { uuid: string } }).inventory.uuid;
}
