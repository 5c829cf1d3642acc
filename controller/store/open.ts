/**
 * Which store a controller opens: PostgreSQL when a database URL is given
 * (HOSTKEEPER_DATABASE_URL), else the embedded store in the data dir. The rest of the
 * controller sees only the Repository.
 */
import { EmbeddedStore, type StoreLog } from './embedded-store.ts';
import { PgStore, type PgStoreOptions } from './postgres/pg-store.ts';
import type { Repository } from './repository.ts';

export interface OpenStoreOptions {
  dataDir: string;
  /** postgres://... ; unset or empty: the embedded store. */
  databaseUrl?: string;
  /** Embedded store only: fdatasync every commit (tests turn it off). */
  sync?: boolean;
  log?: StoreLog;
  /** PostgreSQL only: pool size, timeouts, reconnect pacing (see PgStoreOptions). */
  postgres?: Omit<PgStoreOptions, 'log'>;
}

export async function openStore(o: OpenStoreOptions): Promise<Repository> {
  if (o.databaseUrl) {
    if (!/^postgres(ql)?:\/\//.test(o.databaseUrl)) {
      throw new Error('HOSTKEEPER_DATABASE_URL must be a postgres:// or postgresql:// URL');
    }
    return PgStore.open(o.databaseUrl, { ...o.postgres, log: o.log });
  }
  return EmbeddedStore.open(o.dataDir, { sync: o.sync ?? true, log: o.log });
}
