/**
 * Seeded fuzzing of the two inputs a stranger controls: query strings (any admin session) and
 * agent pushes (any host holding its own secret). Same seed, same cases: a failure names the
 * case and reproduces. What must hold for every case:
 * - nothing but a 400 (SYS.1007 / {success:false}) or a success comes back; no 500, no
 *   non-HkError thrown;
 * - work stays within the budget, counted rather than timed: an accepted query is inside
 *   QUERY_LIMITS, and every LIKE test it implies takes at most `bound(n)` matcher steps, which
 *   is at most n + QUERY_LIMITS.likePattern;
 * - a refusal changes nothing in the store.
 * Size: FUZZ_CASES (default 1,500 queries and 300 pushes) keeps it well under 5 s.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prng } from '../../bench/seed.ts';
import { insertHost } from '../../controller/services/inventory.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { CONTROLLER_AGENT_PATHS, type HostFacts, signedHeaders } from '../../protocol/agent.ts';
import { checkFacts } from '../../protocol/agent-schemas.ts';
import { HkError } from '../../protocol/errors.ts';
import { compileLike, parseQuery, QUERY_LIMITS, type QuerySpec } from '../../protocol/query.ts';
import { type HostRow, RESOURCES, type ResourceSpec, type TagRow, type VmRow } from '../../protocol/resources.ts';
import { MAX_TAG_LENGTH } from '../../protocol/tags.ts';
import { makeCluster, makeController, makeZone, storeImage, type TestController, tempDir } from '../helpers.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 1500);
const SEED = Number(process.env.FUZZ_SEED ?? 20240601);

type Rnd = () => number;
const pick = <T>(r: Rnd, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const times = (r: Rnd, max: number) => Math.floor(r() * (max + 1));

// ---- queries ------------------------------------------------------------------------------------

const FIELDS = [
  'name', 'name', 'name', 'description', 'description', 'uuid', 'managementIp', 'state', 'status', 'cpuNum', 'createDate',
  'zone.name', 'cluster.name', 'vmInstance.name', 'vmInstance.vmNics.ip', 'vmInstance.memorySize', 'vmInstance.state',
];
const BAD_FIELDS = ['bogus', 'zone.bogus', '__proto__', 'constructor', 'vmInstance.vmNics', 'a.b.c.d', '', '1abc'];
const OPS = ['=', '!=', '>', '<', '>=', '<=', '?=', '!?=', '~=', '~=', '~=', '!~=', ' is null', ' not null'];
const BAD_OPS = ['==', '~', '!', '=~'];
const ATOMS = [
  '%', '%', '_', '\\', '\\%', 'x', 'x', 'y', 'host-1', 'kvm', ',', ',', '10.0.0.1', 'Enabled', 'Connected', '1', '-1', '1e3',
  'Jun 1, 2015 6:49:24 PM', '2024-01-01T00:00:00Z', 'true', 'é', '\u0000', '\n', ' ', '=', '.*', '(a+)+$', '\u{1F600}',
];

function randomValue(r: Rnd): string {
  const roll = r();
  // Now and then something at or past a limit.
  if (roll < 0.05) return '%x'.repeat(1 + times(r, 20)) + pick(r, ['%y', 'y', '%']);
  if (roll < 0.08) return 'x'.repeat(times(r, 300));
  if (roll < 0.11) return Array.from({ length: times(r, 600) }, () => pick(r, ['1', 'a', 'Enabled'])).join(',');
  if (roll < 0.13) return `%${'x_'.repeat(times(r, 20))}%`;
  if (roll < 0.5) return `${pick(r, ['%', '', 'x'])}${Array.from({ length: times(r, 6) }, () => pick(r, ATOMS)).join('')}${pick(r, ['%', '', 'y', '_'])}`;
  return Array.from({ length: times(r, 12) }, () => pick(r, ATOMS)).join('');
}

function randomParams(r: Rnd): Record<string, unknown> {
  const qs = Array.from({ length: r() < 0.05 ? times(r, 40) : times(r, 3) }, () => {
    const op = r() < 0.05 ? pick(r, BAD_OPS) : pick(r, OPS);
    const field = r() < 0.05 ? pick(r, BAD_FIELDS) : pick(r, FIELDS);
    return `${field}${op}${op.startsWith(' ') ? '' : randomValue(r)}`;
  });
  const params: Record<string, unknown> = {};
  if (qs.length) params.q = qs.length === 1 && r() < 0.5 ? qs[0] : qs;
  const maybe = (k: string, vs: readonly unknown[]) => {
    if (r() < 0.2) params[k] = pick(r, vs);
  };
  maybe('limit', ['0', '1', '10', '10000', '10001', '-1', '1.5', 'x', '99999999999999999999', ['1', '2']]);
  maybe('start', ['0', '5', '10000000', '10000001', '']);
  maybe('count', ['true', 'false', 'yes']);
  maybe('replyWithCount', ['true', 'false', '1']);
  maybe('sort', ['+name', '-cpuNum', ' createDate', 'name', '+bogus', '--name', '']);
  maybe('fields', ['uuid,name', 'password', '', ',', 'uuid,,name']);
  maybe('bogus', ['1']);
  return params;
}

/** A host table with long, repetitive names: the shape a backtracking matcher chokes on. */
function makeHosts(r: Rnd, cluster: { zoneUuid: string; uuid: string }): { hosts: HostRow[]; vms: VmRow[] } {
  const hosts: HostRow[] = [];
  const vms: VmRow[] = [];
  for (let i = 0; i < 60; i++) {
    const uuid = (i + 1).toString(16).padStart(32, 'b');
    const name = pick(r, ['x'.repeat(255), `${'x'.repeat(254)}y`, `host-${i}`, 'xy'.repeat(100), `kvm_${i}%`, 'é'.repeat(50)]);
    hosts.push({
      uuid, name, description: r() < 0.3 ? null : 'x'.repeat(times(r, 2048)), zoneUuid: cluster.zoneUuid, clusterUuid: cluster.uuid,
      managementIp: `10.0.0.${i + 1}`, hypervisorType: 'KVM', state: pick(r, ['Enabled', 'Disabled'] as const),
      status: pick(r, ['Connected', 'Disconnected'] as const), createDate: 1e12 + i * 1000, lastOpDate: 1e12, cpuNum: times(r, 64),
      cpuSockets: 1, totalCpuCapacity: 0, availableCpuCapacity: 0, totalMemoryCapacity: 0, availableMemoryCapacity: 0,
      totalPhysicalMemory: 0, availablePhysicalMemory: 0, sshPort: 22, statusReason: '',
    });
    vms.push({
      uuid: (i + 1).toString(16).padStart(32, 'e'), name: 'x'.repeat(times(r, 255)), hostUuid: uuid, lastHostUuid: null,
      clusterUuid: cluster.uuid, zoneUuid: cluster.zoneUuid, state: 'Running', memorySize: 1024, cpuNum: 1,
      vmNics: [{ ip: `172.16.0.${i + 1}`, mac: 'fa:16:3e:00:00:01' }], createDate: 1e12, lastOpDate: 1e12,
    });
  }
  return { hosts, vms };
}

