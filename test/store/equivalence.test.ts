/**
 * Query equivalence: random queries (seeded, so a failure replays) must give identical
 * answers on the embedded store and on PostgreSQL over the same rows, written in the same
 * order: the rows of each page in order, the total, and whether the query is refused.
 * The rows are built to hit the edges: names with %, _ and \, missing and null fields,
 * dates off whole seconds, VMs with zero to three NICs sharing addresses, removed and
 * re-added rows (insertion order). A failure prints the query and its seed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseQuery } from '../../protocol/query.ts';
import { type FieldCatalogue, RESOURCES, type ResourceSpec } from '../../protocol/resources.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { PgStore } from '../../controller/store/postgres/pg-store.ts';
import type { Repository, Where } from '../../controller/store/repository.ts';
import { prng } from '../../bench/seed.ts';
import { tempDir } from '../helpers.ts';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from './db.ts';

const SEED = Number(process.env.HK_EQUIVALENCE_SEED ?? 20261128);
const QUERIES = Number(process.env.HK_EQUIVALENCE_QUERIES ?? 600);
const quiet = { info() {}, warn() {} };

type Rec = Record<string, any>;

function buildRows(rnd: () => number): Record<'zone' | 'cluster' | 'host' | 'vm' | 'tag', Rec[]> {
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const T0 = Date.UTC(2024, 0, 1);
  const date = () => T0 + Math.floor(rnd() * 20) * 1000 + pick([0, 1, 499, 999]);
  const NAMES = ['kvm-1', 'KVM-1', 'node_1', 'node%1', 'a\\b', 'ab', 'a_b', 'axb', '', 'zóna', 'x'.repeat(40), 'host 7', 'h\n2'];
  const maybe = (v: unknown) => (rnd() < 0.2 ? null : rnd() < 0.1 ? undefined : v);
  const zones = [0, 1, 2].map((i) => ({ uuid: `z${i}`, name: pick(NAMES), description: maybe(`zd${i}`), state: pick(['Enabled', 'Disabled']), createDate: date(), lastOpDate: date() }));
  const clusters = Array.from({ length: 6 }, (_, i) => ({
    uuid: `c${i}`, name: pick(NAMES), description: maybe('c'), zoneUuid: pick(zones).uuid, hypervisorType: 'KVM', state: 'Enabled', createDate: date(), lastOpDate: date(),
  }));
  const hosts = Array.from({ length: 240 }, (_, i) => {
    const c = pick(clusters);
    return {
      uuid: `h${i}`, name: pick(NAMES) + (rnd() < 0.5 ? String(i % 7) : ''), description: maybe(pick(NAMES)), zoneUuid: c.zoneUuid, clusterUuid: c.uuid,
      managementIp: `10.0.${i >> 8}.${i & 255}`, hypervisorType: 'KVM', state: pick(['Enabled', 'Disabled', 'PreMaintenance', 'Maintenance']),
      status: pick(['Connected', 'Disconnected', 'Connecting']), createDate: date(), lastOpDate: date(), cpuNum: maybe(Math.floor(rnd() * 6)),
      cpuSockets: 1, totalCpuCapacity: Math.floor(rnd() * 4) * 0.5, availableCpuCapacity: -Math.floor(rnd() * 3), totalMemoryCapacity: Math.floor(rnd() * 5) * 1024,
      availableMemoryCapacity: 0, totalPhysicalMemory: 0, availablePhysicalMemory: 0, sshPort: 22, statusReason: '',
    };
  });
  const vms = Array.from({ length: 700 }, (_, i) => ({
    uuid: `v${i}`, name: pick(NAMES), hostUuid: rnd() < 0.85 ? pick(hosts).uuid : null, lastHostUuid: maybe(pick(hosts).uuid), clusterUuid: maybe(pick(clusters).uuid),
    zoneUuid: pick(zones).uuid, state: pick(['Running', 'Stopped', 'Migrating', 'Unknown']), memorySize: Math.floor(rnd() * 4) * 512, cpuNum: 1 + Math.floor(rnd() * 3),
    vmNics: Array.from({ length: Math.floor(rnd() * 4) }, () => ({ ip: `172.16.${Math.floor(rnd() * 3)}.${Math.floor(rnd() * 40)}`, mac: rnd() < 0.5 ? 'fa:16' : 'x_y' })),
    createDate: date(), lastOpDate: date(),
  }));
  const tags = Array.from({ length: 120 }, (_, i) => ({
    uuid: `t${i}`, resourceType: 'HostVO', resourceUuid: pick(hosts).uuid, tag: pick(['reservedMemory::1G', 'os::release::x', 'capability:liveSnapshot', 'a%b']),
    type: pick(['System', 'User']), inherent: rnd() < 0.5, createDate: date(), lastOpDate: date(),
  }));
  // JSON has no undefined: a maybe() that said undefined is a missing key, as stored.
  const strip = (rs: Rec[]) => rs.map((r) => JSON.parse(JSON.stringify(r)) as Rec);
  return { zone: strip(zones), cluster: strip(clusters), host: strip(hosts), vm: strip(vms), tag: strip(tags) };
}

async function load(store: Repository, rows: ReturnType<typeof buildRows>): Promise<void> {
  for (const kind of ['zone', 'cluster', 'host', 'vm', 'tag'] as const) {
    await store.transaction(async (tx) => {
      for (const r of rows[kind]) await tx.insert(kind, r as { uuid: string });
    });
  }
  // Move some rows in the insertion order, change others in place.
  await store.transaction(async (tx) => {
    for (const u of ['h3', 'h50', 'v7']) await tx.remove(u[0] === 'h' ? 'host' : 'vm', u);
    await tx.update<any>('host', 'h10', { state: 'Maintenance', description: undefined });
  });
  await store.transaction(async (tx) => {
    await tx.insert('host', rows.host[3]! as { uuid: string });
    await tx.insert('vm', rows.vm[7]! as { uuid: string });
  });
}

interface Target {
  res: ResourceSpec;
  scope?: Where;
}
const TARGETS: Target[] = [
  { res: RESOURCES.host }, { res: RESOURCES.host }, { res: RESOURCES.host }, { res: RESOURCES.vm }, { res: RESOURCES.zone },
  { res: RESOURCES.systemTag, scope: { type: 'System' } },
];

/** A random query's parameters for `res`, drawing values from the rows so that many match. */
function randomParams(rnd: () => number, res: ResourceSpec, rows: ReturnType<typeof buildRows>): Record<string, unknown> {
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const fields: { name: string; cat: FieldCatalogue; key: string; kind: keyof typeof rows; list?: string }[] = [];
  const add = (prefix: string, cat: FieldCatalogue, kind: keyof typeof rows, lists?: Record<string, FieldCatalogue>) => {
    for (const k of Object.keys(cat)) fields.push({ name: prefix + k, cat, key: k, kind });
    for (const [l, lc] of Object.entries(lists ?? {})) for (const k of Object.keys(lc)) fields.push({ name: `${prefix}${l}.${k}`, cat: lc, key: k, kind, list: l });
  };
  add('', res.fields, res.kind as keyof typeof rows, res.lists);
  for (const [p, n] of Object.entries(res.nested ?? {})) add(`${p}.`, n.fields, n.kind as keyof typeof rows, n.lists);

  const valueOf = (f: (typeof fields)[number]): string => {
    const r = pick(rows[f.kind]);
    const raw = f.list ? (r[f.list]?.[0]?.[f.key] ?? 'none') : r[f.key];
    const type = f.cat[f.key]!.type;
    if (type === 'date') return new Date((typeof raw === 'number' ? raw : Date.UTC(2024, 0, 1)) + pick([0, 0, 1000, -1000])).toISOString().replace(/\.\d+Z$/, 'Z');
    if (raw === null || raw === undefined) return type === 'number' ? '1' : type === 'boolean' ? 'true' : 'none';
    return String(raw);
  };
  const likeOf = (v: string): string => {
    let out = '';
    for (const ch of v) {
      const x = rnd();
      if (ch === '%' || ch === '_' || ch === '\\') out += x < 0.5 ? `\\${ch}` : ch;
      else if (x < 0.15) out += '_';
      else if (x < 0.3) out += '%';
      else if (x < 0.35) continue;
      else out += ch;
    }
    return pick([out, `%${out.slice(0, 4)}%`, `${out.slice(0, 3)}%`, `%${out.slice(-3)}`, out + pick(['\\', '%\\', '_'])]);
  };
  const q: string[] = [];
  const n = Math.floor(rnd() * 4);
  let nested = 0;
  for (let i = 0; i < n; i++) {
    const f = pick(fields);
    if (f.name.includes('.') && !f.list && ++nested > 2) continue;
    const type = f.cat[f.key]!.type;
    const ops = type === 'string' ? ['=', '!=', '>', '<', '>=', '<=', '?=', '!?=', '~=', '!~=', 'is null', 'not null', '~=', '~=']
      : ['=', '!=', '>', '<', '>=', '<=', '?=', '!?=', 'is null', 'not null'];
    const op = pick(ops);
    if (op === 'is null' || op === 'not null') q.push(`${f.name} ${op}`);
    else if (op === '?=' || op === '!?=') q.push(`${f.name}${op}${[valueOf(f), valueOf(f), valueOf(f)].join(',')}`);
    else if (op === '~=' || op === '!~=') q.push(`${f.name}${op}${likeOf(valueOf(f))}`);
    else q.push(`${f.name}${op}${valueOf(f)}`);
  }
  const params: Record<string, unknown> = { q };
  if (rnd() < 0.5) params.limit = String(pick([1, 5, 20, 1000]));
  if (rnd() < 0.3) params.start = String(pick([0, 3, 50, 500]));
  if (rnd() < 0.4) params.sort = `${pick(['+', '-'])}${pick(Object.keys(res.fields))}`;
  if (rnd() < 0.2) params.count = 'true';
  else if (rnd() < 0.4) params.replyWithCount = 'true';
  return params;
}

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'query equivalence: embedded store and PostgreSQL' : NO_DATABASE, () => {
  let db: TestDatabase;
  let pgStore: PgStore;
  let embedded: EmbeddedStore;
  let rows: ReturnType<typeof buildRows>;
  beforeAll(async () => {
    db = await createTestDatabase();
    pgStore = await PgStore.open(db.url, { log: quiet });
    embedded = await EmbeddedStore.open(await tempDir(), { sync: false, log: quiet });
    rows = buildRows(prng(SEED));
    await load(embedded, rows);
    await load(pgStore, rows);
  }, 60_000);
  afterAll(async () => {
    await embedded?.close();
    await pgStore?.close();
    await db?.drop();
  });

  it('the stores hold the same rows in the same order', async () => {
    for (const kind of ['zone', 'cluster', 'host', 'vm', 'tag'] as const) {
      expect(await pgStore.all(kind)).toEqual(await embedded.all(kind));
    }
  });

  it(`${QUERIES} random queries (seed ${SEED}) answer alike`, async () => {
    const rnd = prng(SEED + 1);
    let compared = 0;
    let nonEmpty = 0;
    for (let i = 0; i < QUERIES; i++) {
      const t = TARGETS[Math.floor(rnd() * TARGETS.length)]!;
      const params = randomParams(rnd, t.res, rows);
      let spec;
      try {
        spec = parseQuery(t.res, params);
      } catch {
        continue; // refused before either store sees it: nothing to compare
      }
      const run = (s: Repository) =>
        s.query(t.res, spec, t.scope).then(
          (r) => ({ uuids: r.rows.map((x) => x.uuid), total: r.total }),
          (e: unknown) => ({ error: (e as Error).message }),
        );
      const [a, b] = await Promise.all([run(embedded), run(pgStore)]);
      expect(b, `${t.res.path} ${JSON.stringify(params)} (seed ${SEED}, query ${i})`).toEqual(a);
      compared++;
      if ('uuids' in a && a.uuids.length > 0) nonEmpty++;
    }
    // The generator must keep producing queries that match something.
    expect(compared).toBeGreaterThan(QUERIES * 0.8);
    expect(nonEmpty).toBeGreaterThan(compared * 0.3);
  }, 120_000);
});
