/**
 * Copies an embedded store (a data dir) into PostgreSQL, for moving a controller onto a
 * database: `npm run store:copy -- --from ./data --to postgres://user:pw@host/db [--replace]`
 * (`--from` defaults to HOSTKEEPER_DATA_DIR or ./data, `--to` to HOSTKEEPER_DATABASE_URL).
 *
 * Stop the controller first: the embedded store has one writer, and a copy taken while it
 * writes may miss the last changes (or see a half-written journal line, which it would cut).
 * The copy opens the data dir without ever compacting it, so the data dir is left as it was
 * (apart from modes tightened to 0600/0700, which the controller would do too).
 *
 * Everything is copied in one transaction, in each kind's insertion order (the order unsorted
 * queries answer in), so a failed copy leaves the database as it was. A database that already
 * holds rows is refused unless `--replace` is given, which deletes them in that transaction.
 * The migrations are applied first, as a controller's start would; ANALYZE runs at the end so
 * the planner knows the new rows before the first query.
 */
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import type { Kind } from '../../protocol/resources.ts';
import { EmbeddedStore } from './embedded-store.ts';
import { migrate } from './postgres/migrate.ts';
import { redact } from './postgres/pg-store.ts';
import { kindLit } from './postgres/sql.ts';
import { KIND_NAMES } from './schema.ts';

export interface CopyOptions {
  /** Delete rows the database already holds (default: refuse to copy into a non-empty one). */
  replace?: boolean;
  /** Rows per INSERT (default 2000). */
  batch?: number;
  progress?: (kind: Kind, rows: number) => void;
}

export async function copyEmbeddedToPostgres(fromDir: string, url: string, o: CopyOptions = {}): Promise<Partial<Record<Kind, number>>> {
  const found = await Promise.all(['store.json', 'journal.ndjson'].map((f) => stat(join(fromDir, f)).then(() => true, () => false)));
  if (!found.some(Boolean)) throw new Error(`no embedded store in ${fromDir} (neither store.json nor journal.ndjson)`);
  const source = await EmbeddedStore.open(fromDir, { sync: false, compactBytes: Number.MAX_SAFE_INTEGER });
  const client = new pg.Client({ connectionString: url, application_name: 'hostkeeper-copy' });
  try {
    try {
      await client.connect();
    } catch (err) {
      throw new Error(`database ${redact(url)} cannot be reached: ${(err as Error).message}`);
    }
    await migrate(client);
    const counts: Partial<Record<Kind, number>> = {};
    await client.query('BEGIN');
    try {
      const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM hk_row');
      if (rows[0]!.n > 0) {
        if (!o.replace) throw new Error(`database ${redact(url)} already holds ${rows[0]!.n} rows: copy into an empty database, or pass --replace`);
        await client.query('DELETE FROM hk_row');
      }
      const batch = o.batch ?? 2000;
      for (const kind of KIND_NAMES) {
        const all = await source.all(kind);
        for (let i = 0; i < all.length; i += batch) {
          const part = all.slice(i, i + batch);
          // WITH ORDINALITY ... ORDER BY keeps the source order in `ord`.
          await client.query(
            `INSERT INTO hk_row (kind, uuid, data) SELECT ${kindLit(kind)}, u, d FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS t(u, d, n) ORDER BY n`,
            [part.map((r) => r.uuid), part.map((r) => JSON.stringify(r))],
          );
          o.progress?.(kind, Math.min(i + batch, all.length));
        }
        if (all.length > 0) counts[kind] = all.length;
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    await client.query('ANALYZE hk_row');
    return counts;
  } finally {
    await client.end().catch(() => undefined);
    await source.close();
  }
}

/** `--name value` flags; refuses anything else, naming it. */
function parseArgs(argv: string[]): { from: string; to: string; replace: boolean } {
  let from = process.env.HOSTKEEPER_DATA_DIR ?? './data';
  let to = process.env.HOSTKEEPER_DATABASE_URL ?? '';
  let replace = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--replace') replace = true;
    else if ((a === '--from' || a === '--to') && argv[i + 1] !== undefined) {
      if (a === '--from') from = argv[++i]!;
      else to = argv[++i]!;
    } else throw new Error(`unknown or incomplete argument[${a}]; usage: --from DATA_DIR --to postgres://... [--replace]`);
  }
  if (!/^postgres(ql)?:\/\//.test(to)) throw new Error('--to (or HOSTKEEPER_DATABASE_URL) must be a postgres:// URL');
  return { from: resolve(from), to, replace };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    const a = parseArgs(process.argv.slice(2));
    const t0 = performance.now();
    const counts = await copyEmbeddedToPostgres(a.from, a.to, { replace: a.replace });
    const total = Object.values(counts).reduce((x, y) => x + y, 0);
    process.stdout.write(
      `copied ${total} rows from ${a.from} to ${redact(a.to)} in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(', ')}\n`,
    );
  } catch (err) {
    process.stderr.write(`store:copy: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
