/**
 * protocol/backoff.ts: the one backoff policy of both sides (the CLI, the agent's
 * registration, certificate and facts-push retries, the libvirt event stream's restarts, the
 * login throttle's spacing).
 */
import { describe, expect, it } from 'vitest';
import { type Backoff, backoffDelay, BackoffSequence } from '../../protocol/backoff.ts';

const policy = (over: Partial<Backoff> = {}): Backoff => ({ initialMs: 500, maxMs: 30_000, ...over });

describe('backoffDelay', () => {
  it.each([
    [0, 500],
    [1, 1_000],
    [2, 2_000],
    [5, 16_000],
    [6, 30_000], // 32 s capped
    [7, 30_000],
    [1_000, 30_000], // no overflow, no Infinity
  ])('attempt %i waits %i ms without jitter', (attempt, ms) => {
    expect(backoffDelay(policy(), attempt)).toBe(ms);
  });

  it.each([
    [0, 0.75 * 2_000],
    [0.5, 2_000],
    [0.999999, 1.25 * 2_000],
  ])('jitter 0.25 with random() = %f spreads +-25%% around the base', (r, ms) => {
    expect(backoffDelay(policy({ jitter: 0.25 }), 2, () => r)).toBeCloseTo(ms, 0);
  });

  it('keeps a jittered wait within its bounds even at the cap', () => {
    for (let i = 0; i < 200; i++) {
      const ms = backoffDelay(policy({ jitter: 0.25 }), 20);
      expect(ms).toBeGreaterThanOrEqual(0.75 * 30_000);
      expect(ms).toBeLessThanOrEqual(1.25 * 30_000);
    }
  });
});

describe('BackoffSequence', () => {
  it('counts attempts, doubles to the cap and starts again after reset()', () => {
    const s = new BackoffSequence({ initialMs: 30_000, maxMs: 120_000 });
    expect([s.next(), s.next(), s.next(), s.next()]).toEqual([30_000, 60_000, 120_000, 120_000]);
    expect(s.attempts).toBe(4);
    s.reset();
    expect(s.attempts).toBe(0);
    expect(s.next()).toBe(30_000);
  });

  it('uses the random source it was given for jitter', () => {
    const s = new BackoffSequence({ initialMs: 1_000, maxMs: 8_000, jitter: 0.5 }, () => 0);
    expect([s.next(), s.next()]).toEqual([500, 1_000]);
  });
});
