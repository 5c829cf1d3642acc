/**
 * The admin account and sessions. The password is kept only as an scrypt hash of its
 * SHA-512 hex digest: ZStack's clients send that digest instead of the password, so
 * hashing the digest lets both forms log in while the store never holds either.
 */
import { randomBytes, scrypt as scryptCb, createHash, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { HkError } from '../../protocol/errors.ts';
import { newUuid } from '../../protocol/values.ts';
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

export class Auth {
  constructor(private readonly repo: Repository, private readonly clock: Clock, readonly sessionTtlMs = SESSION_TTL_MS) {}

  /** Creates the admin account on first start; returns true when it did. */
  async ensureAdmin(password: string): Promise<boolean> {
    if ((await this.repo.find<AccountRow>('account', { name: 'admin' })).length > 0) return false;
    const salt = randomBytes(16);
    const hash = await hashDigest(sha512hex(password), salt);
    await this.repo.transaction((tx) =>
      tx.insert<AccountRow>('account', {
        uuid: newUuid(), name: 'admin', salt: salt.toString('hex'), hash: hash.toString('hex'), createDate: this.clock.now(),
      }),
    );
    return true;
  }

  async adminExists(): Promise<boolean> {
    return (await this.repo.find<AccountRow>('account', { name: 'admin' })).length > 0;
  }

  async login(accountName: string, password: string): Promise<SessionRow> {
    const fail = () => new HkError('ID.1000', 'wrong account name or password');
    const [acct] = await this.repo.find<AccountRow>('account', { name: accountName });
    if (!acct) {
      // Same cost as a real check, so timing does not tell which accounts exist.
      await hashDigest(sha512hex(password), randomBytes(16));
      throw fail();
    }
    const salt = Buffer.from(acct.salt, 'hex');
    const want = Buffer.from(acct.hash, 'hex');
    const candidates = SHA512_HEX.test(password) ? [password, sha512hex(password)] : [sha512hex(password)];
    let ok = false;
    for (const c of candidates) if (timingSafeEqual(await hashDigest(c, salt), want)) ok = true;
    if (!ok) throw fail();
    const now = this.clock.now();
    return this.repo.transaction((tx) =>
      tx.insert<SessionRow>('session', { uuid: newUuid(), accountUuid: acct.uuid, expiredDate: now + this.sessionTtlMs, createDate: now }),
    );
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
