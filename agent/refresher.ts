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
 */
import cron from 'node-cron';
import { type Clock, systemClock } from './clock.ts';
import { createLimiter } from './limiter.ts';
import type { Logger } from './log.ts';

export interface Refreshable {
  refreshFacts(): Promise<unknown>;
}

/** Every 5 minutes, at second 0. */
export const DEFAULT_FACTS_CRON = '*/5 * * * *';

export interface CronFields {
  second: number[];
  minute: number[];
  hour: number[];
  dayOfMonth: number[];
  month: number[];
  dayOfWeek: number[];
}

/** Parses with node-cron; refuses what nextCronTime cannot evaluate (L, W, #). */
export function parseCron(expression: string): CronFields {
  if (!cron.validate(expression)) throw new Error(`facts schedule [${expression}] is not a cron expression`);
  const p = cron.parse(expression);
  const nums = (name: keyof CronFields, xs: (number | string)[]) => {
    if (xs.some((x) => typeof x !== 'number')) throw new Error(`facts schedule [${expression}]: ${name} may only hold numbers (no L, W or #)`);
    return [...new Set((xs as number[]).map((x) => (name === 'dayOfWeek' ? x % 7 : x)))].sort((a, b) => a - b);
  };
  return {
    second: nums('second', p.second), minute: nums('minute', p.minute), hour: nums('hour', p.hour),
    dayOfMonth: nums('dayOfMonth', p.dayOfMonth), month: nums('month', p.month), dayOfWeek: nums('dayOfWeek', p.dayOfWeek),
  };
}

/** The first time strictly after `afterMs` (local time) that matches; throws if none within 8 years. */
export function nextCronTime(f: CronFields, afterMs: number): number {
  const start = new Date(Math.floor(afterMs / 1000) * 1000 + 1000);
  let day = new Date(start.getFullYear(), start.getMonth(), start.getDate());
  for (let i = 0; i < 366 * 8; i++) {
    if (f.month.includes(day.getMonth() + 1) && f.dayOfMonth.includes(day.getDate()) && f.dayOfWeek.includes(day.getDay())) {
      for (const h of f.hour) {
        for (const m of f.minute) {
          for (const s of f.second) {
            const t = new Date(day.getFullYear(), day.getMonth(), day.getDate(), h, m, s).getTime();
            if (t > afterMs) return t;
          }
        }
      }
    }
    day = new Date(day.getFullYear(), day.getMonth(), day.getDate() + 1);
  }
  throw new Error('the facts schedule never fires');
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
