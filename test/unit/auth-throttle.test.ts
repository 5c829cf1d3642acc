/**
 * Login throttling: per source and per account waits after failures, refused before any
 * hash is computed; bounded hash work; the admin never locked out for long. Fake clock and
 * a fake hash, so nothing sleeps and every hash is counted.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Auth, type AuthOptions, LoginThrottled } from '../../controller/services/auth.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { FakeClock } from '../fakes/clock.ts';
import { tempDir } from '../helpers.ts';

const RIGHT = 'right-password';

/** A hash that costs nothing and counts its calls; `hold` makes each wait for `release`. */
function fakeHash() {
  const held: (() => void)[] = [];
  const h = {
    calls: 0,
    running: 0,
    maxRunning: 0,
    hold: false,
    held,
    fn: async (digest: string, salt: Buffer) => {
      h.calls++;
      h.running++;
      h.maxRunning = Math.max(h.maxRunning, h.running);
      if (h.hold) await new Promise<void>((r) => held.push(r));
      h.running--;
      return createHash('sha256').update(salt).update(digest).digest();
    },
  };
  return h;
}

const stores: EmbeddedStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

async function makeAuth(opts: Omit<AuthOptions, 'hash'> = {}) {
  const store = await EmbeddedStore.open(await tempDir(), { sync: false });
  stores.push(store);
  const clock = new FakeClock();
  const hash = fakeHash();
  const auth = new Auth(store, clock, undefined, { ...opts, hash: hash.fn });
  await auth.ensureAdmin(RIGHT);
  hash.calls = 0;
  return { auth, clock, hash };
}

/** 'ok', '401' (wrong password) or '429:<retry-after s>' (refused before any hash). */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof LoginThrottled) return `${err.status}:${err.retryAfterSeconds}`;
    const e = err as { code?: string; status?: number };
    return e.code === 'ID.1000' ? String(e.status) : `error ${String(err)}`;
  }
}

const times = (n: number, step: string) => Array<string>(n).fill(step);

/**
 * Steps: '+<ms>' moves the clock; '<source>[@<account>] <right|wrong> <expect>' logs in.
 * Source '-' means the caller gave no address; the account defaults to admin.
 */
const CASES: [string, string[]][] = [
  ['per source: 5 free failures, then waits of 1, 2, 4 s after each further one', [
    ...times(5, 'A wrong 401'), 'A wrong 429:1', '+999', 'A right 429:1', '+1', 'A wrong 401',
    'A wrong 429:2', '+2000', 'A wrong 401', '+3999', 'A right 429:1', '+1', 'A right ok',
  ]],
  ['the account wait is capped at 30 s: a clean source gets in after it, the guessing one later', [
    ...times(5, 'A wrong 401'), '+1000', 'A wrong 401', '+2000', 'A wrong 401', '+4000', 'A wrong 401',
    '+8000', 'A wrong 401', '+16000', 'A wrong 401', // 10 failures: source waits 32 s, account 30 s
    'B right 429:30', '+30000', 'A right 429:2', 'B right ok',
  ]],
  ['a source that logged in before skips the account wait, not its own', [
    'B right ok', ...times(5, 'A wrong 401'), 'A wrong 429:1', 'C right 429:1', 'B right ok',
  ]],
  ['a refused attempt changes nothing: hammering does not extend the wait', [
    ...times(5, 'A wrong 401'), 'A wrong 429:1', '+500', 'A wrong 429:1', '+500', 'A wrong 401',
  ]],
  ['failures are forgotten after an hour of quiet', [
    ...times(5, 'A wrong 401'), 'A wrong 429:1', '+3600000', ...times(5, 'A wrong 401'), 'A wrong 429:1',
  ]],
  ['a success clears the account and the source', [
    ...times(4, 'A wrong 401'), 'A right ok', ...times(5, 'A wrong 401'), 'A wrong 429:1',
  ]],
  ['without a source address the account alone is counted', [
    ...times(5, '- wrong 401'), '- right 429:1', 'B right 429:1', '+1000', '- right ok',
  ]],
  ['an unknown account is counted like a real one, apart from it', [
    ...times(5, 'A@root wrong 401'), 'A@root wrong 429:1', 'B@root wrong 429:1', 'B right ok', 'A right 429:1',
  ]],
];

