/**
 * Membership and host leases (controller/cluster/cluster.ts), two members on one store,
 * driven by hand on a fake clock (their timers are set far out and never fire here).
 */
import { describe, expect, it } from 'vitest';
import { Cluster, type ClusterListener, type HostLeaseRow } from '../../controller/cluster/cluster.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import type { Repository } from '../../controller/store/repository.ts';
import { FakeClock } from '../fakes/clock.ts';
import { silentLog, tempDir } from '../helpers.ts';

const HOSTS = Array.from({ length: 40 }, (_, i) => i.toString(16).padStart(32, '0'));
const NEVER = 3600_000;

interface Seen {
  gained: string[];
  lost: string[];
  detached: number;
  attached: number;
  died: string[];
}

function listen(c: Cluster): Seen {
  const s: Seen = { gained: [], lost: [], detached: 0, attached: 0, died: [] };
  const l: ClusterListener = {
    gained: (h) => s.gained.push(...h), lost: (h) => s.lost.push(...h), detached: () => s.detached++, attached: () => s.attached++, died: (m) => s.died.push(...m),
  };
  c.listener = l;
  return s;
}

/** A repository whose writes and reads fail while `down` (the database is gone). */
/** `allow`: when set, that many more transactions pass, then they fail (a write conflict). */
function breakable(repo: Repository): { repo: Repository; down: { on: boolean; allow?: number } } {
  const down: { on: boolean; allow?: number } = { on: false };
  const wrap = new Proxy(repo, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => (down.on || (prop === 'transaction' && down.allow !== undefined && down.allow-- <= 0)
        ? Promise.reject(new Error(down.on ? 'database unreachable: ECONNREFUSED' : 'could not serialize access (40001)'))
        : v.apply(target, args));
    },
  });
  return { repo: wrap, down };
}

async function world() {
  const clock = new FakeClock();
  const store = await EmbeddedStore.open(await tempDir(), { sync: false });
  await store.transaction(async (tx) => { for (const uuid of HOSTS) await tx.insert('host', { uuid }); });
  const opts = { heartbeatMs: NEVER, reconcileMs: NEVER, deadAfterMs: 5000, detachAfterMs: 3000 };
  const a = breakable(store);
  const b = breakable(store);
  const ca = new Cluster(a.repo, clock, silentLog(), { ...opts, uuid: 'a'.repeat(32) });
  const cb = new Cluster(b.repo, clock, silentLog(), { ...opts, uuid: 'b'.repeat(32) });
  return { clock, store, a: { c: ca, seen: listen(ca), down: a.down }, b: { c: cb, seen: listen(cb), down: b.down } };
}

const leases = async (store: Repository) => new Map((await store.all<HostLeaseRow>('hostLease')).map((l) => [l.uuid, l]));

