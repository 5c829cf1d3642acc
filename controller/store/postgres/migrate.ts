/**
 * Schema migrations: plain numbered SQL files (migrations/NNN_name.sql), each applied once,
 * in order, in its own transaction, and recorded in `hk_migration`.
 *
 * Several controllers may start at once on an empty database: all of them take one
 * session-level advisory lock first, so one applies the files while the others wait and then
 * find nothing left to do. The lock is released when this returns (or its connection drops).
 *
 * A database already past the newest file this build knows is refused rather than used: an
 * older controller would write rows a newer schema may not expect.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';

const DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/** Any fixed 64-bit key; only Hostkeeper's start-up takes it. */
export const MIGRATION_LOCK = 7_420_113_201;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(dir = DIR): Promise<Migration[]> {
  const out: Migration[] = [];
  for (const f of (await readdir(dir)).sort()) {
    const m = /^(\d{3})_([a-z0-9_]+)\.sql$/.exec(f);
    if (!m) continue;
    out.push({ version: Number(m[1]), name: f, sql: await readFile(`${dir}${f}`, 'utf8') });
  }
  out.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${m.name}: expected number ${String(i + 1).padStart(3, '0')} (no gaps, no repeats)`);
  });
  return out;
}

/** Applies what is missing; returns the names applied (empty when the schema was current). */
export async function migrate(client: pg.ClientBase, migrations?: Migration[]): Promise<string[]> {
  const all = migrations ?? (await loadMigrations());
  const applied: string[] = [];
  await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
  try {
    await client.query(
      'CREATE TABLE IF NOT EXISTS hk_migration (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM hk_migration');
    const current = rows[0]?.v ?? 0;
    if (current > all.length) {
      throw new Error(`the database schema is at version ${current}, newer than this build's ${all.length}: run a newer Hostkeeper`);
    }
    for (const m of all.slice(current)) {
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO hk_migration (version, name) VALUES ($1, $2)', [m.version, m.name]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`);
      }
      applied.push(m.name);
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
  }
  return applied;
}
