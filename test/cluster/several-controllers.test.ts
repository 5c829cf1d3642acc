/**
 * Three controller processes on one PostgreSQL database share 300 simulated hosts
 * (issue 12's test): each host is held by exactly one live controller; kill -9 of one -> its
 * hosts are Connected and held by the others within 15 s, and a maintenance it was running
 * finishes on another with no VM lost or doubled; no host is pinged by two controllers at
 * once (counted from the controllers' own per-host records); restarted -> it takes its share
 * back with the same checks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, NO_DATABASE, TEST_DATABASE_URL, type TestDatabase } from '../store/db.ts';
import { tempDir } from '../helpers.ts';
import { ClusterHarness, within, doublePinged, type Member } from './harness.ts';

const HOSTS = 300;
const TAKEOVER_MS = 15_000;

describe.skipIf(!TEST_DATABASE_URL)(TEST_DATABASE_URL ? 'three controllers on one database' : NO_DATABASE, () => {
  let db: TestDatabase;
  let h: ClusterHarness;
  let a: Member;
  let b: Member;
  let c: Member;

  beforeAll(async () => {
    db = await createTestDatabase();
    h = new ClusterHarness({ databaseUrl: db.url, fleetDir: await tempDir(), firstIp: '127.9.0.1', migrateMs: 400 });
    a = await h.add('a');
    // Pings every 5 s (timeout 2 s), so that the test sees several per host.
    await h.ok(a, 'PUT', '/global-configurations/host/ping.timeout/actions', { updateGlobalConfig: { value: '2' } });
    await h.ok(a, 'PUT', '/global-configurations/host/ping.interval/actions', { updateGlobalConfig: { value: '5' } });
    [b, c] = [await h.add('b'), await h.add('c')];
    await h.startFleet(a, HOSTS);
  }, 240_000);

  afterAll(async () => {
    await h?.stop();
    await db?.drop().catch(() => undefined);
  });

  it('shares the hosts: each held by exactly one controller, each controller about a third', async () => {
    // All 300 registered through a, which holds them first; b and c take their shares as
    // a lets them go (not a takeover: no 15 s figure here, a bound for a busy machine).
    const { value } = await within(45_000, 'every host held once, by all three', async () => {
      const o = await h.ownership();
      return o.wrong.length === 0 && Object.values(o.shares).every((n) => n > HOSTS / 6) && (await h.connected()) === HOSTS && o;
    });
    expect(Object.keys(value.shares).sort()).toEqual(['a', 'b', 'c']);
  }, 60_000);

  it('kill -9 of one: its hosts Connected and held by the others within 15 s; its maintenance finishes elsewhere; no VM lost or doubled', async () => {
    // A host c holds, with VMs to move away: its maintenance runs on c.
    const host = (await h.pings(c)).holds[0]!;
    const vms: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await h.ok(b, 'POST', '/vm-instances', { params: { name: `m-${i}`, memorySize: 64 * 1024 ** 2, cpuNum: 1, hostUuid: host } });
      vms.push(r.inventory.uuid);
    }
    await h.ok(a, 'PUT', '/global-configurations/kvm/vm.migrationQuantity/actions', { updateGlobalConfig: { value: '1' } });
    const started = await h.api(c, 'PUT', `/hosts/${host}/actions`, { changeHostState: { stateEvent: 'maintain' } });
    expect(started.status).toBe(202);
    // Let it move a VM or two, then kill c.
    await new Promise((r) => setTimeout(r, 900));
    const before = await h.api(a, 'GET', new URL(started.body.location).pathname.replace(/^\/zstack\/v1/, ''));
    expect(before.status, 'the maintenance is still running when c is killed').toBe(202);
    await h.kill9(c);

    const taken = await within(TAKEOVER_MS, 'all hosts Connected and held by a or b', async () => {
      const o = await h.ownership();
      return o.wrong.length === 0 && (await h.connected()) === HOSTS && o;
    });
    console.log(`takeover after kill -9: ${taken.ms} ms to all ${HOSTS} held and Connected; shares ${JSON.stringify(taken.value.shares)}`);

    const done = await h.job(started.body.location, 120_000);
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body.inventory.state).toBe('Maintenance');
    const where = await h.onHosts();
    for (const vm of vms) {
      const held = where.get(vm) ?? [];
      expect(held.length, `vm ${vm} on ${held.length} hosts`).toBeLessThanOrEqual(1);
      if (held.length === 1) expect(held[0]!.host).not.toBe(host);
    }
    const rows = (await h.api(a, 'GET', `/vm-instances?q=uuid?=${vms.join(',')}`)).body.inventories as any[];
    expect(rows).toHaveLength(vms.length);
    for (const r of rows) {
      const held = where.get(r.uuid) ?? [];
      if (r.state === 'Stopped') expect(held).toEqual([]);
      else expect(held.map((x) => x.host)).toEqual([r.hostUuid]);
    }
    expect(doublePinged(await Promise.all(h.live().map((m) => h.pings(m))))).toEqual([]);
  }, 180_000);

  it('restarted, it takes its share back: each host held once, all Connected, none pinged by two at once', async () => {
    await h.start(c);
    const back = await within(TAKEOVER_MS, 'c holds a share again', async () => {
      const o = await h.ownership();
      return o.wrong.length === 0 && (o.shares.c ?? 0) > HOSTS / 6 && (await h.connected()) === HOSTS - 1 + 1 && o;
    });
    console.log(`rebalance after restart: ${back.ms} ms; shares ${JSON.stringify(back.value.shares)}`);
    // A few ping intervals under the new shares.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(doublePinged(await Promise.all(h.live().map((m) => h.pings(m))))).toEqual([]);
    expect((await h.ownership()).wrong).toEqual([]);
  }, 90_000);

  it('a controller frozen past the dead line (SIGSTOP 8 s) wakes to find its hosts taken: it acts on none of them, then gets its share back', async () => {
    const before = await h.pings(b);
    b.proc!.child.kill('SIGSTOP');
    const frozen = Date.now();
    // The others take b's hosts while it sleeps.
    await within(TAKEOVER_MS, 'a and c hold every host', async () => {
      const views = await Promise.all([h.pings(a), h.pings(c)]);
      return views[0]!.holds.length + views[1]!.holds.length === HOSTS && views;
    });
    await new Promise((r) => setTimeout(r, Math.max(0, 8_000 - (Date.now() - frozen))));
    b.proc!.child.kill('SIGCONT');
    // b wakes believing it holds its old share: its first pings are refused by the agents
    // (older token) or it learns from the leases first; either way no host is held twice...
    await within(TAKEOVER_MS, 'every host held once and Connected, b with a share again', async () => {
      const o = await h.ownership();
      return o.wrong.length === 0 && (o.shares.b ?? 0) > HOSTS / 6 && (await h.connected()) === HOSTS && o;
    });
    // ...and b pings none of the hosts it does not hold: over more than a ping interval its
    // count for them stays still, while the holders' counts move.
    const notMine = (v: { holds: string[] }) => [...h.hostIps.keys()].filter((x) => !v.holds.includes(x));
    const b1 = await h.pings(b);
    const a1 = await h.pings(a);
    await new Promise((r) => setTimeout(r, 6_000));
    const b2 = await h.pings(b);
    const a2 = await h.pings(a);
    const stray = notMine(b2).filter((x) => (b2.pings[x]?.count ?? 0) !== (b1.pings[x]?.count ?? 0));
    expect(stray, 'hosts b pinged without holding them').toEqual([]);
    expect(a2.holds.filter((x) => (a2.pings[x]?.count ?? 0) > (a1.pings[x]?.count ?? 0)).length).toBeGreaterThan(a2.holds.length / 2);
    expect(before.holds.length).toBeGreaterThan(0);
  }, 90_000);
});
