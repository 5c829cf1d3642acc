/**
 * A database of its own for each test file: `hk_test_<unix seconds>_<random>`, created on
 * the server HOSTKEEPER_TEST_DATABASE_URL points at (test/provision/postgres.sh sets it) and
 * dropped after. Databases a killed run left behind are dropped once they are 6 hours old
 * (the name carries the time: PostgreSQL keeps no creation date).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const TEST_DATABASE_URL = process.env.HOSTKEEPER_TEST_DATABASE_URL ?? '';
export const NO_DATABASE = 'HOSTKEEPER_TEST_DATABASE_URL is unset (test/provision/postgres.sh sets it): PostgreSQL tests skipped';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function createTestDatabase(prefix = 'hk_test'): Promise<TestDatabase> {
  const now = Math.floor(Date.now() / 1000);
  const name = `${prefix}_${now}_${randomBytes(4).toString('hex')}`;
  await admin(async (c) => {
    const old = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname ~ '^hk_(test|bench)_[0-9]+_[0-9a-f]+$'`);
    for (const { datname } of old.rows) {
      if (Number(datname.split('_')[2]) < now - 6 * 3600) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`).catch(() => undefined);
    }
    await c.query(`CREATE DATABASE "${name}"`);
  });
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).then(() => undefined),
  };
}
