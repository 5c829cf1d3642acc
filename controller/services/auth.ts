/**
 * The admin account and sessions. The password is kept only as an scrypt hash of its
 * SHA-512 hex digest: ZStack's clients send that digest instead of the password, so
 * hashing the digest lets both forms log in while the store never holds either.
 *
 * Login is throttled (LoginThrottle below) and its scrypt work bounded: unthrottled, one
 * client made ~45 guesses a second, and 64 concurrent wrong logins filled libuv's 4-thread
 * pool with scrypt, which file and crypto work of every other request waits on. Measured
 * here: an fs.stat issued during 64 concurrent wrong logins waited up to 1.3-3.0 s before,
 * at most 8 ms with 2 hashes at once (54 of the 64 refused at once, 10 checked).
 */
import { randomBytes, scrypt as scryptCb, createHash, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { backoffDelay } from '../../protocol/backoff.ts';
import { HkError } from '../../protocol/errors.ts';
import { newUuid } from '../../protocol/values.ts';
import { Semaphore } from '../semaphore.ts';
import type { Clock } from '../clock.ts';
import { sweepExpired } from './jobs.ts';
import type { Repository } from '../store/repository.ts';

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number) => Promise<Buffer>;

export interface AccountRow {
  uuid: string;
  name: string;
  salt: string;
  hash: string;
  createDate: number;
}

export interface SessionRow {
  uuid: string;
  accountUuid: string;
  expiredDate: number;
  createDate: number;
}

export const SESSION_TTL_MS = 2 * 3600 * 1000;
const SHA512_HEX = /^[0-9a-f]{128}$/i;

const sha512hex = (s: string) => createHash('sha512').update(s, 'utf8').digest('hex');

async function hashDigest(digest: string, salt: Buffer): Promise<Buffer> {
  return scrypt(digest.toLowerCase(), salt, 32);
}

/** How login attempts are spaced and bounded. Windows run on the injected clock. */
export interface LoginThrottleOptions {
  /** Failures a source, or an account, may have before further attempts are spaced. */
  freeFailures: number;
  /** A source's or account's failures are forgotten this long after its last one. */
  windowMs: number;
  /** Wait after the free failures; it doubles with each further failure, up to the caps. */
  baseDelayMs: number;
  /** Cap of a source's wait: one address then guesses a few times an hour. Below windowMs,
   *  or the count would be forgotten before the wait ran out. */
  maxSourceDelayMs: number;
  /** Cap of an account's wait. Short on purpose: the account is usually the only admin,
   *  and a guesser elsewhere must never lock it out for longer than this. */
  maxAccountDelayMs: number;
  /** A source that logged in to an account skips that account's wait (not its own) this long:
   *  an admin's usual address gets in while guessers from elsewhere keep the account spaced. */
  knownSourceMs: number;
  /** scrypt computations at once (~80 ms and 16 MiB each here). Half of libuv's default 4 threads,
   *  so file and crypto work of other requests always finds a free one. */
  maxConcurrentHashes: number;
  /** Attempts waiting for a hash slot; beyond this they are refused at once. */
  maxQueuedHashes: number;
  /** Sources and accounts tracked at most, oldest forgotten first: memory stays bounded
   *  when a guesser cycles addresses, at the price of a forgotten one starting afresh. */
  maxTracked: number;
}

export const LOGIN_THROTTLE: LoginThrottleOptions = {
  freeFailures: 5,
  windowMs: 3600_000,
  baseDelayMs: 1000,
  maxSourceDelayMs: 15 * 60_000,
  maxAccountDelayMs: 30_000,
  knownSourceMs: 30 * 24 * 3600_000,
  maxConcurrentHashes: 2,
  maxQueuedHashes: 8,
  maxTracked: 10_000,
};

export interface AuthOptions {
  throttle?: Partial<LoginThrottleOptions>;
  /** The password hash (scrypt); tests pass a fake they can hold, to see the bound work. */
  hash?: (digest: string, salt: Buffer) => Promise<Buffer>;
}

/**
 * A login refused before any password was checked: the caller must wait `retryAfterSeconds`
 * (for a Retry-After header). ZStack's ID.1000, authentication failed, sent with 429: ZStack
 * has no throttling code (its ID.1002 is PERMISSION_DENIED), and scripts that switch on
 * ID.1000 for a failed login stay right. As SYS.1007 travels with 404 and 413.
 */
export class LoginThrottled extends HkError {
  constructor(details: string, readonly retryAfterSeconds: number) {
    super('ID.1000', details, 429);
  }
}

