/**
 * When a cron expression next fires, in a given time zone: the evaluation half of a cron
 * schedule, shared by the agent (its facts schedule, in the host's local time) and the
 * controller (maintenance windows, in the window's zone).
 * Parsing and validation stay with node-cron on each side (protocol/ imports no npm package
 * but zod); this takes node-cron's parsed fields. Why not node-cron's own runner: it reads the
 * wall clock and starts its own timers, so a test could not move time; here the caller arms
 * its injected clock with the answer.
 */

export interface CronFields {
  second: number[];
  minute: number[];
  hour: number[];
  dayOfMonth: number[];
  month: number[];
  /** 0-6, Sunday 0. */
  dayOfWeek: number[];
}

/** node-cron's parsed fields as numbers; throws naming the field when one holds L, W or #. */
export function cronFields(p: { [K in keyof CronFields]: (number | string)[] }, expression: string): CronFields {
  const nums = (name: keyof CronFields, xs: (number | string)[]) => {
    if (xs.some((x) => typeof x !== 'number')) throw new Error(`cron expression [${expression}]: ${name} may only hold numbers (no L, W or #)`);
    return [...new Set((xs as number[]).map((x) => (name === 'dayOfWeek' ? x % 7 : x)))].sort((a, b) => a - b);
  };
  return {
    second: nums('second', p.second), minute: nums('minute', p.minute), hour: nums('hour', p.hour),
    dayOfMonth: nums('dayOfMonth', p.dayOfMonth), month: nums('month', p.month), dayOfWeek: nums('dayOfWeek', p.dayOfWeek),
  };
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formatters.set(timeZone, f);
  }
  return f;
}

/** True when `timeZone` is an IANA zone this Node knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

export interface Wall {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  s: number;
}

/** How an instant reads on some clock face: a time zone's, or the process's local time. */
export type WallOf = (ms: number) => Wall;

/**
 * The process's local time through Date's local methods. Intl.DateTimeFormat (zoneWall) loads
 * ICU's data: ~7 MB of the agent's 60 MB idle budget (measured, agent/README.md), so the
 * agent's facts schedule reads the host's local time this way.
 */
export const localWall: WallOf = (ms) => {
  const t = new Date(ms);
  return { y: t.getFullYear(), mo: t.getMonth(), d: t.getDate(), h: t.getHours(), mi: t.getMinutes(), s: t.getSeconds() };
};

/** The wall-clock fields of `ms` in `timeZone`. */
function wall(ms: number, timeZone: string): Wall {
  const p: Record<string, number> = {};
  for (const part of formatter(timeZone).formatToParts(new Date(ms))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return { y: p.year!, mo: p.month! - 1, d: p.day!, h: p.hour! % 24, mi: p.minute!, s: p.second! };
}

const zoneWall = (timeZone: string): WallOf => (ms) => wall(ms, timeZone);

/** The instant a wall-clock time in `timeZone` (or on the face `timeZone` reads) names (the earlier one across a DST fold). */
export function zonedTime(y: number, mo: number, d: number, h: number, mi: number, s: number, timeZone: string | WallOf): number {
  const read = typeof timeZone === 'string' ? zoneWall(timeZone) : timeZone;
  const guess = Date.UTC(y, mo, d, h, mi, s);
  const offsetAt = (ms: number) => {
    const w = read(ms);
    return Date.UTC(w.y, w.mo, w.d, w.h, w.mi, w.s) - Math.floor(ms / 1000) * 1000;
  };
  const first = guess - offsetAt(guess);
  const second = guess - offsetAt(first);
  return Math.min(first, second);
}

/**
 * The first instant strictly after `afterMs` whose wall-clock time in `timeZone` matches
 * (day of month and day of week must both match, as in node-cron). Throws when nothing
 * matches within 8 years (say, 30 February). A wall-clock time skipped by a DST jump does not
 * fire that day.
 */
export function nextCronTime(f: CronFields, afterMs: number, timeZone: string | WallOf = 'UTC'): number {
  const read = typeof timeZone === 'string' ? zoneWall(timeZone) : timeZone;
  const start = read(afterMs);
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
          const t = zonedTime(y, mo, d, h, mi, s, read);
          const w = read(t);
          if (t > afterMs && w.h === h && w.mi === mi) return t;
        }
      }
    }
  }
  throw new Error('the cron expression never fires');
}
