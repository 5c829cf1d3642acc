/**
 * The query language end to end at the store level: parse with protocol/query.ts, evaluate
 * with the embedded store, compare with a naive reference filter written independently here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HkError } from '../../protocol/errors.ts';
import { compileLike, parseQuery, QUERY_LIMITS, splitCondition } from '../../protocol/query.ts';
import { type HostRow, RESOURCES, type VmRow } from '../../protocol/resources.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { tempDir } from '../helpers.ts';

const T0 = Date.UTC(2024, 0, 1, 0, 0, 0);
const hex = (n: number, p: string) => (p + n.toString(16)).padStart(32, '0').slice(-32);
const Z = [hex(1, 'a'), hex(2, 'a')];
const C = [hex(1, 'c'), hex(2, 'c'), hex(3, 'c')];

function host(i: number): HostRow {
  return {
    uuid: hex(i, 'b'), name: i % 3 === 0 ? `kvm-${i}` : `node_${i}`, description: i % 4 === 0 ? null : `d${i}`,
    zoneUuid: Z[i % 2]!, clusterUuid: C[i % 3]!, managementIp: `10.0.0.${i}`, hypervisorType: 'KVM',
    state: (['Enabled', 'Disabled', 'PreMaintenance', 'Maintenance'] as const)[i % 4]!,
    status: (['Connected', 'Disconnected', 'Connecting'] as const)[i % 3]!,
    createDate: T0 + i * 1000, lastOpDate: T0 + i * 1000, cpuNum: i % 8, cpuSockets: 1, totalCpuCapacity: 0,
    availableCpuCapacity: 0, totalMemoryCapacity: i * 1024, availableMemoryCapacity: 0, totalPhysicalMemory: 0,
    availablePhysicalMemory: 0, sshPort: 22, statusReason: '',
  };
}
const HOSTS = Array.from({ length: 40 }, (_, i) => host(i + 1));
const VMS: VmRow[] = HOSTS.flatMap((h, i) =>
  [0, 1].map((k) => ({
    uuid: hex(i * 2 + k + 1, 'e'), name: `vm-${i}-${k}`, hostUuid: h.uuid, lastHostUuid: null, clusterUuid: h.clusterUuid,
    zoneUuid: h.zoneUuid, state: k === 0 ? 'Running' : 'Stopped', memorySize: 1024 * (k + 1), cpuNum: 1,
    vmNics: [{ ip: `172.16.${i}.${k + 1}`, mac: `fa:00:00:00:${i}:${k}` }, ...(k === 1 ? [{ ip: `172.17.${i}.1`, mac: 'x' }] : [])],
    createDate: T0, lastOpDate: T0,
  })),
);

let store: EmbeddedStore;
beforeAll(async () => {
  store = await EmbeddedStore.open(await tempDir(), { sync: false });
  await store.transaction(async (tx) => {
    for (const [i, u] of Z.entries()) await tx.insert('zone', { uuid: u, name: `zone-${i}`, description: null, state: 'Enabled', createDate: T0, lastOpDate: T0 });
    for (const [i, u] of C.entries()) await tx.insert('cluster', { uuid: u, name: `cluster-${i}`, description: null, zoneUuid: Z[0], hypervisorType: 'KVM', state: 'Enabled', createDate: T0, lastOpDate: T0 });
    for (const h of HOSTS) await tx.insert('host', h);
    for (const v of VMS) await tx.insert('vm', v);
  });
});
afterAll(() => store.close());

const q = async (params: Record<string, unknown>) => {
  const spec = parseQuery(RESOURCES.host, params);
  return store.query<HostRow>(RESOURCES.host, spec);
};
const names = (rows: HostRow[]) => rows.map((r) => r.name);
const like = (s: string, p: string) => new RegExp(`^${p.replace(/%/g, '.*').replace(/_/g, '.')}$`).test(s);
const vmsOf = (h: HostRow) => VMS.filter((v) => v.hostUuid === h.uuid);

// [conditions, reference predicate]
const CASES: [string[], (h: HostRow) => boolean][] = [
  [['managementIp=10.0.0.7'], (h) => h.managementIp === '10.0.0.7'],
  [['state!=Enabled'], (h) => h.state !== 'Enabled'],
  [['cpuNum>5'], (h) => h.cpuNum > 5],
  [['cpuNum<2'], (h) => h.cpuNum < 2],
  [['cpuNum>=7'], (h) => h.cpuNum >= 7],
  [['cpuNum<=0'], (h) => h.cpuNum <= 0],
  [['state?=Enabled,Maintenance'], (h) => ['Enabled', 'Maintenance'].includes(h.state)],
  [['status!?=Connected,Connecting'], (h) => !['Connected', 'Connecting'].includes(h.status)],
  [['name~=kvm%'], (h) => like(h.name, 'kvm%')],
  [['name~=node\\_1_'], (h) => /^node_1.$/.test(h.name)],
  [['name!~=%1%'], (h) => !like(h.name, '%1%')],
  [['description is null'], (h) => h.description === null],
  [['description not null'], (h) => h.description !== null],
  [['state=Enabled', 'status=Connected'], (h) => h.state === 'Enabled' && h.status === 'Connected'],
  [['createDate>Jan 1, 2024 12:00:10 AM'], (h) => h.createDate > T0 + 10_000],
  [['createDate<=2024-01-01T00:00:05Z'], (h) => h.createDate <= T0 + 5000],
  [['createDate=Jan 1, 2024 12:00:03 AM'], (h) => h.createDate === T0 + 3000],
  [['zone.name=zone-1'], (h) => h.zoneUuid === Z[1]],
  [['cluster.name~=%-2'], (h) => h.clusterUuid === C[2]],
  [['vmInstance.vmNics.ip=172.16.5.2'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.ip === '172.16.5.2'))],
  [['vmInstance.vmNics.ip=172.17.9.1'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.ip === '172.17.9.1'))],
  [['vmInstance.vmNics.ip~=172.17.1%'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => like(n.ip, '172.17.1%')))],
  [['vmInstance.name=vm-3-0'], (h) => vmsOf(h).some((v) => v.name === 'vm-3-0')],
  [['vmInstance.state=Running', 'state=Disabled'], (h) => h.state === 'Disabled' && vmsOf(h).some((v) => v.state === 'Running')],
  [['vmInstance.memorySize>1024'], (h) => vmsOf(h).some((v) => v.memorySize > 1024)],
  [['vmInstance.uuid?=' + VMS[4]!.uuid + ',' + VMS[9]!.uuid], (h) => vmsOf(h).some((v) => [VMS[4]!.uuid, VMS[9]!.uuid].includes(v.uuid))],
  [['vmInstance.vmNics.ip=1.1.1.1'], () => false],
  [['clusterUuid=' + C[1], 'zoneUuid=' + Z[0]], (h) => h.clusterUuid === C[1] && h.zoneUuid === Z[0]],
];

describe('query evaluation matches a reference filter', () => {
  it.each(CASES)('%j', async (conds, pred) => {
    const r = await q({ q: conds, replyWithCount: 'true' });
    const want = HOSTS.filter(pred);
    expect(names(r.rows)).toEqual(names(want));
    expect(r.total).toBe(want.length);
  });
});

describe('paging, counting, sorting', () => {
  it('limit and start page through in insertion order', async () => {
    const a = await q({ limit: '5', start: '0' });
    const b = await q({ limit: '5', start: '5' });
    expect(names([...a.rows, ...b.rows])).toEqual(names(HOSTS.slice(0, 10)));
    expect(a.total).toBeUndefined();
  });
  it('count=true gives only the total', async () => {
    const r = await q({ q: 'state=Enabled', count: 'true' });
    expect(r.rows).toEqual([]);
    expect(r.total).toBe(HOSTS.filter((h) => h.state === 'Enabled').length);
  });
  it('replyWithCount gives the total beyond the page', async () => {
    const r = await q({ q: 'state=Enabled', limit: '2', replyWithCount: 'true' });
    expect(r.rows).toHaveLength(2);
    expect(r.total).toBe(10);
  });
  it.each([
    ['+totalMemoryCapacity', (a: HostRow, b: HostRow) => a.totalMemoryCapacity - b.totalMemoryCapacity],
    ['-totalMemoryCapacity', (a: HostRow, b: HostRow) => b.totalMemoryCapacity - a.totalMemoryCapacity],
    ['-name', (a: HostRow, b: HostRow) => (a.name < b.name ? 1 : a.name > b.name ? -1 : 0)],
    [' name', (a: HostRow, b: HostRow) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)], // `+` arrives as a space
  ])('sort=%s', async (sort, cmp) => {
    const r = await q({ sort, limit: '7', start: '3' });
    expect(names(r.rows)).toEqual(names([...HOSTS].sort(cmp).slice(3, 10)));
  });
  it('fields projection is checked against the inventory', () => {
    expect(parseQuery(RESOURCES.host, { fields: 'uuid,name' }).fields).toEqual(['uuid', 'name']);
    expect(() => parseQuery(RESOURCES.host, { fields: 'uuid,password' })).toThrow(/password/);
  });
});

describe('query errors name the culprit', () => {
  it.each([
    [{ q: 'bogus=1' }, 'bogus'],
    [{ q: 'vmInstance.bogus=1' }, 'vmInstance.bogus'],
    [{ q: 'zone.vmNics.ip=1' }, 'zone.vmNics.ip'],
    [{ q: 'name' }, 'name'],
    [{ q: 'cpuNum>abc' }, 'cpuNum'],
    [{ q: 'createDate>yesterday' }, 'createDate'],
    [{ q: 'state=Broken' }, 'state'],
    [{ q: 'name>=a', limit: '-1' }, 'limit'],
    [{ limit: 'abc' }, 'limit'],
    [{ start: '1.5' }, 'start'],
    [{ count: 'yes' }, 'count'],
    [{ sort: '+nope' }, 'sort'],
    [{ fields: 'nope' }, 'nope'],
    [{ foo: '1' }, 'foo'],
    [{ q: 'cpuNum~=1%' }, 'cpuNum'],
  ])('%j', (params, name) => {
    let err: unknown;
    try {
      parseQuery(RESOURCES.host, params);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HkError);
    expect((err as HkError).code).toBe('SYS.1007');
    expect((err as HkError).details).toContain(name);
  });
  it.each([
    ['a=b', ['a', '=', 'b']], ['a!=b', ['a', '!=', 'b']], ['a>=1', ['a', '>=', '1']], ['a<=1', ['a', '<=', '1']],
    ['a?=1,2', ['a', '?=', '1,2']], ['a!?=1,2', ['a', '!?=', '1,2']], ['a~=x%', ['a', '~=', 'x%']], ['a!~=x%', ['a', '!~=', 'x%']],
    ['a>1', ['a', '>', '1']], ['a<1', ['a', '<', '1']], ['a=b=c', ['a', '=', 'b=c']], ['a.b.c=1', ['a.b.c', '=', '1']],
    ['a is null', ['a', 'is null', undefined]], ['a not null', ['a', 'not null', undefined]], ['a=', ['a', '=', '']],
  ])('splits %j', (text, [field, op, raw]) => {
    expect(splitCondition(text)).toEqual({ field, op, ...(raw !== undefined ? { raw } : {}) });
  });
});

describe('LIKE semantics', () => {
  // [pattern, value, matches]: MySQL's LIKE, case-sensitive as the store has always been.
  it.each([
    ['kvm%', 'kvm-1', true], ['kvm%', 'KVM-1', false], ['%', '', true], ['', '', true], ['', 'a', false],
    ['_', 'a', true], ['_', '', false], ['_', 'ab', false], ['a_c', 'abc', true], ['a_c', 'ac', false],
    ['%b%', 'abc', true], ['%b%', 'ac', false], ['a%c', 'ac', true], ['a%c', 'abcbc', true], ['a%c', 'abcb', false],
    ['%a%a%', 'aa', true], ['%a%a%', 'a', false], ['%ab%ab%', 'abab', true], ['%ab%ab%', 'aba', false],
    ['ab%ba', 'aba', false], ['ab%ba', 'abba', true], ['%%%', 'x', true], ['%_%', '', false], ['%_%', 'x', true],
    ['100\\%', '100%', true], ['100\\%', '1000', false], ['a\\_b', 'a_b', true], ['a\\_b', 'axb', false],
    ['a\\\\b', 'a\\b', true], ['a\\', 'a\\', true], ['%x_y%', 'axzyb', true], ['%x_y%', 'axyb', false],
    ['%é_', 'caféx', true], ['_', '\n', true], ['%\n%', 'a\nb', true], ['a.c', 'abc', false], ['a*', 'aaa', false],
    ['%x%x%x%x%x%y', 'x'.repeat(255), false], ['%x%x%x%x%x%y', `${'x'.repeat(254)}y`, true],
  ])('%j ~ %j is %s', (pattern, value, want) => {
    const m = compileLike(pattern);
    expect(m.test(value)).toBe(want);
    expect(m.steps).toBeLessThanOrEqual(m.bound(value.length));
  });

  it('never backtracks: the worst pattern costs one pass over the value', () => {
    const name = `${'x'.repeat(254)}y`;
    for (const pattern of ['%x%x%x%x%x%y%', `%${'x_'.repeat(16)}%`, `%${'x'.repeat(31)}y%`, '%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%y']) {
      const m = compileLike(pattern);
      m.test(name);
      expect(m.steps).toBeLessThanOrEqual(m.bound(name.length));
      expect(m.bound(name.length)).toBeLessThanOrEqual(255 + QUERY_LIMITS.likePattern);
    }
  });

  it('a backtracking pattern on a 255-character name does not stall the store (took 14 s)', { timeout: 2000 }, async () => {
    const s = await EmbeddedStore.open(await tempDir(), { sync: false });
    try {
      const h = { ...host(1), name: 'x'.repeat(255) };
      await s.transaction((tx) => tx.insert('host', h));
      const t0 = performance.now();
      const r = await s.query<HostRow>(RESOURCES.host, parseQuery(RESOURCES.host, { q: 'name~=%x%x%x%x%x%x%x%x%y' }));
      expect(r.rows).toEqual([]);
      expect(performance.now() - t0).toBeLessThan(500);
    } finally {
      await s.close();
    }
  });
});

describe('the LIKE work budget', () => {
  it('refuses a query whose LIKEs would read more than QUERY_LIMITS.likeSteps characters, and takes it once narrowed', async () => {
    const s = await EmbeddedStore.open(await tempDir(), { sync: false });
    try {
      const long = `${'x'.repeat(2047)}y`;
      const n = Math.ceil(QUERY_LIMITS.likeSteps / long.length) + 1;
      await s.transaction(async (tx) => {
        for (let i = 1; i <= n; i++) await tx.insert('host', { ...host(i), managementIp: `10.1.${i >> 8}.${i & 255}`, description: long });
      });
      let err: unknown;
      await s.query(RESOURCES.host, parseQuery(RESOURCES.host, { q: 'description~=%x_z%' })).catch((e: unknown) => (err = e));
      expect(err).toBeInstanceOf(HkError);
      expect((err as HkError).code).toBe('SYS.1007');
      expect((err as HkError).details).toContain(`${QUERY_LIMITS.likeSteps}`);
      // With an indexed equality in front, only that host's description is read.
      const r = await s.query<HostRow>(RESOURCES.host, parseQuery(RESOURCES.host, { q: ['description!~=%x_z%', 'managementIp=10.1.0.7'] }));
      expect(r.rows.map((h) => h.uuid)).toEqual([host(7).uuid]);
    } finally {
      await s.close();
    }
  });
});

describe('the query budget', () => {
  const L = QUERY_LIMITS;
  const many = (n: number, c: string) => Array.from({ length: n }, () => c);
  // [what, params, words the refusal must name]: one past each limit is refused before any
  // evaluation; exactly at the limit is accepted (next table).
  it.each([
    ['too many conditions', { q: many(L.conditions + 1, 'cpuNum>1') }, ['q', `${L.conditions}`]],
    ['an overlong condition', { q: `name=${'a'.repeat(L.conditionLength)}` }, [`${L.conditionLength}`]],
    ['too many likes', { q: many(L.likeConditions + 1, 'name~=a%') }, ['~=', `${L.likeConditions}`]],
    ['an overlong pattern', { q: `name~=${'a'.repeat(L.likePattern + 1)}` }, ['name', `${L.likePattern}`]],
    ['too many %', { q: `description!~=${'%a'.repeat(L.likePercents + 1)}` }, ['description', '%', `${L.likePercents}`]],
    ['a long %...% piece', { q: `name~=%${'a'.repeat(L.likePiece + 1)}%` }, ['name', `${L.likePiece}`]],
    ['too many joins', { q: many(L.nestedConditions + 1, 'vmInstance.memorySize>1') }, ['zone.*', `${L.nestedConditions}`]],
    ['a long ?= list', { q: `cpuNum?=${many(L.inValues + 1, '1').join(',')}` }, ['cpuNum', `${L.inValues}`]],
    ['a long !?= list', { q: `name!?=${many(L.inValues + 1, 'a').join(',')}` }, ['name', `${L.inValues}`]],
    ['a large limit', { limit: String(L.limit + 1) }, ['limit', `${L.limit}`]],
    ['a large start', { start: String(L.start + 1) }, ['start', `${L.start}`]],
  ])('refuses %s', (_what, params, words) => {
    let err: unknown;
    try {
      parseQuery(RESOURCES.host, params);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HkError);
    expect((err as HkError).code).toBe('SYS.1007');
    for (const w of words) expect((err as HkError).details).toContain(w);
  });

  it.each([
    ['conditions', { q: many(L.conditions, 'cpuNum>1') }],
    ['likes', { q: many(L.likeConditions, 'name~=a%') }],
    ['pattern', { q: `name~=${'a'.repeat(L.likePattern)}` }],
    ['%', { q: `name~=${'%a'.repeat(L.likePercents - 1)}%` }],
    ['piece', { q: `name~=%${'a'.repeat(L.likePiece)}%` }],
    ['anchored pieces may be long', { q: `name~=${'a'.repeat(100)}%${'b'.repeat(100)}` }],
    ['escaped % do not count', { q: `name~=${'\\%'.repeat(L.likePercents + 1)}` }],
    ['joins', { q: many(L.nestedConditions, 'vmInstance.memorySize>1') }],
    ['?= list', { q: `cpuNum?=${many(L.inValues, '1').join(',')}` }],
    ['limit and start', { limit: String(L.limit), start: String(L.start) }],
  ])('accepts the limit: %s', (_what, params) => {
    expect(() => parseQuery(RESOURCES.host, params)).not.toThrow();
  });
});
