/**
 * Bootstrap tokens: let an agent register its own host into one cluster. The token is
 * shown once, stored only as its SHA-256, expires, and works for many agents until then
 * (a rack comes up with one token).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { invalidArgument } from '../../protocol/errors.ts';
import type { ClusterRow } from '../../protocol/resources.ts';
import { isUuid, newUuid } from '../../protocol/values.ts';
import type { Repository, Tx } from '../store/repository.ts';

export interface BootstrapTokenRow {
  uuid: string;
  clusterUuid: string;
  tokenHash: string;
  expiredDate: number;
  createDate: number;
}

export const DEFAULT_TOKEN_TTL_S = 24 * 3600;
export const MAX_TOKEN_TTL_S = 30 * 24 * 3600;

const hash = (token: string) => createHash('sha256').update(token).digest('hex');

export async function createBootstrapToken(
  tx: Tx, now: number, clusterUuid: string, ttlSeconds = DEFAULT_TOKEN_TTL_S,
): Promise<{ row: BootstrapTokenRow; token: string }> {
  if (!(await tx.get<ClusterRow>('cluster', clusterUuid))) throw invalidArgument(`params.clusterUuid: cluster[uuid:${clusterUuid}] does not exist`);
  const uuid = newUuid();
  // The uuid prefix lets the controller find the row without storing the secret part.
  const token = `${uuid}.${randomBytes(24).toString('base64url')}`;
  const row: BootstrapTokenRow = { uuid, clusterUuid, tokenHash: hash(token), expiredDate: now + ttlSeconds * 1000, createDate: now };
  await tx.insert('bootstrapToken', row);
  return { row, token };
}

/** The live token row for `token`, or undefined (unknown, wrong or expired). */
export async function checkBootstrapToken(repo: Repository, token: string, now: number): Promise<BootstrapTokenRow | undefined> {
  const uuid = token.split('.')[0] ?? '';
  if (!isUuid(uuid)) return undefined;
  const row = await repo.get<BootstrapTokenRow>('bootstrapToken', uuid);
  if (!row || row.expiredDate <= now) return undefined;
  const a = Buffer.from(row.tokenHash, 'hex');
  const b = Buffer.from(hash(token), 'hex');
  return a.length === b.length && timingSafeEqual(a, b) ? row : undefined;
}
