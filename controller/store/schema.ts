/**
 * The store's schema, read by both stores: which kinds exist, which fields are indexed for
 * equality, which are unique, and how the query language's nested resources join. The
 * embedded store builds its in-memory indexes from it; the PostgreSQL store's migrations
 * (postgres/migrations/*.sql) create the matching indexes and constraints, and
 * test/store/postgres.test.ts checks that the database holds one index per entry here, so
 * the two cannot drift apart silently.
 *
 * A new Kind needs a line in KINDS (the Record makes the typecheck say so): the copy
 * command walks KINDS, and a kind missing here would be left behind.
 */
import type { Kind } from '../../protocol/resources.ts';

export interface IndexSpec {
  /** Set for a field inside a list of the row: `vmNics.ip` indexes every NIC's ip. */
  list?: { name: string; key: string };
  /**
   * No two rows of the kind may hold the same value (null and absent excepted, as SQL's
   * UNIQUE). PostgreSQL: a UNIQUE index; embedded store: checked at insert and update.
   */
  unique?: boolean;
}

export interface KindSpec {
  /**
   * Resources share one uuid space, as in ZStack (tags and joins find a resource by uuid
   * alone): a uuid used by one of these kinds may not be used by another.
   */
  resource?: boolean;
  indexes?: Record<string, IndexSpec>;
}

export const KINDS: Record<Kind, KindSpec> = {
  zone: { resource: true },
  cluster: { resource: true, indexes: { zoneUuid: {} } },
  host: {
    resource: true,
    indexes: { managementIp: { unique: true }, clusterUuid: {}, zoneUuid: {}, state: {}, status: {} },
  },
  vm: { resource: true, indexes: { hostUuid: {}, 'vmNics.ip': { list: { name: 'vmNics', key: 'ip' } } } },
  tag: { resource: true, indexes: { resourceUuid: {} } },
  config: {},
  account: {},
  session: {},
  job: {},
  bootstrapToken: {},
  migration: {},
  flow: {},
  maintenanceWindow: {},
  event: {},
  pki: {},
  controller: {},
  hostLease: { indexes: { owner: {} } },
};

export const KIND_NAMES = Object.keys(KINDS) as Kind[];
export const RESOURCE_KINDS = KIND_NAMES.filter((k) => KINDS[k].resource);

/** Index keys of a row for one indexed field: one per list element for list fields. */
export function indexKeys(field: string, spec: IndexSpec): (row: any) => unknown[] {
  const list = spec.list;
  if (list) return (r) => ((r[list.name] ?? []) as Record<string, unknown>[]).map((el) => el[list.key]);
  return (r) => [r[field]];
}

/** The unique fields of a kind (top-level fields only: a unique list field has no use yet). */
export function uniqueFields(kind: Kind): string[] {
  return Object.entries(KINDS[kind].indexes ?? {}).filter(([, s]) => s.unique && !s.list).map(([f]) => f);
}

/**
 * How a nested query prefix joins the queried resource (hosts): `parentKey` of the host
 * equals `childKey` of the joined row, as SQL's `host.zoneUuid IN (SELECT uuid FROM zone ...)`.
 */
export const JOINS: Record<string, { parentKey: string; childKey: string }> = {
  // host.zoneUuid = zone.uuid
  zone: { parentKey: 'zoneUuid', childKey: 'uuid' },
  cluster: { parentKey: 'clusterUuid', childKey: 'uuid' },
  // host.uuid = vm.hostUuid
  vmInstance: { parentKey: 'uuid', childKey: 'hostUuid' },
};
