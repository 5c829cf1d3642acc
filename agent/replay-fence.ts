/**
 * Replays across an agent restart. The ReplayGuard (protocol/agent.ts) remembers nonces in
 * memory, so right after a restart a signed request captured earlier would pass again while
 * its timestamp is within MAX_SKEW_MS. The fence refuses every request signed before this
 * agent could have seen it:
 *
 * 1. A timestamp before this process started is refused. A request the previous process
 *    accepted at its time t, signed at T <= t, has T <= t < start: refused now. Cost: a
 *    controller whose clock is d ms behind ours is refused for d ms after an agent start
 *    (d <= MAX_SKEW_MS); it retries with a fresh signature, as its reconnect does anyway.
 * 2. The other case is a request signed "in the future" (the controller's clock ahead of
 *    ours, T > t), which could still be ahead of our start. Before accepting such a request
 *    the agent writes `<state dir>/replay-fence.json` `{notAfter}` (>= T, durable: temp +
 *    fsync + rename) and a later process refuses every T <= notAfter. The write is rounded up
 *    by FUTURE_SLACK_MS so a controller that runs steadily ahead costs one write a second,
 *    not one per request; its first requests after an agent restart wait for at most that
 *    slack longer. Clocks in step (controller and agent on NTP) never write at all: network
 *    latency makes T < t.
 *
 * Limit: the agent's wall clock stepping BACKWARDS across a restart (not slewed by NTP)
 * reopens a window as long as the step. Nonces are not persisted: that would cost a durable
 * write per request.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from './clock.ts';
import { CoalescingWriter } from './fsutil.ts';

export const FENCE_FILE = 'replay-fence.json';
export const FUTURE_SLACK_MS = 1_000;

export class ReplayFence {
  /** Highest timestamp a previous process may have accepted (from the file). */
  private readonly before: number;
  /** What this process asked to be written, and what is known to be on disk. */
  private target: number;
  private durable: number;
  private readonly writer: CoalescingWriter;

  private constructor(dir: string, private readonly clock: Clock, readonly startedAt: number, before: number) {
    this.before = before;
    this.target = before;
    this.durable = before;
    this.writer = new CoalescingWriter(join(dir, FENCE_FILE), () => JSON.stringify({ notAfter: this.target }));
  }

  static async open(dir: string, clock: Clock): Promise<ReplayFence> {
    let before = 0;
    try {
      const raw = JSON.parse(await readFile(join(dir, FENCE_FILE), 'utf8')) as { notAfter?: unknown };
      if (typeof raw.notAfter === 'number' && Number.isFinite(raw.notAfter)) before = raw.notAfter;
    } catch (err) {
      // Absent on a first start. Unreadable: no better knowledge than the start time, which
      // still covers every request whose clock was not ahead.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
    }
    return new ReplayFence(dir, clock, clock.now(), before);
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
    if (ts <= this.clock.now() || ts <= this.durable) return;
    const want = Math.max(this.target, ts + FUTURE_SLACK_MS);
    this.target = want;
    // The write this returns reads `target` when it starts, so it holds `want` or more.
    await this.writer.write();
    this.durable = Math.max(this.durable, want);
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}
