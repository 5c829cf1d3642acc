/**
 * What every benchmark script needs: the repo root, env knobs, a plain sleep and log line,
 * and cleanup that runs however the script ends (normal exit, error, Ctrl-C, SIGTERM).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

export function intEnv(name: string, dflt: number, min = 0): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`${name}[${v}] must be a whole number >= ${min}`);
  return Number(v);
}

/** Real waiting: benchmarks measure real time. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Runs `cleanupSync` at exit; SIGINT/SIGTERM exit (130/143) so it runs then too. */
export function onExit(cleanupSync: () => void): void {
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(sig === 'SIGINT' ? 130 : 143));
}
