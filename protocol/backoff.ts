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
