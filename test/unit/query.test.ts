/**
 * The query language: parsing, its errors and budget, and the LIKE matcher. Evaluation
 * against the stores (both of them) is the store contract: test/store/contract.ts, and
 * test/store/equivalence.test.ts compares the two stores on random queries.
 */
import { describe, expect, it } from 'vitest';
import { HkError } from '../../protocol/errors.ts';
import { compileLike, parseQuery, QUERY_LIMITS, splitCondition } from '../../protocol/query.ts';
import { type HostRow, RESOURCES, type VmRow } from '../../protocol/resources.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { tempDir } from '../helpers.ts';
import { host } from '../store/fixtures.ts';

describe('fields', () => {
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

describe('joins on the embedded store (probes through Table.linked, or scans)', () => {
  it('follow VMs that move, stop, change and go: every answer equals the reference', async () => {
    const s = await EmbeddedStore.open(await tempDir(), { sync: false });
    try {
      const hosts = Array.from({ length: 6 }, (_, i) => host(i + 1));
      let vms: VmRow[] = [];
      await s.transaction(async (tx) => {
        for (const h of hosts) await tx.insert('host', h);
        for (let i = 0; i < 18; i++) {
          const v: VmRow = {
            uuid: (i + 1).toString(16).padStart(32, 'e'), name: `vm-${i}`, hostUuid: hosts[i % 5]!.uuid, lastHostUuid: null,
            clusterUuid: hosts[0]!.clusterUuid, zoneUuid: hosts[0]!.zoneUuid, state: 'Running', memorySize: 1024 * (1 + (i % 3)), cpuNum: 1,
            vmNics: [{ ip: `172.16.0.${i + 1}`, mac: 'fa:16:3e:00:00:01' }], createDate: 0, lastOpDate: 0,
          };
          vms.push(await tx.insert('vm', v));
        }
      });
      // [conditions, reference]: broad ones are probed, narrow ones scanned, LIKEs always probed.
      const CASES: [string[], (v: VmRow) => boolean][] = [
        [['vmInstance.memorySize>0'], (v) => v.memorySize > 0],
        [['vmInstance.name~=vm-1%'], (v) => v.name.startsWith('vm-1')],
        [['vmInstance.memorySize=3072'], (v) => v.memorySize === 3072],
        [['vmInstance.state!=Running'], (v) => v.state !== 'Running'],
      ];
      const check = async (when: string) => {
        for (const [q, pred] of CASES) {
          const r = await s.query<HostRow>(RESOURCES.host, parseQuery(RESOURCES.host, { q }));
          const want = hosts.filter((h) => vms.some((v) => v.hostUuid === h.uuid && pred(v))).map((h) => h.uuid);
          expect(r.rows.map((h) => h.uuid), `${when}: ${q}`).toEqual(want);
        }
      };
      await check('at first');
      const change = async (i: number, patch: Partial<VmRow>) => {
        const row = await s.transaction((tx) => tx.update<VmRow>('vm', vms[i]!.uuid, patch));
        vms = vms.map((v) => (v.uuid === row.uuid ? row : v));
      };
      await change(0, { hostUuid: hosts[5]!.uuid }); // migrated to the host that had none
      await check('after a migration');
      await change(1, { hostUuid: null, state: 'Stopped' }); // stopped: no host
      await check('after a stop');
      await change(2, { memorySize: 3072, name: 'vm-100' }); // same host, new values
      await check('after a change in place');
      await s.transaction((tx) => tx.remove('vm', vms[3]!.uuid));
      vms = vms.filter((v) => v.uuid !== vms[3]!.uuid);
      await check('after a removal');
      await change(1, { hostUuid: hosts[2]!.uuid, state: 'Running' }); // started again elsewhere
      await check('after a start');
    } finally {
      await s.close();
    }
  });
});