describe('login throttling', () => {
  it.each(CASES)('%s', async (_name, steps) => {
    const { auth, clock, hash } = await makeAuth();
    const got: string[] = [];
    for (const step of steps) {
      if (step.startsWith('+')) {
        clock.advance(Number(step.slice(1)));
        got.push(step);
        continue;
      }
      const [who, pw] = step.split(' ') as [string, 'right' | 'wrong'];
      const [src, account = 'admin'] = who.split('@') as [string, string?];
      const before = hash.calls;
      const r = await outcome(auth.login(account, pw === 'right' ? RIGHT : 'guess', src === '-' ? undefined : src));
      // A refused attempt never reaches the hash.
      if (r.startsWith('429') && hash.calls !== before) got.push(`${who} ${pw} ${r} (hashed!)`);
      else got.push(`${who} ${pw} ${r}`);
    }
    expect(got).toEqual(steps);
  });

  it('the refusal names the account and source and says when to come back', async () => {
    const { auth } = await makeAuth();
    for (let i = 0; i < 5; i++) await outcome(auth.login('admin', 'guess', '10.0.0.9'));
    const err = await auth.login('admin', 'guess', '10.0.0.9').catch((e) => e);
    expect(err).toBeInstanceOf(LoginThrottled);
    expect([err.code, err.status, err.retryAfterSeconds]).toEqual(['ID.1000', 429, 1]);
    expect(err.details).toBe('too many failed logins for account[name:admin] or from 10.0.0.9; try again in 1 s');
  });

  it('a burst of 64 parallel guesses from one source gets its 5 free tries, no more', async () => {
    const { auth, hash } = await makeAuth();
    const results = await Promise.all(Array.from({ length: 64 }, () => outcome(auth.login('admin', 'guess', 'A'))));
    expect(results.filter((r) => r === '401')).toHaveLength(5);
    expect(results.filter((r) => r.startsWith('429'))).toHaveLength(59);
    expect(hash.calls).toBe(5);
  });

  it('at most 2 hashes run at once and 8 wait; more concurrent logins are refused at once', async () => {
    const { auth, hash } = await makeAuth();
    hash.hold = true;
    // 64 different sources and unknown accounts: no throttle applies, only the hash bound.
    const logins = Array.from({ length: 64 }, (_, i) => outcome(auth.login(`nobody${i}`, 'guess', `10.9.0.${i}`)));
    const settled: string[] = [];
    logins.forEach((p) => p.then((r) => settled.push(r)));
    await new Promise((r) => setImmediate(r));
    expect(settled).toEqual(Array(54).fill('429:1'));
    expect(hash.running).toBe(2);
    // While the queue is full even a right password is refused at once, told to retry in 1 s.
    expect(await outcome(auth.login('admin', RIGHT, '10.8.0.1'))).toBe('429:1');
    while (settled.length < 64) {
      hash.held.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    expect(settled.filter((r) => r === '401')).toHaveLength(10);
    expect(hash.maxRunning).toBe(2);
    expect(hash.calls).toBe(10);
    hash.hold = false;
    expect(await outcome(auth.login('admin', RIGHT, '10.8.0.1'))).toBe('ok');
  });

  it('tracks a bounded number of sources: the oldest is forgotten first', async () => {
    const { auth } = await makeAuth({ throttle: { maxTracked: 2, maxAccountDelayMs: 0 } });
    for (const src of ['A', 'B', 'C']) for (let i = 0; i < 5; i++) await outcome(auth.login('admin', 'guess', src));
    expect(await outcome(auth.login('admin', 'guess', 'C'))).toBe('429:1');
    // A was dropped to make room: it starts afresh (the price of bounded memory).
    expect(await outcome(auth.login('admin', 'guess', 'A'))).toBe('401');
  });
});
