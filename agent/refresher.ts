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
 * The evaluation is protocol/cron.ts's nextCronTime on its local clock face (localWall:
 * Date's local getters), not on a named zone's Intl.DateTimeFormat, whose first use pages in
 * ICU's locale and zone data. Measured on Node 20: a bare process 40.4 -> 47.9 MB
 * (`new Intl.DateTimeFormat().resolvedOptions()`), against +0.6 MB for Date's local getters;
 * the bundled agent idled ~7 MB higher for it (bench/agent-rss.bench.ts: 59.5 -> 52.5 MB for
 * one nobody talks to; the target is < 60 MB). The same rules at a DST change (a skipped
 * wall-clock time does not fire that day; across a fold, the earlier instant).
 */
import cron from 'node-cron';
import { cronFields, type CronFields, localWall, nextCronTime as nextZoned } from '../protocol/cron.ts';
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

/**
 * The first time strictly after `afterMs` (the host's local time) that matches: protocol/cron.ts
 * on the local clock face, which reads Date's local methods, not Intl (ICU: ~7 MB).
 */
export function nextCronTime(f: CronFields, afterMs: number): number {
  return nextZoned(f, afterMs, localWall);
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
