/**
 * The consistent hash ring that shares hosts among the live controllers (ZStack's
 * ResourceDestinationMaker, zstack-notes.md section 8): each controller stands at `vnodes`
 * points of a 32-bit circle, and a host belongs to the first point at or after its own hash.
 * A controller joining or leaving moves only the hosts between its points and their
 * predecessors (about 1/N of the fleet), and virtual nodes keep the shares even (with 3
 * controllers and 100 points each, every share is within a few percent of a third: see
 * test/unit/ring.test.ts).
 *
 * Pure: same members, same answer, on every controller. The ring only says who *should*
 * own a host; the lease (cluster.ts) says who does.
 */
import { createHash } from 'node:crypto';

export const DEFAULT_VNODES = 100;

function point(key: string): number {
  return createHash('md5').update(key).digest().readUInt32BE(0);
}

export class Ring {
  private readonly points: number[];
  private readonly owners: string[];

  constructor(readonly members: readonly string[], vnodes = DEFAULT_VNODES) {
    const all: [number, string][] = [];
    for (const m of new Set(members)) for (let i = 0; i < vnodes; i++) all.push([point(`${m}#${i}`), m]);
    // Ties (two members at one point) go to the smaller uuid, so every controller agrees.
    all.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    this.points = all.map((p) => p[0]);
    this.owners = all.map((p) => p[1]);
  }

  get size(): number {
    return new Set(this.owners).size;
  }

  /** The member that should own `key` (a host uuid); undefined for an empty ring. */
  ownerOf(key: string): string | undefined {
    if (this.points.length === 0) return undefined;
    const h = point(key);
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === this.points.length ? 0 : lo];
  }
}
