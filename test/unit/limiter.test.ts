/**
 * agent/limiter.ts, the agent's one concurrency limiter (a fleet's registrations and starts,
 * the facts refresh, libvirt's dumpxml while listing). The controller's is controller/semaphore.ts.
 */
import { describe, expect, it } from 'vitest';
import { createLimiter, unlimited } from '../../agent/limiter.ts';

const tick = () => new Promise((r) => setImmediate(r));

describe('createLimiter', () => {
  it.each([1, 3, 8])('runs at most %i tasks at once, in the order they came', async (n) => {
    const limit = createLimiter(n);
    let active = 0;
    let peak = 0;
    const started: number[] = [];
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => limit.run(async () => {
      started.push(i);
      peak = Math.max(peak, ++active);
      await tick();
      active--;
      return i * 2;
    })));
    expect(peak).toBe(n);
    expect(started).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
  });

  it('a failing task gives its slot to the next one and its error to its caller', async () => {
    const limit = createLimiter(1);
    const a = limit.run(async () => {
      await tick();
      throw new Error('boom');
    });
    const b = limit.run(async () => 'b ran');
    await expect(a).rejects.toThrow('boom');
    await expect(b).resolves.toBe('b ran');
  });

  it('unlimited runs everything at once', async () => {
    let active = 0;
    let peak = 0;
    await Promise.all(Array.from({ length: 10 }, () => unlimited.run(async () => {
      peak = Math.max(peak, ++active);
      await tick();
      active--;
    })));
    expect(peak).toBe(10);
  });
});