/** Every value a condition's LIKE would be tested against. */
function likeSubjects(store: EmbeddedStore, res: ResourceSpec, field: string): Promise<string[]> {
  const parts = field.split('.');
  const kind = parts.length > 1 ? res.nested![parts[0]!]!.kind : res.kind;
  return store.all(kind).then((rows) =>
    (rows as unknown as Record<string, unknown>[]).flatMap((row) => {
      if (parts.length === 3) return ((row[parts[1]!] as Record<string, unknown>[]) ?? []).map((el) => el[parts[2]!]);
      return [row[parts[parts.length - 1]!]];
    }).filter((v): v is string => typeof v === 'string'),
  );
}

function withinBudget(spec: QuerySpec): void {
  const L = QUERY_LIMITS;
  const likes = spec.conditions.filter((c) => c.op === '~=' || c.op === '!~=');
  expect(spec.conditions.length).toBeLessThanOrEqual(L.conditions);
  expect(likes.length).toBeLessThanOrEqual(L.likeConditions);
  expect(spec.conditions.filter((c) => c.nested).length).toBeLessThanOrEqual(L.nestedConditions);
  expect(spec.limit).toBeLessThanOrEqual(L.limit);
  expect(spec.start).toBeLessThanOrEqual(L.start);
  for (const c of spec.conditions) if (Array.isArray(c.value)) expect(c.value.length).toBeLessThanOrEqual(L.inValues);
}

describe('fuzzed queries', () => {
  let store: EmbeddedStore;
  const r = prng(SEED);
  beforeAll(async () => {
    store = await EmbeddedStore.open(await tempDir(), { sync: false });
    const cluster = { zoneUuid: 'a'.repeat(32), uuid: 'c'.repeat(32) };
    const { hosts, vms } = makeHosts(r, cluster);
    await store.transaction(async (tx) => {
      await tx.insert('zone', { uuid: cluster.zoneUuid, name: 'x'.repeat(255), description: null, state: 'Enabled', createDate: 1e12, lastOpDate: 1e12 });
      await tx.insert('cluster', { uuid: cluster.uuid, name: 'x'.repeat(200), description: null, zoneUuid: cluster.zoneUuid, hypervisorType: 'KVM', state: 'Enabled', createDate: 1e12, lastOpDate: 1e12 });
      for (const h of hosts) await tx.insert('host', h);
      for (const v of vms) await tx.insert('vm', v);
    });
  });
  afterAll(() => store.close());

  it(`${CASES} random queries: a 400 or an answer, within the budget`, async () => {
    const before = JSON.stringify([await store.all('host'), await store.all('vm')]);
    let accepted = 0;
    let likeSteps = 0;
    for (let i = 0; i < CASES; i++) {
      const params = randomParams(r);
      const where = `case ${i}: ${JSON.stringify(params).slice(0, 300)}`;
      let spec: QuerySpec;
      try {
        spec = parseQuery(RESOURCES.host, params);
      } catch (e) {
        if (!(e instanceof HkError) || e.code !== 'SYS.1007' || e.status !== 400) throw new Error(`${where}: threw ${String(e)}`);
        continue;
      }
      accepted++;
      withinBudget(spec);
      await store.query(RESOURCES.host, spec).catch((e: unknown) => {
        throw new Error(`${where}: evaluation threw ${String(e)}`);
      });
      for (const c of spec.conditions.filter((x) => x.op === '~=' || x.op === '!~=')) {
        const m = compileLike(String(c.value));
        let bound = 0;
        for (const v of await likeSubjects(store, RESOURCES.host, c.field)) {
          m.test(v);
          bound += m.bound(v.length);
          expect(m.bound(v.length), where).toBeLessThanOrEqual(v.length + QUERY_LIMITS.likePattern);
        }
        expect(m.steps, where).toBeLessThanOrEqual(bound);
        likeSteps += m.steps;
      }
    }
    // The generator reaches both sides of the parser, and the LIKEs did real work.
    expect(accepted).toBeGreaterThan(CASES / 10);
    expect(accepted).toBeLessThan(CASES);
    expect(likeSteps).toBeGreaterThan(CASES);
    expect(JSON.stringify([await store.all('host'), await store.all('vm')])).toBe(before);
  });
});

