/**
 * Dates follow TZ when it is set (ZStack writes the management node's local time), UTC
 * otherwise. Each case runs a fresh Node with its own TZ, since the zone is read at start.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../integration/proc.ts';

const script = `import { formatZStackDate, parseDate } from './protocol/values.ts';
const ms = Date.UTC(2015, 5, 1, 18, 49, 24);
const s = formatZStackDate(ms);
console.log(JSON.stringify({ s, back: parseDate(s) === ms }));`;

function run(tz: string | undefined): { s: string; back: boolean } {
  const env = { ...process.env };
  if (tz === undefined) delete env.TZ;
  else env.TZ = tz;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

describe('dates and TZ', () => {
  it.each([
    [undefined, 'Jun 1, 2015 6:49:24 PM'],
    ['UTC', 'Jun 1, 2015 6:49:24 PM'],
    ['Asia/Shanghai', 'Jun 2, 2015 2:49:24 AM'],
    ['America/New_York', 'Jun 1, 2015 2:49:24 PM'],
  ])('TZ=%s writes %s and reads it back', (tz, want) => {
    expect(run(tz)).toEqual({ s: want, back: true });
  });
});
