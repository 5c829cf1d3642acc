/**
 * The highest controller lease token this agent has seen (protocol/agent.ts, "Fencing"), kept
 * in `<state dir>/lease-fence.json` `{token}`, written durably (temp + fsync + rename) before
 * the request that raised it is served: after a restart the agent still refuses the
 * controllers that lost the host. A token only grows; requests without one (a single
 * controller, or an older controller) are not fenced.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CoalescingWriter } from './fsutil.ts';

export const LEASE_FENCE_FILE = 'lease-fence.json';

export class LeaseFence {
  private readonly writer: CoalescingWriter | undefined;

  /** `dir` undefined: in memory only (tests). */
  constructor(private highest = 0, dir?: string) {
    this.writer = dir === undefined ? undefined : new CoalescingWriter(join(dir, LEASE_FENCE_FILE), () => JSON.stringify({ token: this.highest }));
  }

  static async open(dir: string): Promise<LeaseFence> {
    let highest = 0;
    try {
      const raw = JSON.parse(await readFile(join(dir, LEASE_FENCE_FILE), 'utf8')) as { token?: unknown };
      if (typeof raw.token === 'number' && Number.isSafeInteger(raw.token) && raw.token >= 0) highest = raw.token;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
    }
    return new LeaseFence(highest, dir);
  }

  get token(): number {
    return this.highest;
  }

  /**
   * Admits a request carrying `token`: refused (false) when older than the highest seen; a
   * newer one is recorded on disk before this resolves.
   */
  async admit(token: number): Promise<boolean> {
    if (token < this.highest) return false;
    if (token > this.highest) {
      this.highest = token;
      await this.writer?.write();
    }
    return true;
  }

  async flush(): Promise<void> {
    await this.writer?.flush();
  }
}