// ---- agent pushes -------------------------------------------------------------------------------

const GOOD: HostFacts = {
  osDistribution: 'debian', osRelease: 'bookworm', osVersion: '12', qemuImgVersion: '7.2.0', libvirtVersion: '9.0.0', hvm: 'svm',
  cpuModel: 'AMD EPYC 7302', cpuCores: 16, cpuSockets: 1, cpuNum: 32, cpuMhz: 3000, memoryBytes: 2 ** 37, bootId: 'boot-1',
  agentVersion: '0.1.0', hypervisor: 'simulator', liveSnapshot: false,
};
const JUNK: unknown[] = [
  null, true, 0, -1, 1.5, 1e300, Number.MAX_SAFE_INTEGER + 2, '', ' ', 'x'.repeat(3000), 'a\nb', 'a\u0000', '\u202e', 'vmx', 'svm',
  'libvirt', 'xen', '9.0.0', '9..0', {}, [], { a: 1 }, ['vmx'], '[object Object]', 'é'.repeat(300), '1', 'true',
];

function randomPush(r: Rnd): unknown {
  const roll = r();
  if (roll < 0.05) return pick(r, JUNK);
  const facts: Record<string, unknown> = { ...GOOD };
  const keys = Object.keys(GOOD);
  for (let k = times(r, 3); k > 0; k--) {
    const what = r();
    if (what < 0.7) facts[pick(r, keys)] = pick(r, JUNK);
    else if (what < 0.85) delete facts[pick(r, keys)];
    else facts[pick(r, ['extra', '__proto__', 'toString'])] = pick(r, JUNK);
  }
  return r() < 0.05 ? { facts, extra: 1 } : { facts };
}

describe('fuzzed agent pushes', () => {
  let t: TestController;
  let hostUuid: string;
  const SECRET = 'ef'.repeat(32);
  const r = prng(SEED + 1);
  beforeAll(async () => {
    t = await makeController();
    const cluster = await makeCluster(t, (await makeZone(t)).uuid);
    const h = await t.core.repo.transaction(async (tx) => {
      const row = await insertHost(tx, t.clock.now(), { name: 'fuzzed', managementIp: '127.0.0.99', clusterUuid: cluster.uuid }, 'Disconnected', 'test');
      return tx.update<HostRow>('host', row.uuid, { agentSecret: SECRET });
    });
    hostUuid = h.uuid;
  });
  afterAll(() => t.close());

  it(`${Math.ceil(CASES / 5)} random pushes: 200 exactly when the facts are valid, else 400 and no change`, async () => {
    let ok = 0;
    for (let i = 0; i < Math.ceil(CASES / 5); i++) {
      const body = randomPush(r);
      const text = JSON.stringify(body) ?? 'null';
      const where = `case ${i}: ${text.slice(0, 300)}`;
      const valid = (() => {
        try {
          const push = body as { facts?: unknown };
          return typeof body === 'object' && body !== null && !Array.isArray(body) && Object.keys(body).join() === 'facts' && !!checkFacts(push.facts);
        } catch {
          return false;
        }
      })();
      const before = await storeImage(t);
      const path = CONTROLLER_AGENT_PATHS.facts;
      const res = await request(t.app).post(path).set(signedHeaders(SECRET, hostUuid, 'POST', path, text, t.clock.now())).send(text);
      expect(res.status, where).toBe(valid ? 200 : 400);
      if (valid) {
        ok++;
        const tags = await t.core.repo.find<TagRow>('tag', { resourceUuid: hostUuid });
        for (const { tag } of tags) {
          expect(tag.length, where).toBeLessThanOrEqual(MAX_TAG_LENGTH);
          expect(tag, where).not.toMatch(/[\u0000-\u001f\u007f]|\[object /);
        }
      } else {
        expect(res.body.success, where).toBe(false);
        expect(await storeImage(t), where).toBe(before);
      }
    }
    expect(ok).toBeGreaterThan(0);
  });
});
