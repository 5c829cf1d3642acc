/**
 * The one backoff policy, shared by the controller and the agent (they share only protocol/):
 * capped exponential, `initialMs x 2^attempt` up to `maxMs`, optionally jittered so that a
 * fleet retrying together does not come back in step. Callers keep their own loop and sleep
 * on their own (injected) clock; this only says how long.
 */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  /** 0: exact; 0.25: +-25% (the mean stays the same). */
  jitter?: number;
}

/** The wait before retry number `attempt` (0 for the first retry). */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  // 2^30 is plenty: the cap is reached long before, and the exponent stays a safe integer.
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 30));
  const j = b.jitter ?? 0;
  return j > 0 ? base * (1 - j + random() * 2 * j) : base;
}

/**
 * The policy with its attempt count, for retries whose state lives between callbacks (a
 * timer re-armed after each failure) rather than in one loop: `next()` is the wait before the
 * next retry and counts it, `reset()` after a success starts again from `initialMs`.
 */
export class BackoffSequence {
  private attempt = 0;

  constructor(readonly policy: Backoff, private readonly random: () => number = Math.random) {}

  next(): number {
    return backoffDelay(this.policy, this.attempt++, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }

  /** Retries counted since the last reset. */
  get attempts(): number {
    return this.attempt;
  }
}
