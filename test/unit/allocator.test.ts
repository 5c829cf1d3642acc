/** The allocator (controller/allocator): a pure function, tested table-driven. */
import { describe, expect, it } from 'vitest';
import { allocate, explainNoHost, type HostSnapshot, pickBest, type PlacementRequest } from '../../controller/allocator/allocator.ts';

const GiB = 1024 ** 3;
let n = 0;
function host(over: Partial<HostSnapshot> = {}): HostSnapshot {
  n++;
  return {
    uuid: over.uuid ?? `h${String(n).padStart(31, '0')}`, name: `host${n}`, zoneUuid: 'z1', clusterUuid: 'c1', state: 'Enabled', status: 'Connected',
    totalMemory: 16 * GiB, usedMemory: 0, totalCpu: 80, usedCpu: 0, vmCount: 0, reservedMemory: 0, reservedSource: 'global', ...over,
  };
}
const vm = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({ memorySize: 2 * GiB, cpuNum: 2, ...over });

describe('allocator: why a host is dropped', () => {
  it.each([
    ['Disabled', { state: 'Disabled' as const }, {}, 'not-enabled'],
    ['PreMaintenance', { state: 'PreMaintenance' as const }, {}, 'not-enabled'],
    ['Maintenance', { state: 'Maintenance' as const }, {}, 'not-enabled'],
    ['Disconnected', { status: 'Disconnected' as const }, {}, 'not-connected'],
    ['Connecting', { status: 'Connecting' as const }, {}, 'not-connected'],
    ['the source host', { uuid: 'src00000000000000000000000000000' }, { sourceHostUuid: 'src00000000000000000000000000000' }, 'source-host'],
    ['memory exactly short by one byte', { usedMemory: 14 * GiB + 1 }, {}, 'memory'],
    ['memory fits only without the reservation', { usedMemory: 13 * GiB, reservedMemory: 2 * GiB }, {}, 'memory'],
    ['CPU short', { usedCpu: 79 }, {}, 'cpu'],
    ['another cluster', { clusterUuid: 'c2' }, { clusterUuid: 'c1' }, 'out-of-scope'],
    ['another zone', { zoneUuid: 'z2' }, { zoneUuid: 'z1' }, 'out-of-scope'],
    ['not the designated host', {}, { hostUuid: 'other000000000000000000000000000' }, 'out-of-scope'],
  ])('%s', (_name, h, r, reason) => {
    const p = allocate([host(h)], vm(r));
    expect(p.candidates).toEqual([]);
    if (reason === 'out-of-scope') expect(p.outOfScope).toBe(1);
    else expect(p.dropped.map((d) => d.reason)).toEqual([reason]);
  });

  it.each([
    ['exactly enough memory after the reservation', { usedMemory: 12 * GiB, reservedMemory: 2 * GiB }],
    ['exactly enough CPU', { usedCpu: 78 }],
    ['Disabled is refused but Enabled+Connected in another cluster with no scope is fine', { clusterUuid: 'c9' }],
  ])('takes a host with %s', (_name, h) => {
    expect(allocate([host(h)], vm()).candidates).toHaveLength(1);
  });
});

describe('allocator: order', () => {
  it('least VMs first, then most free memory after the reservation, then uuid', () => {
    const a = host({ uuid: 'a'.repeat(32), vmCount: 3 });
    const b = host({ uuid: 'b'.repeat(32), vmCount: 1, usedMemory: 4 * GiB });
    const c = host({ uuid: 'c'.repeat(32), vmCount: 1, usedMemory: 2 * GiB, reservedMemory: 3 * GiB });
    const d = host({ uuid: 'd'.repeat(32), vmCount: 1, usedMemory: 2 * GiB });
    const e = host({ uuid: 'e'.repeat(32), vmCount: 1, usedMemory: 2 * GiB });
    const order = allocate([a, b, c, d, e], vm()).candidates.map((h) => h.uuid[0]);
    expect(order).toEqual(['d', 'e', 'b', 'c', 'a']);
    expect(pickBest([a, b, c, d, e], vm())?.uuid[0]).toBe('d');
  });

  it('pickBest agrees with the sorted list on random snapshots', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < 200; round++) {
      const hosts = Array.from({ length: 20 }, () => host({
        vmCount: Math.floor(rnd() * 4), usedMemory: Math.floor(rnd() * 16) * GiB, usedCpu: Math.floor(rnd() * 80),
        state: rnd() < 0.1 ? 'Disabled' : 'Enabled', status: rnd() < 0.1 ? 'Disconnected' : 'Connected', reservedMemory: Math.floor(rnd() * 2) * GiB,
      }));
      const r = vm({ memorySize: Math.ceil(rnd() * 4) * GiB, cpuNum: Math.ceil(rnd() * 8) });
      expect(pickBest(hosts, r)?.uuid).toBe(allocate(hosts, r).candidates[0]?.uuid);
    }
  });
});

describe('allocator: explanations', () => {
  it('names each dropped host with its reason and figures', () => {
    const p = allocate([host({ name: 'full', usedMemory: 15 * GiB, reservedMemory: 512 * 1024 ** 2, reservedSource: 'cluster' }), host({ name: 'off', state: 'Disabled' })], vm());
    const text = explainNoHost(p, vm());
    expect(text).toMatch(/1 has not enough free memory; 1 is not Enabled/);
    expect(text).toMatch(/name:full\] has not enough free memory \(free 1G of 16G, reserved 512M by the cluster level, the VM needs 2G\)/);
    expect(text).toMatch(/name:off\] is not Enabled \(state:Disabled\)/);
  });
  it('says when the scope holds no host', () => {
    expect(explainNoHost(allocate([host({ clusterUuid: 'c2' })], vm({ clusterUuid: 'c1' })), vm())).toBe('no host in the requested scope');
    expect(explainNoHost(allocate([], vm()), vm())).toBe('there are no hosts');
  });
});
