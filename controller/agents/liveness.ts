/**
 * Liveness as a pure function (STYLE.md 4, Kubernetes' tryUpdateNodeHealth): whether a host
 * counts as alive depends only on when it was last heard from, the time now, the deadline,
 * and a grace period that starts when this controller started watching it (so a restarted
 * controller never declares hosts dead for silence it did not witness).
 */
export interface LivenessInput {
  now: number;
  /** Last heartbeat or answer, or undefined when never heard from. */
  lastSeen: number | undefined;
  /** When this controller began watching (start-up, or channel open). */
  watchingSince: number;
  deadlineMs: number;
  graceMs: number;
}

export type Liveness = 'alive' | 'silent' | 'grace';

export function liveness(i: LivenessInput): Liveness {
  if (i.now < i.watchingSince + i.graceMs) {
    return i.lastSeen !== undefined && i.now - i.lastSeen <= i.deadlineMs ? 'alive' : 'grace';
  }
  const since = Math.max(i.lastSeen ?? -Infinity, i.watchingSince);
  return i.now - since <= i.deadlineMs ? 'alive' : 'silent';
}
