/**
 * The progress line shown on a terminal while a job runs:
 * `[#####.....] 2/5 run-playbook: TASK [agent : copy agent]`, redrawn in place with `\r`.
 * Every field of the job's `progress` may be absent; the line shows what there is.
 */

export interface Progress {
  current?: number;
  total?: number;
  step?: string;
  message?: string;
}

const BAR = 10;

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** Reads `progress` out of a 202 job body; undefined when there is none worth showing. */
export function progressOf(body: unknown): Progress | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const p = (body as { progress?: unknown }).progress;
  if (typeof p !== 'object' || p === null) return undefined;
  const r = p as Record<string, unknown>;
  const out: Progress = {};
  if (num(r.current) !== undefined) out.current = num(r.current);
  if (num(r.total) !== undefined) out.total = num(r.total);
  if (str(r.step) !== undefined) out.step = str(r.step);
  if (str(r.message) !== undefined) out.message = str(r.message);
  return Object.keys(out).length ? out : undefined;
}

/** The line without `\r`, cut to `width` characters so a redraw never wraps. */
export function formatProgress(p: Progress | undefined, width = 80): string {
  const parts: string[] = [];
  if (p?.total !== undefined && p.total > 0) {
    const cur = Math.max(0, Math.min(p.current ?? 0, p.total));
    const filled = Math.round((cur / p.total) * BAR);
    parts.push(`[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}] ${p.current ?? 0}/${p.total}`);
  } else if (p?.current !== undefined) {
    parts.push(`${p.current}/?`);
  }
  let text = parts.join(' ');
  if (p?.step) text += `${text ? ' ' : ''}${p.step}`;
  if (p?.message) text += `${text ? ': ' : ''}${p.message}`;
  if (!text) text = 'working...';
  // One line only: a message may carry newlines (Ansible output).
  text = text.replace(/\s*\n\s*/g, ' ');
  const max = Math.max(10, width - 1);
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** Draws and clears the line on a writable stream (the CLI's stderr). */
export class ProgressLine {
  private shown = 0;
  constructor(
    private readonly out: { write(s: string): unknown },
    private readonly width = 80,
  ) {}

  draw(p: Progress | undefined): void {
    const line = formatProgress(p, this.width);
    // Pad over what the previous, longer line left behind.
    this.out.write(`\r${line}${' '.repeat(Math.max(0, this.shown - line.length))}`);
    this.shown = line.length;
  }

  clear(): void {
    if (this.shown === 0) return;
    this.out.write(`\r${' '.repeat(this.shown)}\r`);
    this.shown = 0;
  }
}
