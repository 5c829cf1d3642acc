import { describe, expect, it } from 'vitest';
import { Ring } from '../../controller/cluster/ring.ts';

const hosts = Array.from({ length: 30_000 }, (_, i) => `host-${i.toString(16).padStart(8, '0')}`);

describe('Ring', () => {
  it('an empty ring owns nothing; a ring of one owns everything', () => {
    expect(new Ring([]).ownerOf('h')).toBeUndefined();
    const one = new Ring(['a']);
    expect(hosts.slice(0, 100).every((h) => one.ownerOf(h) === 'a')).toBe(true);
  });

  it('does not depend on the order the members are listed in', () => {
    const a = new Ring(['c1', 'c2', 'c3']);
    const b = new Ring(['c3', 'c1', 'c2', 'c1']);
    expect(hosts.every((h) => a.ownerOf(h) === b.ownerOf(h))).toBe(true);
  });

  it.each([2, 3, 5])('shares %i ways evenly (each within 15%% of 1/N)', (n) => {
    const members = Array.from({ length: n }, (_, i) => `controller-${i}`);
    const ring = new Ring(members);
    const count = new Map<string, number>();
    for (const h of hosts) count.set(ring.ownerOf(h)!, (count.get(ring.ownerOf(h)!) ?? 0) + 1);
    for (const m of members) expect(Math.abs(count.get(m)! / hosts.length - 1 / n)).toBeLessThan(0.15 / n);
  });

  it('a member leaving moves only its own hosts; joining moves only hosts to the newcomer', () => {
    const three = new Ring(['a', 'b', 'c']);
    const two = new Ring(['a', 'b']);
    let moved = 0;
    for (const h of hosts) {
      const before = three.ownerOf(h)!;
      const after = two.ownerOf(h)!;
      if (before !== 'c') expect(after).toBe(before);
      else moved++;
    }
    expect(moved / hosts.length).toBeGreaterThan(0.25);
    expect(moved / hosts.length).toBeLessThan(0.42);
    // and back: joining c takes exactly those hosts
    for (const h of hosts) if (two.ownerOf(h) !== three.ownerOf(h)) expect(three.ownerOf(h)).toBe('c');
  });
});
