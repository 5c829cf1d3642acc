/**
 * Outgoing-migration markers of a real host: `<state dir>/outgoing-migrations.json`
 * `{<vm uuid>: {to, resume}}`, written atomically BEFORE a VM is sent and removed after the
 * source forgot it. A marker found at start means a previous agent process was sending the
 * VM: whether the destination runs it is unknown until the controller resolves it, so the
 * agent reports it Paused with migratingTo and never resumes it on its own.
 * (The simulator keeps the same markers inside its own host file, next to the VMs.)
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CoalescingWriter } from './fsutil.ts';

export const OUTGOING_FILE = 'outgoing-migrations.json';

export interface OutgoingMarker {
  /** The destination agent URL. */
  to: string;
  /** What the VM was before: what a migration that did not happen puts back. */
  resume: 'Running' | 'Paused';
}

export class OutgoingMarkers {
  private readonly writer: CoalescingWriter;

  private constructor(dir: string, private readonly markers: Map<string, OutgoingMarker>) {
    this.writer = new CoalescingWriter(join(dir, OUTGOING_FILE), () => JSON.stringify(Object.fromEntries(this.markers)));
  }

  static async open(dir: string): Promise<OutgoingMarkers> {
    const path = join(dir, OUTGOING_FILE);
    const markers = new Map<string, OutgoingMarker>();
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const raw = JSON.parse(text) as Record<string, OutgoingMarker>;
      for (const [uuid, m] of Object.entries(raw)) {
        if (m && typeof m.to === 'string' && (m.resume === 'Running' || m.resume === 'Paused')) markers.set(uuid, { to: m.to, resume: m.resume });
      }
    }
    return new OutgoingMarkers(dir, markers);
  }

  get(uuid: string): OutgoingMarker | undefined {
    return this.markers.get(uuid);
  }

  entries(): [string, OutgoingMarker][] {
    return [...this.markers];
  }

  /** Resolves once the marker is on disk. */
  set(uuid: string, m: OutgoingMarker): Promise<void> {
    this.markers.set(uuid, m);
    return this.writer.write();
  }

  delete(uuid: string): Promise<void> {
    if (!this.markers.delete(uuid)) return Promise.resolve();
    return this.writer.write();
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}
