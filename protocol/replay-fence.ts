/**
 * Replays across a restart, for whoever checks signed requests (the agent for commands, the
 * controller for agent pushes). The ReplayGuard (agent.ts) remembers nonces in memory, so
 * right after a restart a signed request captured earlier would pass again while its
 * timestamp is within MAX_SKEW_MS. The fence refuses every request signed before this
 * process could have seen it:
 *
 * 1. A timestamp before this process started is refused. A request the previous process
 *    accepted at its time t, signed at T <= t, has T <= t < start: refused now. Cost: a
 *    signer whose clock is d ms behind ours is refused for d ms after a restart
 *    (d <= MAX_SKEW_MS); it retries with a fresh signature, as its retries do anyway.
 * 2. The other case is a request signed "in the future" (the signer's clock ahead of ours,
 *    T > t), which could still be ahead of our start. Before accepting such a request the
 *    fence makes `notAfter` (>= T) durable through its store, and a later process refuses
 *    every T <= notAfter. The value is rounded up by FUTURE_SLACK_MS so a signer that runs
 *    steadily ahead costs one write a second, not one per request; its first requests after
 *    a restart wait for at most that slack longer. Clocks in step (both on NTP) never write
 *    at all: network latency makes T < t.
 *
 * Limit: our wall clock stepping BACKWARDS across a restart (not slewed by NTP) reopens a
 * window as long as the step. Nonces are not persisted: that would cost a durable write per
 * request.
 */
export const FUTURE_SLACK_MS = 1_000;

/** Where the fence lives: the agent's state dir, the controller's store. */
export interface FenceStore {
  /** Makes `notAfter` durable (resolves once it is); a later call may carry a larger value. */
  write(notAfter: number): Promise<void>;
  flush(): Promise<void>;
}

export class ReplayFence {
  /** What this process asked to be written, and what is known to be durable. */
  private target: number;
  private durable: number;

  /**
   * `startedAt`: this process's start on `now`'s clock; `before`: the highest timestamp a
   * previous process may have accepted (what the store held at start).
   */
  constructor(
    private readonly now: () => number,
    readonly startedAt: number,
    private readonly before: number,
    private readonly store: FenceStore,
  ) {
    this.target = before;
    this.durable = before;
  }

  /** False for a request signed before this process could have seen it (refuse it: 401). */
  admits(ts: number): boolean {
    return ts >= this.startedAt && ts > this.before;
  }

  /**
   * For a timestamp ahead of our clock: resolves once a later process will refuse it;
   * rejects when that cannot be written (the request must then be refused).
   */
  async cover(ts: number): Promise<void> {
    if (ts <= this.now() || ts <= this.durable) return;
    const want = Math.max(this.target, ts + FUTURE_SLACK_MS);
    this.target = want;
    await this.store.write(want);
    this.durable = Math.max(this.durable, want);
  }

  flush(): Promise<void> {
    return this.store.flush();
  }
}