interface Strikes {
  failures: number;
  /** Time of the last failure (or of the first attempt while none has failed). */
  last: number;
  /** Attempts being checked now: counted as failures until they are not, so a burst of
   *  64 parallel guesses gets the same 5 free tries as 5 sequential ones. */
  inFlight: number;
}

/**
 * Failure counts per source address and per account, and the waits they impose: after
 * `freeFailures` within the window, the next attempt must come `base * 2^n` after the last
 * failure (n = failures beyond the free ones), capped. Attempts that come earlier are
 * refused without a hash and change nothing, so hammering does not extend the wait.
 * In memory only: a restart forgives everyone, which costs a guesser a restart per 5 tries.
 */
class LoginThrottle {
  private readonly sources = new Map<string, Strikes>();
  private readonly accounts = new Map<string, Strikes>();
  /** `account\0source` -> time of its last successful login. */
  private readonly known = new Map<string, number>();
  constructor(private readonly o: LoginThrottleOptions) {}

  /** Milliseconds until an attempt on `account` from `source` may be checked; 0 when now. */
  waitMs(account: string, source: string | undefined, now: number): number {
    let wait = 0;
    if (source !== undefined) wait = this.waitOf(this.sources, source, this.o.maxSourceDelayMs, now);
    const knownAt = source === undefined ? undefined : this.known.get(`${account}\0${source}`);
    if (knownAt === undefined || now - knownAt > this.o.knownSourceMs) {
      wait = Math.max(wait, this.waitOf(this.accounts, account, this.o.maxAccountDelayMs, now));
    }
    return wait;
  }

  begin(account: string, source: string | undefined, now: number): void {
    for (const [map, key] of this.keys(account, source)) {
      const s = this.current(map, key, now) ?? { failures: 0, last: now, inFlight: 0 };
      s.inFlight++;
      this.touch(map, key, s);
    }
  }

  /** `ok`: true logged in, false wrong password, undefined the check itself failed. */
  end(account: string, source: string | undefined, ok: boolean | undefined, now: number): void {
    for (const [map, key] of this.keys(account, source)) {
      const s = map.get(key);
      if (!s) continue; // evicted meanwhile
      s.inFlight = Math.max(0, s.inFlight - 1);
      if (ok === true) s.failures = 0;
      if (ok === false) {
        s.failures++;
        s.last = now;
      }
      if (s.failures === 0 && s.inFlight === 0) map.delete(key);
    }
    if (ok === true && source !== undefined) this.touch(this.known, `${account}\0${source}`, now);
  }

  private keys(account: string, source: string | undefined): [Map<string, Strikes>, string][] {
    return source === undefined ? [[this.accounts, account]] : [[this.accounts, account], [this.sources, source]];
  }

  private waitOf(map: Map<string, Strikes>, key: string, cap: number, now: number): number {
    const s = this.current(map, key, now);
    if (!s) return 0;
    const beyond = s.failures + s.inFlight - this.o.freeFailures;
    if (beyond < 0) return 0;
    // The one backoff policy (protocol/backoff.ts), without jitter: the wait is announced in
    // Retry-After, and a guesser gains nothing from a random shorter one.
    const wait = backoffDelay({ initialMs: this.o.baseDelayMs, maxMs: cap }, beyond);
    // While an attempt is being checked its outcome is unknown: a parallel one waits a
    // full step from now rather than slip in beside it.
    return s.inFlight > 0 ? wait : Math.max(0, s.last + wait - now);
  }

  /** The entry, unless its window has passed with nothing in flight. */
  private current(map: Map<string, Strikes>, key: string, now: number): Strikes | undefined {
    const s = map.get(key);
    if (s && s.inFlight === 0 && now - s.last >= this.o.windowMs) {
      map.delete(key);
      return undefined;
    }
    return s;
  }

  /** Stores `v` as the newest entry, dropping the oldest past `maxTracked`. */
  private touch<V>(map: Map<string, V>, key: string, v: V): void {
    map.delete(key);
    map.set(key, v);
    while (map.size > this.o.maxTracked) map.delete(map.keys().next().value!);
  }
}

