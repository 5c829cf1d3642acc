/**
 * The Repository contract, run against every store (test/store/embedded.test.ts,
 * test/store/postgres.test.ts): transactions, equality finds, uniqueness, after-commit
 * hooks, and the query language against a reference filter written independently here.
 * `fresh()` hands out an empty store; the calling file opens and closes it.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { HkError } from '../../protocol/errors.ts';
import { compileLike, parseQuery } from '../../protocol/query.ts';
import { type HostRow, RESOURCES } from '../../protocol/resources.ts';
import type { Repository } from '../../controller/store/repository.ts';
import { C, HOSTS, host, seedFixtures, T0, VMS, Z } from './fixtures.ts';

const row = (uuid: string, extra: Record<string, unknown> = {}) => ({ uuid, name: uuid, ...extra });
const uuids = (rows: { uuid: string }[]) => rows.map((r) => r.uuid);

async function refusal(p: Promise<unknown>): Promise<HkError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(HkError);
  return err as HkError;
}

export function storeContract(fresh: () => Promise<Repository>): void {
  describe('transactions', () => {
    it('commits all of a transaction or none of it', async () => {
      const s = await fresh();
      await s.transaction(async (tx) => {
        await tx.insert('zone', row('a'));
        await tx.insert('zone', row('b'));
      });
      await expect(
        s.transaction(async (tx) => {
          await tx.insert('zone', row('c'));
          await tx.update<any>('zone', 'a', { name: 'changed' });
          await tx.remove('zone', 'b');
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect((await s.all('zone')).map((r: any) => [r.uuid, r.name])).toEqual([['a', 'a'], ['b', 'b']]);
    });

    it('a transaction reads its own writes, through find too; others see them after commit', async () => {
      const s = await fresh();
      await s.transaction(async (tx) => {
        await tx.insert('host', row('h1', { clusterUuid: 'c1', managementIp: '1.1.1.1' }));
        await tx.insert('host', row('h2', { clusterUuid: 'c1', managementIp: '1.1.1.2' }));
      });
      await s.transaction(async (tx) => {
        await tx.insert('host', row('h3', { clusterUuid: 'c1', managementIp: '1.1.1.3' }));
        await tx.update<any>('host', 'h1', { clusterUuid: 'c2' });
        await tx.remove('host', 'h2');
        expect(uuids(await tx.find('host', { clusterUuid: 'c1' }))).toEqual(['h3']);
        expect(uuids(await tx.find('host', { clusterUuid: 'c2' }))).toEqual(['h1']);
        expect(await tx.get('host', 'h2')).toBeUndefined();
        expect(await tx.count('host', {})).toBe(2);
        expect(uuids(await s.find('host', { clusterUuid: 'c1' }))).toEqual(['h1', 'h2']);
      });
      expect((await s.find('host', { managementIp: '1.1.1.1' })).map((r: any) => r.clusterUuid)).toEqual(['c2']);
    });

    it('refuses a duplicate insert and an update of a missing row, and the transaction goes on', async () => {
      const s = await fresh();
      await s.transaction((tx) => tx.insert('zone', row('a')));
      expect((await refusal(s.transaction((tx) => tx.insert('zone', row('a'))))).details).toMatch(/already exists/);
      const missing = await refusal(s.transaction((tx) => tx.update('zone', 'zz', {})));
      expect([missing.details, missing.status]).toEqual([expect.stringMatching(/not found/), 404]);
      // A caller may catch a refusal and carry on: the rest still commits.
      await s.transaction(async (tx) => {
        await tx.insert('zone', row('a')).catch(() => undefined);
        await tx.update('zone', 'zz', {}).catch(() => undefined);
        await tx.insert('zone', row('b'));
      });
      expect(uuids(await s.all('zone'))).toEqual(['a', 'b']);
    });

    it('update merges shallowly; a key set to undefined is dropped', async () => {
      const s = await fresh();
      await s.transaction((tx) => tx.insert('job', row('j', { a: { x: 1 }, b: 2, c: 3 })));
      const out = await s.transaction((tx) => tx.update<any>('job', 'j', { a: { y: 2 }, c: undefined, d: null }));
      expect(out).toEqual({ uuid: 'j', name: 'j', a: { y: 2 }, b: 2, d: null });
      expect(await s.get('job', 'j')).toEqual({ uuid: 'j', name: 'j', a: { y: 2 }, b: 2, d: null });
    });

    it('rows round-trip: nested values, numbers, booleans, unicode', async () => {
      const s = await fresh();
      const r = row('x', { n: 1.5, big: 2 ** 53 - 1, neg: -3, t: true, f: false, nil: null, list: [1, 'a', { b: [] }], text: 'zóna – 区域 🌍 "\\ \n' });
      await s.transaction((tx) => tx.insert('flow', r));
      expect(await s.get('flow', 'x')).toEqual(r);
    });
  });

  describe('uniqueness (schema.ts)', () => {
    it('refuses a second host with a management IP in use, at insert and update', async () => {
      const s = await fresh();
      await s.transaction(async (tx) => {
        await tx.insert('host', row('h1', { managementIp: '10.1.1.1' }));
        await tx.insert('host', row('h2', { managementIp: '10.1.1.2' }));
      });
      const e1 = await refusal(s.transaction((tx) => tx.insert('host', row('h3', { managementIp: '10.1.1.1' }))));
      expect(e1.details).toBe('host[uuid:h3]: managementIp[10.1.1.1] is already used by host[uuid:h1]');
      const e2 = await refusal(s.transaction((tx) => tx.update<any>('host', 'h2', { managementIp: '10.1.1.1' })));
      expect(e2.details).toBe('host[uuid:h2]: managementIp[10.1.1.1] is already used by host[uuid:h1]');
      // Its own value again, a freed value, and a swap through a free one are fine.
      await s.transaction(async (tx) => {
        await tx.update<any>('host', 'h1', { managementIp: '10.1.1.1', name: 'n' });
        await tx.remove('host', 'h2');
        await tx.insert('host', row('h4', { managementIp: '10.1.1.2' }));
      });
      expect((await s.all<any>('host')).map((h) => h.managementIp)).toEqual(['10.1.1.1', '10.1.1.2']);
    });

    it('resources share one uuid space; other kinds may reuse a resource uuid', async () => {
      const s = await fresh();
      await s.transaction((tx) => tx.insert('host', row('u1', { managementIp: '10.2.2.2' })));
      const e = await refusal(s.transaction((tx) => tx.insert('vm', row('u1'))));
      expect(e.details).toBe('vm[uuid:u1]: the uuid is already used by a host');
      await s.transaction((tx) => tx.insert('job', row('u1')));
      expect(await s.get('job', 'u1')).toEqual(row('u1'));
    });
  });

  describe('after-commit hooks', () => {
    it('run after commit, in order, before transaction() resolves; never for a failed transaction', async () => {
      const s = await fresh();
      const seen: string[] = [];
      await s.transaction(async (tx) => {
        tx.onCommit(() => seen.push('first'));
        await tx.insert('zone', row('a'));
        tx.onCommit(() => {
          throw new Error('a broken listener');
        });
        tx.onCommit(() => seen.push('second'));
        expect(seen).toEqual([]);
      });
      expect(seen).toEqual(['first', 'second']);
      await s
        .transaction(async (tx) => {
          tx.onCommit(() => seen.push('never'));
          throw new Error('no');
        })
        .catch(() => undefined);
      expect(seen).toHaveLength(2);
    });

    it('a hook sees the committed change through the store', async () => {
      const s = await fresh();
      let got: unknown;
      await s.transaction(async (tx) => {
        await tx.insert('zone', row('z'));
        tx.onCommit(() => {
          got = s.get('zone', 'z');
        });
      });
      expect(await got).toEqual(row('z'));
    });
  });

  describe('find and count', () => {
    it('equality on any top-level field, indexed or not; empty where is every row, in insertion order', async () => {
      const s = await fresh();
      await s.transaction(async (tx) => {
        await tx.insert('job', row('j1', { n: 1, flag: true, owner: 'x' }));
        await tx.insert('job', row('j2', { n: '1', flag: false, owner: null }));
        await tx.insert('job', row('j3', { n: 2 }));
      });
      await s.transaction((tx) => tx.update<any>('job', 'j1', { owner: 'y' }));
      const cases: [Record<string, any>, string[]][] = [
        [{}, ['j1', 'j2', 'j3']],
        [{ n: 1 }, ['j1']],
        [{ n: '1' }, ['j2']],
        [{ flag: false }, ['j2']],
        [{ owner: null }, ['j2', 'j3']],
        [{ owner: 'y', n: 1 }, ['j1']],
        [{ owner: 'x' }, []],
        [{ uuid: 'j3' }, ['j3']],
      ];
      for (const [where, want] of cases) {
        expect(uuids(await s.find('job', where)), JSON.stringify(where)).toEqual(want);
        expect(await s.count('job', where)).toBe(want.length);
      }
    });

    it("'vmNics.ip' finds a VM by any of its NICs", async () => {
      const s = await fresh();
      await seedFixtures(s);
      expect(uuids(await s.find('vm', { 'vmNics.ip': '172.17.9.1' } as never))).toEqual([VMS[19]!.uuid]);
      expect(uuids(await s.find('vm', { 'vmNics.ip': '172.16.9.2', hostUuid: HOSTS[9]!.uuid } as never))).toEqual([VMS[19]!.uuid]);
      expect(await s.find('vm', { 'vmNics.ip': '1.1.1.1' } as never)).toEqual([]);
    });

    it('insertion order: an update keeps a row in place, a removed and re-added row goes last', async () => {
      const s = await fresh();
      await s.transaction(async (tx) => {
        for (const u of ['a', 'b', 'c']) await tx.insert('session', row(u));
      });
      await s.transaction((tx) => tx.update<any>('session', 'a', { name: 'A' }));
      await s.transaction((tx) => tx.remove('session', 'b'));
      await s.transaction((tx) => tx.insert('session', row('b')));
      expect(uuids(await s.all('session'))).toEqual(['a', 'c', 'b']);
      expect(uuids(await s.find('session', {}))).toEqual(['a', 'c', 'b']);
    });
  });

  describe('the query language', () => {
    let s: Repository;
    beforeAll(async () => {
      s = await fresh();
      await seedFixtures(s);
    });
    const q = (params: Record<string, unknown>) => s.query<HostRow>(RESOURCES.host, parseQuery(RESOURCES.host, params));
    const names = (rows: HostRow[]) => rows.map((r) => r.name);
    const like = (v: string, p: string) => new RegExp(`^${p.replace(/%/g, '.*').replace(/_/g, '.')}$`).test(v);
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
      [['name>node_3'], (h) => h.name > 'node_3'],
      [['description is null'], (h) => h.description === null],
      [['description not null'], (h) => h.description !== null],
      [['description!=d1'], (h) => h.description !== null && h.description !== 'd1'],
      [['state=Enabled', 'status=Connected'], (h) => h.state === 'Enabled' && h.status === 'Connected'],
      [['createDate>Jan 1, 2024 12:00:10 AM'], (h) => h.createDate > T0 + 10_000],
      [['createDate<=2024-01-01T00:00:05Z'], (h) => h.createDate <= T0 + 5000],
      [['createDate=Jan 1, 2024 12:00:03 AM'], (h) => h.createDate === T0 + 3000],
      [['createDate?=2024-01-01T00:00:03Z,2024-01-01T00:00:04Z'], (h) => [T0 + 3000, T0 + 4000].includes(h.createDate)],
      [['zone.name=zone-1'], (h) => h.zoneUuid === Z[1]],
      [['cluster.name~=%-2'], (h) => h.clusterUuid === C[2]],
      [['zone.name!=zone-1', 'cluster.name=cluster-0'], (h) => h.zoneUuid === Z[0] && h.clusterUuid === C[0]],
      [['vmInstance.vmNics.ip=172.16.5.2'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.ip === '172.16.5.2'))],
      [['vmInstance.vmNics.ip=172.17.9.1'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.ip === '172.17.9.1'))],
      [['vmInstance.vmNics.ip?=172.17.9.1,172.16.3.1'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => ['172.17.9.1', '172.16.3.1'].includes(n.ip)))],
      [['vmInstance.vmNics.ip~=172.17.1%'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => like(n.ip, '172.17.1%')))],
      [['vmInstance.vmNics.mac!=x'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.mac !== 'x'))],
      [['vmInstance.name=vm-3-0'], (h) => vmsOf(h).some((v) => v.name === 'vm-3-0')],
      [['vmInstance.state=Running', 'state=Disabled'], (h) => h.state === 'Disabled' && vmsOf(h).some((v) => v.state === 'Running')],
      [['vmInstance.memorySize>1024'], (h) => vmsOf(h).some((v) => v.memorySize > 1024)],
      [['vmInstance.uuid?=' + VMS[4]!.uuid + ',' + VMS[9]!.uuid], (h) => vmsOf(h).some((v) => [VMS[4]!.uuid, VMS[9]!.uuid].includes(v.uuid))],
      [['vmInstance.vmNics.ip=1.1.1.1'], () => false],
      // Two joins are two EXISTS: each may be met by another VM of the host.
      [['vmInstance.name=vm-3-0', 'vmInstance.name=vm-3-1'], (h) => vmsOf(h).some((v) => v.name === 'vm-3-0') && vmsOf(h).some((v) => v.name === 'vm-3-1')],
      [['vmInstance.state=Stopped', 'vmInstance.memorySize<2048'], (h) => vmsOf(h).some((v) => v.state === 'Stopped') && vmsOf(h).some((v) => v.memorySize < 2048)],
      [['vmInstance.vmNics.mac!=x', 'vmInstance.state!=Running'], (h) => vmsOf(h).some((v) => v.vmNics.some((n) => n.mac !== 'x')) && vmsOf(h).some((v) => v.state !== 'Running')],
      [['vmInstance.memorySize<0'], () => false],
      [['vmInstance.name~=vm-1%', 'name!~=%9%', 'state=Enabled'], (h) => vmsOf(h).some((v) => like(v.name, 'vm-1%')) && !like(h.name, '%9%') && h.state === 'Enabled'],
      [['vmInstance.name!~=vm-2%', 'zone.name=zone-1', 'cpuNum>=1'], (h) => vmsOf(h).some((v) => !like(v.name, 'vm-2%')) && h.zoneUuid === Z[1] && h.cpuNum >= 1],
      [['clusterUuid=' + C[1], 'zoneUuid=' + Z[0]], (h) => h.clusterUuid === C[1] && h.zoneUuid === Z[0]],
    ];

    it.each(CASES)('%j', async (conds, pred) => {
      const r = await q({ q: conds, replyWithCount: 'true' });
      const want = HOSTS.filter(pred);
      expect(names(r.rows)).toEqual(names(want));
      expect(r.total).toBe(want.length);
    });

    it('limit and start page through in insertion order', async () => {
      const a = await q({ limit: '5', start: '0' });
      const b = await q({ limit: '5', start: '5' });
      expect(names([...a.rows, ...b.rows])).toEqual(names(HOSTS.slice(0, 10)));
      expect(a.total).toBeUndefined();
      expect((await q({ start: '1000' })).rows).toEqual([]);
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
    it('a scope adds fixed equalities', async () => {
      const r = await s.query<HostRow>(RESOURCES.host, parseQuery(RESOURCES.host, { q: 'cpuNum>3' }), { state: 'Enabled' });
      expect(names(r.rows)).toEqual(names(HOSTS.filter((h) => h.cpuNum > 3 && h.state === 'Enabled')));
    });
    const byName = (a: HostRow, b: HostRow) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    // Nulls first ascending, last descending; ties in insertion order.
    const nullsFirst = (a: HostRow, b: HostRow) =>
      a.description === b.description ? 0 : a.description === null ? -1 : b.description === null ? 1 : a.description < b.description ? -1 : 1;
    it.each([
      ['+totalMemoryCapacity', (a: HostRow, b: HostRow) => a.totalMemoryCapacity - b.totalMemoryCapacity],
      ['-totalMemoryCapacity', (a: HostRow, b: HostRow) => b.totalMemoryCapacity - a.totalMemoryCapacity],
      ['-name', (a: HostRow, b: HostRow) => byName(b, a)],
      [' name', byName], // `+` arrives as a space
      ['+cpuNum', (a: HostRow, b: HostRow) => a.cpuNum - b.cpuNum],
      ['-state', (a: HostRow, b: HostRow) => (a.state === b.state ? 0 : a.state < b.state ? 1 : -1)],
      ['+description', nullsFirst],
      ['-description', (a: HostRow, b: HostRow) => nullsFirst(b, a)],
      ['-createDate', (a: HostRow, b: HostRow) => b.createDate - a.createDate],
    ])('sort=%s', async (sort, cmp) => {
      const r = await q({ sort, limit: '30', start: '3' });
      expect(names(r.rows)).toEqual(names([...HOSTS].sort(cmp).slice(3, 33)));
    });
  });

  describe('LIKE, as the embedded matcher (protocol/query.ts compileLike) has it', () => {
    const VALUES = ['kvm-1', 'KVM-1', '', 'a', 'ab', 'abc', 'ac', 'abcbc', 'abcb', 'aa', 'abab', 'aba', 'abba', 'x', '100%', '1000',
      'a_b', 'axb', 'a\\b', 'a\\', 'axzyb', 'axyb', 'caféx', '\n', 'a\nb', 'a.c', 'aaa', 'a%b', `${'x'.repeat(254)}y`];
    const PATTERNS = ['kvm%', '%', '', '_', 'a_c', '%b%', 'a%c', '%a%a%', '%ab%ab%', 'ab%ba', '%%%', '%_%', '100\\%', 'a\\_b',
      'a\\\\b', 'a\\', '%x_y%', '%é_', '%\n%', 'a.c', 'a*', '%x%x%x%x%x%y', 'a\\%b', '\\a\\b%', '%\\\\'];
    let s: Repository;
    beforeAll(async () => {
      s = await fresh();
      await s.transaction(async (tx) => {
        for (const [i, name] of VALUES.entries()) await tx.insert('zone', { uuid: `z${i}`, name, description: null });
      });
    });
    it.each(PATTERNS)('%j', async (pattern) => {
      const m = compileLike(pattern);
      for (const [op, want] of [['~=', (v: string) => m.test(v)], ['!~=', (v: string) => !m.test(v)]] as const) {
        const r = await s.query<{ uuid: string; name: string }>(RESOURCES.zone, parseQuery(RESOURCES.zone, { q: `name${op}${pattern}` }));
        expect(r.rows.map((z) => z.name), op).toEqual(VALUES.filter(want));
      }
    });
  });

  describe('a host row written by the fixtures', () => {
    it('comes back equal', async () => {
      const s = await fresh();
      await s.transaction((tx) => tx.insert('host', host(3)));
      expect(await s.get('host', host(3).uuid)).toEqual(host(3));
    });
  });
}
