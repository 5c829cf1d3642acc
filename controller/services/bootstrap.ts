/**
 * Bootstrap tokens: let an agent register its own host into one cluster. The token is
 * shown once, stored only as its SHA-256, and expires. Without `maxUses` it registers any
 * number of hosts until then (a rack comes up with one token); with it, that many
 * registrations, counted in the registration's own transaction. A token can be listed
 * (never showing the token or its hash) and revoked (its row deleted) at any time; hosts
 * it registered stay.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { invalidArgument, notFound } from '../../protocol/errors.ts';
import type { ClusterRow } from '../../protocol/resources.ts';
import { isUuid, newUuid } from '../../protocol/values.ts';
import type { Repository, Tx } from '../store/repository.ts';

export interface BootstrapTokenRow {
  uuid: string;
  clusterUuid: string;
  tokenHash: string;
  expiredDate: number;
  createDate: number;
  /** Registrations allowed; absent: any number until expiredDate. */
  maxUses?: number;
  /** Registrations made with it so far. */
  uses?: number;
}

export const DEFAULT_TOKEN_TTL_S = 24 * 3600;
export const MAX_TOKEN_TTL_S = 30 * 24 * 3600;

const hash = (token: string) => createHash('sha256').update(token).digest('hex');

/** The token was revoked or used up between the check and the registration's transaction. */
export class TokenUnusable extends Error {}

export async function createBootstrapToken(
  tx: Tx, now: number, clusterUuid: string, ttlSeconds = DEFAULT_TOKEN_TTL_S, maxUses?: number,
): Promise<{ row: BootstrapTokenRow; token: string }> {
  if (!(await tx.get<ClusterRow>('cluster', clusterUuid))) throw invalidArgument(`params.clusterUuid: cluster[uuid:${clusterUuid}] does not exist`);
  const uuid = newUuid();
  // The uuid prefix lets the controller find the row without storing the secret part.
  const token = `${uuid}.${randomBytes(24).toString('base64url')}`;
  const row: BootstrapTokenRow = {
    uuid, clusterUuid, tokenHash: hash(token), expiredDate: now + ttlSeconds * 1000, createDate: now, uses: 0,
    ...(maxUses !== undefined ? { maxUses } : {}),
  };
  await tx.insert('bootstrapToken', row);
  return { row, token };
}

const usable = (row: BootstrapTokenRow, now: number) => row.expiredDate > now && (row.maxUses === undefined || (row.uses ?? 0) < row.maxUses);

/** The live token row for `token`, or undefined (unknown, wrong, expired, revoked or used up). */
export async function checkBootstrapToken(repo: Repository, token: string, now: number): Promise<BootstrapTokenRow | undefined> {
  const uuid = token.split('.')[0] ?? '';
  if (!isUuid(uuid)) return undefined;
  const row = await repo.get<BootstrapTokenRow>('bootstrapToken', uuid);
  if (!row || !usable(row, now)) return undefined;
  const a = Buffer.from(row.tokenHash, 'hex');
  const b = Buffer.from(hash(token), 'hex');
  return a.length === b.length && timingSafeEqual(a, b) ? row : undefined;
}

/**
 * Counts one registration, inside the registration's transaction (so two agents racing for
 * the last use cannot both get it). Throws TokenUnusable when it was revoked, expired or used
 * up since the check.
 */
export async function useBootstrapToken(tx: Tx, uuid: string, now: number): Promise<void> {
  const row = await tx.get<BootstrapTokenRow>('bootstrapToken', uuid);
  if (!row || !usable(row, now)) throw new TokenUnusable(`bootstrap token[uuid:${uuid}] was revoked, expired or used up`);
  await tx.update<BootstrapTokenRow>('bootstrapToken', uuid, { uses: (row.uses ?? 0) + 1 });
}

/** DeleteBootstrapToken: the token stops working at once; hosts it registered stay. */
export async function revokeBootstrapToken(tx: Tx, uuid: string): Promise<void> {
  if (!(await tx.get<BootstrapTokenRow>('bootstrapToken', uuid))) throw notFound(`bootstrap-token[uuid:${uuid}] does not exist`);
  await tx.remove('bootstrapToken', uuid);
}
