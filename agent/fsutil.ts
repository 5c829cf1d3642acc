/** Durable small-file writes: temp file + fsync + rename, so a crash leaves the old or the new file, never half of one. */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Serialises writes of one file and coalesces bursts: while a write is in flight, later
 * requests share the one write that follows it (which saves the newest content).
 */
export class CoalescingWriter {
  private inFlight: Promise<void> | undefined;
  private next: Promise<void> | undefined;

  constructor(private readonly path: string, private readonly content: () => string, private readonly mode = 0o600) {}

  write(): Promise<void> {
    if (this.next) return this.next;
    if (!this.inFlight) {
      this.inFlight = writeFileAtomic(this.path, this.content(), this.mode).finally(() => {
        this.inFlight = undefined;
      });
      return this.inFlight;
    }
    const after = this.inFlight.catch(() => {});
    this.next = after.then(() => {
      this.next = undefined;
      return this.write();
    });
    return this.next;
  }

  /** Resolves when nothing is being written. */
  async flush(): Promise<void> {
    while (this.inFlight || this.next) await (this.next ?? this.inFlight)!.catch(() => {});
  }
}

/**
 * `mkdir -p`, by hand: Node 20's `mkdir(..., {recursive: true})` spins forever on some
 * paths (under /proc, for one), and an unusable --state-dir must fail with a clear line.
 */
export async function ensureDir(dir: string, mode = 0o700, depth = 0): Promise<void> {
  try {
    await mkdir(dir, { mode });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir || depth > 64) throw err;
    await ensureDir(parent, mode, depth + 1);
    try {
      await mkdir(dir, { mode });
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code !== 'EEXIST') throw err2;
    }
  }
}
