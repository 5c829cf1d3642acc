/**
 * One facts-refresh schedule per process, however many agents run in it: a fleet process
 * with 2,500 agents has one timer, not 2,500. Each tick refreshes every member with
 * bounded concurrency; an agent pushes FactsPush only when its facts changed, and retries
 * a failed push later.
 *
 * The schedule is a cron expression (default every 5 minutes) parsed and validated by
 * node-cron; the firing runs on the injected Clock. Why not node-cron's own runner: it
 * formats every candidate time with Intl.DateTimeFormat, which pages in ~8 MB of ICU data
 * (measured: an idle agent 61 -> 68 MB RSS), and a clock-driven timer lets tests move time.
 * Supported: numeric fields (lists, ranges, steps, names); day-of-month AND day-of-week must
 * both match, as in node-cron; times are the host's local time.
 *
 * The evaluation is protocol/cron.ts's algorithm (nextCronTime / zonedTime there), run here
 * on the host's local time through Date's local getters instead of an Intl.DateTimeFormat
 * for a named zone. Why not call protocol/cron.ts: it reads wall-clock fields with
 * Intl.DateTimeFormat (and finding the local zone's name takes one more), and the first one
 * pages in ICU's locale and zone data. Measured on Node 20: a bare process 40.4 -> 47.9 MB
 * (`new Intl.DateTimeFormat().resolvedOptions()`), against +0.6 MB for Date's local getters
 * (the same ICU zone rules, a smaller part of the data); the bundled agent idled ~7 MB
 * higher for it (bench/agent-rss.bench.ts: 59.5 -> 52.5 MB for one nobody talks to, 61.9 ->
 * 54.9 MB registered and connected; the target is < 60 MB). Same results: the same
 * search, the same rules at a DST change (a skipped wall-clock time does not fire that day;
 * across a fold, the earlier instant).
 */
import cron from 'node-cron';
import { cronFields, type CronFields } from '../protocol/cron.ts';
import { type Clock, systemClock } from './clock.ts';
import { createLimiter } from './limiter.ts';
import type { Logger } from './log.ts';

export interface Refreshable {
  refreshFacts(): Promise<unknown>;
}

/** Every 5 minutes, at second 0. */
export const DEFAULT_FACTS_CRON = '*/5 * * * *';

export type { CronFields };

/** Parses with node-cron; refuses what protocol/cron.ts cannot evaluate (L, W, #). */
export function parseCron(expression: string): CronFields {
  if (!cron.validate(expression)) throw new Error(`facts schedule [${expression}] is not a cron expression`);
  return cronFields(cron.parse(expression), `facts schedule ${expression}`);
}

/** The wall-clock fields of `ms` in the host's local time. */
function wall(ms: number): { y: number; mo: number; d: number; h: number; mi: number; s: number } {
  const t = new Date(ms);
  return { y: t.getFullYear(), mo: t.getMonth(), d: t.getDate(), h: t.getHours(), mi: t.getMinutes(), s: t.getSeconds() };
}

/** The instant a local wall-clock time names (the earlier one across a DST fold): protocol/cron.ts zonedTime. */
function localTime(y: number, mo: number, d: number, h: number, mi: number, s: number): number {
  const guess = Date.UTC(y, mo, d, h, mi, s);
  const offsetAt = (ms: number) => {
    const w = wall(ms);
    return Date.UTC(w.y, w.mo, w.d, w.h, w.mi, w.s) - Math.floor(ms / 1000) * 1000;
  };
  const first = guess - offsetAt(guess);
  const second = guess - offsetAt(first);
  return Math.min(first, second);
}

/**
 * The first time strictly after `afterMs` (the host's local time) that matches; throws when
 * nothing matches within 8 years. protocol/cron.ts nextCronTime on local time (see above).
 */
export function nextCronTime(f: CronFields, afterMs: number): number {
  const start = wall(afterMs);
  for (let i = 0; i < 366 * 8; i++) {
    const day = new Date(Date.UTC(start.y, start.mo, start.d + i));
    const [y, mo, d] = [day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate()];
    if (!f.month.includes(mo + 1) || !f.dayOfMonth.includes(d) || !f.dayOfWeek.includes(day.getUTCDay())) continue;
    const today = i === 0;
    for (const h of f.hour) {
      if (today && h < start.h) continue;
      for (const mi of f.minute) {
        if (today && h === start.h && mi < start.mi) continue;
        for (const s of f.second) {
          const t = localTime(y, mo, d, h, mi, s);
          const w = wall(t);
          if (t > afterMs && w.h === h && w.mi === mi) return t;
        }
      }
    }
  }
  throw new Error('the cron expression never fires');
}

export class FactsRefresher {
  private readonly members = new Set<Refreshable>();
  private readonly fields: CronFields;
  private cancel: (() => void) | undefined;
  private running: Promise<void> | undefined;

  constructor(
    readonly expression = DEFAULT_FACTS_CRON,
    private readonly clock: Clock = systemClock,
    private readonly log?: Logger,
    private readonly concurrency = 16,
  ) {
    this.fields = parseCron(expression);
  }

  add(a: Refreshable): void {
    this.members.add(a);
    if (!this.cancel) this.arm();
  }

  remove(a: Refreshable): void {
    this.members.delete(a);
    if (this.members.size === 0) {
      this.cancel?.();
      this.cancel = undefined;
    }
  }

  get size(): number {
    return this.members.size;
  }

  /** When the next tick fires (ms since epoch), or undefined when idle. */
  nextAt: number | undefined;

  private arm(): void {
    const now = this.clock.now();
    this.nextAt = nextCronTime(this.fields, now);
    this.cancel = this.clock.setTimer(this.nextAt - now, () => {
      this.cancel = undefined;
      void this.tick();
      if (this.members.size > 0) this.arm();
    });
  }

  /** Refreshes every member now (the scheduled tick; also callable by tests). A tick still running is joined, not doubled. */
  tick(): Promise<void> {
    this.running ??= (async () => {
      const limit = createLimiter(this.concurrency);
      await Promise.all(
        [...this.members].map((a) =>
          limit.run(() => a.refreshFacts()).catch((err) => this.log?.warn({ err: (err as Error).message }, 'facts refresh failed')),
        ),
      );
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }
}

let processDefault: FactsRefresher | undefined;
/** The process-wide refresher on the default schedule and the system clock. */
export function processRefresher(log?: Logger): FactsRefresher {
  return (processDefault ??= new FactsRefresher(DEFAULT_FACTS_CRON, systemClock, log));
}
