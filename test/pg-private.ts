/**
 * A PostgreSQL server of a test's own, for tests that stop, kill or restart the database
 * (test/store/db-loss.test.ts): `initdb` into a temp dir, `postgres` on a free port of
 * 127.0.0.1 (never the shared server on 5432 that the other tests use), trust auth, its unix
 * socket in the data dir. The binaries are Debian's (/usr/lib/postgresql/<newest>/bin, as
 * test/provision/postgres.sh installs them), else `pg_config --bindir`, else PATH. As root
 * the server runs as the `postgres` user (initdb refuses root).
 *
 * The server is its own process group leader (postmaster and backends), so kill() reaches
 * every backend at once, as a machine losing power would, and start() can run again on the
 * same data dir (crash recovery from the WAL).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth). */
  url: string;
  port: number;
  dataDir: string;
  /** Fast shutdown (SIGINT): backends are told (57P01), the server exits; resolves once it has. */
  stop(): Promise<void>;
  /** SIGKILL to the postmaster and every backend; resolves once they are gone. */
  kill(): Promise<void>;
  /** Starts the server again on the same data dir and port; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops the server and removes the data dir. */
  close(): Promise<void>;
}

/** Where initdb and postgres are, or undefined when this machine has no PostgreSQL server. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(root, versions[0], 'bin');
  }
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (existsSync(join(dir, 'initdb'))) return dir;
  } catch {
    // no pg_config
  }
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  return undefined;
}

/** Why a private server cannot run here (for describe.skipIf), or undefined when it can. */
export function privatePostgresUnavailable(): string | undefined {
  if (!postgresBinDir()) return 'no PostgreSQL server binaries (initdb) on this machine: private-PostgreSQL tests skipped';
  if (process.getuid?.() === 0 && !userIds('postgres')) return 'running as root without a postgres user: private-PostgreSQL tests skipped';
  return undefined;
}

function userIds(name: string): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => p.once('exit', () => resolve()));
}

/** Whether any process of the group `pgid` is still alive. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function bounded(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`private PostgreSQL: timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function startPrivatePostgres(opts: { startTimeoutMs?: number } = {}): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('no PostgreSQL server binaries found (install Debian\'s postgresql package)');
  const root = process.getuid?.() === 0;
  const ids = root ? userIds('postgres') : undefined;
  if (root && !ids) throw new Error('running as root and there is no postgres user to run the server as');
  const base = await mkdtemp(join(tmpdir(), 'hk-pg-'));
  const dataDir = join(base, 'data');
  const logFile = join(base, 'postgres.log');
  if (ids) await chown(base, ids.uid, ids.gid);
  const as = ids ? { uid: ids.uid, gid: ids.gid } : {};
  // --no-sync: a throwaway cluster need not be fsynced at creation (the server itself still fsyncs).
  execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], {
    ...as, stdio: ['ignore', 'ignore', 'pipe'], cwd: base,
  });
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  let proc: ChildProcess | undefined;

  const accepting = async (): Promise<boolean> => {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await c.end().catch(() => undefined);
    }
  };

  const start = async (): Promise<void> => {
    if (proc && proc.exitCode === null && proc.signalCode === null) throw new Error('private PostgreSQL is already running');
    const out = openSync(logFile, 'a');
    try {
      proc = spawn(join(bin, 'postgres'), [
        '-D', dataDir, '-p', String(port), '-h', '127.0.0.1', '-k', dataDir,
        '-c', 'max_connections=50', '-c', 'shared_buffers=16MB', '-c', 'logging_collector=off',
      ], { ...as, cwd: base, detached: true, stdio: ['ignore', out, out] });
    } finally {
      closeSync(out);
    }
    const p = proc;
    let died = false;
    p.once('exit', () => (died = true));
    await bounded('the server to accept connections', startTimeoutMs, async () => {
      if (died) throw new Error(`private PostgreSQL exited at start (see ${logFile})`);
      return accepting();
    });
  };

  /** Signals the whole group and waits for the postmaster and every backend to be gone. */
  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const p = proc;
    if (!p?.pid) return;
    try {
      process.kill(sig === 'SIGKILL' ? -p.pid : p.pid, sig);
    } catch {
      // already gone
    }
    await exited(p);
    await bounded('the server\'s processes to exit', 10_000, () => !groupAlive(p.pid!));
  };

  await start();
  return {
    url, port, dataDir,
    stop: () => signal('SIGINT'),
    kill: () => signal('SIGKILL'),
    start,
    async close() {
      await signal('SIGINT');
      await rm(base, { recursive: true, force: true });
    },
  };
}
