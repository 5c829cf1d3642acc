/**
 * The agent's replay fence (protocol/replay-fence.ts has the reasoning) kept in
 * `<state dir>/replay-fence.json` `{notAfter}`, written durably (temp + fsync + rename).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReplayFence } from '../protocol/replay-fence.ts';
import type { Clock } from './clock.ts';
import { CoalescingWriter } from './fsutil.ts';

export { FUTURE_SLACK_MS, ReplayFence } from '../protocol/replay-fence.ts';
export const FENCE_FILE = 'replay-fence.json';

export async function openReplayFence(dir: string, clock: Clock): Promise<ReplayFence> {
  let before = 0;
  try {
    const raw = JSON.parse(await readFile(join(dir, FENCE_FILE), 'utf8')) as { notAfter?: unknown };
    if (typeof raw.notAfter === 'number' && Number.isFinite(raw.notAfter)) before = raw.notAfter;
  } catch (err) {
    // Absent on a first start. Unreadable: no better knowledge than the start time, which
    // still covers every request whose clock was not ahead.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
  }
  let latest = before;
  // The write reads `latest` when it starts, so it holds the value asked for or more.
  const writer = new CoalescingWriter(join(dir, FENCE_FILE), () => JSON.stringify({ notAfter: latest }));
  return new ReplayFence(() => clock.now(), clock.now(), before, {
    write: (notAfter) => {
      latest = Math.max(latest, notAfter);
      return writer.write();
    },
    flush: () => writer.flush(),
  });
}
