/**
 * The facts schedule: cron expressions (parsed by node-cron) evaluated on the injected
 * clock, one timer per process.
 */
import { describe, expect, it } from 'vitest';
import { FactsRefresher, nextCronTime, parseCron } from '../../agent/refresher.ts';
import { FakeClock } from '../fakes/clock.ts';

const at = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => new Date(y, mo - 1, d, h, mi, s).getTime();

describe('nextCronTime', () => {
  it.each([
    ['*/5 * * * *', at(2026, 1, 1, 12, 0, 30), at(2026, 1, 1, 12, 5)],
    ['*/5 * * * *', at(2026, 1, 1, 12, 5), at(2026, 1, 1, 12, 10)], // strictly after
    ['*/5 * * * *', at(2026, 1, 1, 23, 58), at(2026, 1, 2, 0, 0)],
    ['*/10 * * * * *', at(2026, 1, 1, 12, 0, 1), at(2026, 1, 1, 12, 0, 10)],
    ['0 3 * * *', at(2026, 1, 1, 4), at(2026, 1, 2, 3)],
    ['0 0 29 2 *', at(2026, 3, 1), at(2028, 2, 29)],
    ['30 9 * * 1-5', at(2026, 1, 3, 10), at(2026, 1, 5, 9, 30)], // Saturday -> Monday
    ['0 12 * * sun', at(2026, 1, 1), at(2026, 1, 4, 12)],
    ['0 0 1 jan,jul *', at(2026, 2, 1), at(2026, 7, 1)],
  ])('%s after %s', (expr, after, next) => {
    expect(new Date(nextCronTime(parseCron(expr), after))).toEqual(new Date(next));
  });

  it.each([
    ['not cron', /is not a cron expression/],
    ['0 0 L * *', /dayOfMonth may only hold numbers/],
  ])('refuses %s', (expr, error) => {
    expect(() => new FactsRefresher(expr)).toThrow(error);
  });
});

describe('FactsRefresher', () => {
  it('keeps one timer while it has members, none without', async () => {
    const clock = new FakeClock(at(2026, 1, 1, 12, 0, 30));
    const r = new FactsRefresher('*/5 * * * *', clock);
    const hits: string[] = [];
    const member = (n: string) => ({ refreshFacts: async () => void hits.push(n) });
    const a = member('a');
    const b = member('b');
    r.add(a);
    r.add(b);
    expect(clock.pending).toBe(1);
    clock.advance(270_000); // 12:05:00
    await r.tick(); // joins the running tick
    expect(hits.sort()).toEqual(['a', 'b']);
    expect(clock.pending).toBe(1); // re-armed for 12:10
    expect(new Date(r.nextAt!)).toEqual(new Date(at(2026, 1, 1, 12, 10)));
    r.remove(a);
    r.remove(b);
    expect(clock.pending).toBe(0);
  });

  it('a failing member does not stop the others', async () => {
    const r = new FactsRefresher('*/5 * * * *', new FakeClock());
    const hits: string[] = [];
    r.add({ refreshFacts: async () => { throw new Error('boom'); } });
    r.add({ refreshFacts: async () => void hits.push('ok') });
    await r.tick();
    expect(hits).toEqual(['ok']);
  });
});