export class Auth {
  private readonly throttle: LoginThrottle;
  private readonly hashes: Semaphore;
  private readonly limits: LoginThrottleOptions;
  private readonly hash: (digest: string, salt: Buffer) => Promise<Buffer>;

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    readonly sessionTtlMs = SESSION_TTL_MS,
    opts: AuthOptions = {},
  ) {
    this.limits = { ...LOGIN_THROTTLE, ...opts.throttle };
    this.throttle = new LoginThrottle(this.limits);
    this.hashes = new Semaphore(this.limits.maxConcurrentHashes);
    this.hash = opts.hash ?? hashDigest;
  }

  /** Creates the admin account on first start; returns true when it did. */
  async ensureAdmin(password: string): Promise<boolean> {
    if ((await this.repo.find<AccountRow>('account', { name: 'admin' })).length > 0) return false;
    const salt = randomBytes(16);
    const hash = await this.hash(sha512hex(password), salt);
    // Checked again inside the transaction: controllers starting at once on one empty
    // database must create one admin, not one each (the store serialises, and retries the loser).
    return this.repo.transaction(async (tx) => {
      if ((await tx.find<AccountRow>('account', { name: 'admin' })).length > 0) return false;
      await tx.insert<AccountRow>('account', {
        uuid: newUuid(), name: 'admin', salt: salt.toString('hex'), hash: hash.toString('hex'), createDate: this.clock.now(),
      });
      return true;
    });
  }

  async adminExists(): Promise<boolean> {
    return (await this.repo.find<AccountRow>('account', { name: 'admin' })).length > 0;
  }

  /**
   * Checks the password and opens a session. `source` is the client's address: with it,
   * failures are also counted per address; without it, per account only.
   * Refuses with LoginThrottled (429, retry-after), before any hash, while the source or the
   * account must wait, or while the hash queue is full.
   */
  async login(accountName: string, password: string, source?: string): Promise<SessionRow> {
    const now = this.clock.now();
    const wait = this.throttle.waitMs(accountName, source, now);
    if (wait > 0) {
      const s = Math.ceil(wait / 1000);
      const from = source === undefined ? '' : ` or from ${source}`;
      throw new LoginThrottled(`too many failed logins for account[name:${accountName}]${from}; try again in ${s} s`, s);
    }
    if (this.hashes.inFlight >= this.limits.maxConcurrentHashes && this.hashes.queued >= this.limits.maxQueuedHashes) {
      throw new LoginThrottled(`too many logins are being checked at once; try again in 1 s`, 1);
    }
    this.throttle.begin(accountName, source, now);
    let acct: AccountRow | undefined;
    try {
      acct = await this.hashes.run(() => this.verify(accountName, password));
    } catch (err) {
      this.throttle.end(accountName, source, undefined, this.clock.now());
      throw err;
    }
    this.throttle.end(accountName, source, acct !== undefined, this.clock.now());
    if (!acct) throw new HkError('ID.1000', 'wrong account name or password');
    const at = this.clock.now();
    const accountUuid = acct.uuid;
    return this.repo.transaction((tx) =>
      tx.insert<SessionRow>('session', { uuid: newUuid(), accountUuid, expiredDate: at + this.sessionTtlMs, createDate: at }),
    );
  }

  /** The account when the password (or its SHA-512 digest) is right. */
  private async verify(accountName: string, password: string): Promise<AccountRow | undefined> {
    const [acct] = await this.repo.find<AccountRow>('account', { name: accountName });
    if (!acct) {
      // Same cost as a real check, so timing does not tell which accounts exist.
      await this.hash(sha512hex(password), randomBytes(16));
      return undefined;
    }
    const salt = Buffer.from(acct.salt, 'hex');
    const want = Buffer.from(acct.hash, 'hex');
    const candidates = SHA512_HEX.test(password) ? [password, sha512hex(password)] : [sha512hex(password)];
    let ok = false;
    for (const c of candidates) if (timingSafeEqual(await this.hash(c, salt), want)) ok = true;
    return ok ? acct : undefined;
  }

  /** The live session with this id, or an ID.1001 error. */
  async check(sessionUuid: string | undefined): Promise<SessionRow> {
    if (!sessionUuid) throw new HkError('ID.1001', 'missing header Authorization: OAuth <session uuid>; log in with PUT /v1/accounts/login');
    const s = await this.repo.get<SessionRow>('session', sessionUuid);
    if (!s || s.expiredDate <= this.clock.now()) {
      throw new HkError('ID.1001', `session[uuid:${sessionUuid}] is invalid or expired; log in again`);
    }
    return s;
  }

  async logout(sessionUuid: string): Promise<void> {
    if (await this.repo.get('session', sessionUuid)) await this.repo.transaction((tx) => tx.remove('session', sessionUuid));
  }

  /** Deletes expired sessions; returns how many. */
  async sweep(): Promise<number> {
    return sweepExpired(this.repo, 'session', this.clock.now());
  }
}