describe('Cluster', () => {
  it('two members share the hosts: each held by exactly one, as the ring says', async () => {
    const { store, a, b, clock } = await world();
    await a.c.start(); // alone: takes every host
    expect(a.c.heldHosts).toHaveLength(40);
    await b.c.start();
    clock.advance(1000);
    await a.c.beat(); // a sees b
    await a.c.reconcile(); // releases b's share
    await b.c.reconcile(); // takes it
    const l = await leases(store);
    for (const h of HOSTS) {
      const owner = l.get(h)!.owner;
      expect(owner).toBe(a.c.ringOwner(h));
      expect(a.c.holds(h)).toBe(owner === a.c.uuid);
      expect(b.c.holds(h)).toBe(owner === b.c.uuid);
    }
    expect(b.c.heldHosts.length).toBeGreaterThan(5);
    // what b holds changed hands once: token 2; the others are still at 1
    for (const h of b.c.heldHosts) expect(l.get(h)!.token).toBe(2);
    for (const h of a.c.heldHosts) expect(l.get(h)!.token).toBe(1);
    expect(b.seen.gained.sort()).toEqual(b.c.heldHosts.sort());
    expect(a.seen.lost.sort()).toEqual(b.c.heldHosts.sort());
  });

  it('a member whose heartbeat stops is dead after deadAfterMs (not before): the other takes its hosts with a newer token', async () => {
    const { store, a, b, clock } = await world();
    await a.c.start();
    await b.c.start();
    await a.c.beat();
    await a.c.reconcile();
    await b.c.reconcile();
    const bs = b.c.heldHosts;
    clock.advance(4000);
    await a.c.beat();
    expect(a.c.isLive(b.c.uuid)).toBe(true);
    await a.c.reconcile();
    expect(a.c.heldHosts).toHaveLength(40 - bs.length);
    clock.advance(1500);
    await a.c.beat();
    expect(a.c.isLive(b.c.uuid)).toBe(false);
    expect(a.seen.died).toEqual([b.c.uuid]);
    await a.c.reconcile();
    expect(a.c.heldHosts).toHaveLength(40);
    const l = await leases(store);
    for (const h of bs) expect(l.get(h)).toMatchObject({ owner: a.c.uuid, token: 3 });
    // b, only slow, learns at its next round that it lost them
    await b.c.reconcile();
    expect(b.c.heldHosts).toEqual([]);
    expect(b.seen.lost.sort()).toEqual([...bs].sort());
  });

  it('acquire: a free host is taken; one a live member holds is refused naming it', async () => {
    const { a, b, clock } = await world();
    await a.c.start();
    await b.c.start();
    clock.advance(500);
    await a.c.beat();
    await b.c.beat();
    const h = a.c.heldHosts[0]!;
    await expect(b.c.acquire(h)).rejects.toThrow(new RegExp(`host\\[uuid:${h}\\] is held by controller\\[uuid:${a.c.uuid}\\]`));
    expect(await a.c.acquire(h)).toBe(1);
  });

  it('work pinned on a host keeps its lease until it is done', async () => {
    const { a, b } = await world();
    await a.c.start();
    await b.c.start();
    // b's ring already has both members; a learns of b at its next heartbeat.
    const bsShare = HOSTS.filter((x) => b.c.ringOwner(x) === b.c.uuid);
    const pinned = bsShare[0]!;
    const unpin = a.c.pin(pinned);
    await a.c.beat();
    await a.c.reconcile();
    expect(a.c.holds(pinned)).toBe(true);
    expect(a.c.holds(bsShare[1]!)).toBe(false);
    unpin();
    await a.c.reconcile();
    expect(a.c.holds(pinned)).toBe(false);
  });

  it('losing the database: detached after detachAfterMs (before anyone may take over), nothing held; back: attached with its leases', async () => {
    const { a, clock } = await world();
    await a.c.start();
    a.down.on = true;
    clock.advance(2000);
    await a.c.beat();
    expect(a.c.detached).toBe(false);
    clock.advance(1500);
    await a.c.beat();
    expect(a.c.detached).toBe(true);
    expect(a.seen.detached).toBe(1);
    expect(a.c.holds(HOSTS[0]!)).toBe(false);
    expect(a.c.tokenOf(HOSTS[0]!)).toBeUndefined();
    await expect(a.c.acquire(HOSTS[0]!)).rejects.toThrow(/lost its database/);
    a.down.on = false;
    clock.advance(1000);
    await a.c.beat();
    expect(a.c.detached).toBe(false);
    expect(a.seen.attached).toBe(1);
    expect(a.c.heldHosts).toHaveLength(40);
  });

  it('a restart with the same uuid keeps its leases (same tokens: nobody else acted meanwhile)', async () => {
    const { store, a, clock } = await world();
    await a.c.start();
    await a.c.stop();
    const again = new Cluster(store, clock, silentLog(), { uuid: a.c.uuid, heartbeatMs: NEVER, reconcileMs: NEVER });
    await again.start();
    expect(again.heldHosts).toHaveLength(40);
    for (const l of (await leases(store)).values()) expect(l.token).toBe(1);
  });

  it('a release whose write fails leaves the hosts acted on (gained again), not unwatched; the next round releases them', async () => {
    const { store, a, b } = await world();
    await a.c.start();
    await b.c.start();
    const bsShare = HOSTS.filter((x) => b.c.ringOwner(x) === b.c.uuid);
    a.seen.gained.length = 0;
    a.seen.lost.length = 0;
    // a's heartbeat lands (and shows it b); the release its reconcile then writes conflicts.
    a.down.allow = 1;
    await a.c.beat();
    await a.c.reconcile();
    expect(a.c.heldHosts.sort()).toEqual([...HOSTS].sort());
    expect(a.seen.gained.sort()).toEqual([...bsShare].sort());
    expect(a.seen.lost.sort()).toEqual([...bsShare].sort()); // it had stopped, then acts again
    a.down.allow = undefined;
    await a.c.reconcile();
    expect(a.c.heldHosts).toHaveLength(HOSTS.length - bsShare.length);
    await b.c.reconcile();
    const l = await leases(store);
    for (const h of bsShare) expect(l.get(h)!.owner).toBe(b.c.uuid);
  });

  it('leases of deleted hosts are removed', async () => {
    const { store, a } = await world();
    await a.c.start();
    await store.transaction((tx) => tx.remove('host', HOSTS[0]!));
    for (let i = 0; i < 15; i++) await a.c.reconcile();
    expect((await leases(store)).has(HOSTS[0]!)).toBe(false);
    expect(a.c.holds(HOSTS[0]!)).toBe(false);
  });
});
