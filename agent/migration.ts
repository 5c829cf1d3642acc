/**
 * One-time migration tokens on the destination. The controller calls the destination's
 * vmPrepareMigration `{vm, token}` (signed with the host secret), then the source's vmMigrate;
 * the source presents the token in `x-hk-migration-token` when it POSTs vmReceive here.
 * A token is good for one VM uuid, once, for TOKEN_TTL_MS.
 *
 * "Once" with one exception: the source may not have seen our answer (the connection broke
 * after it sent the VM) and resend the same token. A token that was used is remembered with
 * its receive for RECEIVED_TOKEN_TTL_MS, and a resend for the same VM gets that receive's
 * outcome (success, or waits for the one in progress) instead of "unknown token", so a
 * retried delivery is harmless; the agent answers success only while the VM is still here.
 * A failed receive is not remembered: the token is spent.
 * Memory is bounded by the migrations prepared in a TTL (each entry is a token and a uuid).
 */
import type { AgentVm } from '../protocol/agent.ts';
import type { Clock } from './clock.ts';

export const TOKEN_TTL_MS = 60_000;
/** Longer than any source's retries of one delivery (agent/server.ts DELIVERY_RETRY_MS). */
export const RECEIVED_TOKEN_TTL_MS = 10 * 60_000;

export type TakeResult =
  | { ok: true; vm: AgentVm; again?: undefined }
  /** A resend of a token already used for this VM: the first receive's outcome. */
  | { ok: true; again: Promise<AgentVm>; vm?: undefined }
  | { ok: false; why: 'unknown-token' | 'expired-token' | 'wrong-vm' };

export class MigrationTokens {
  private readonly tokens = new Map<string, { vm: AgentVm; expiresAt: number }>();
  private readonly received = new Map<string, { vmUuid: string; done: Promise<AgentVm>; expiresAt: number }>();

  constructor(private readonly clock: Clock, private readonly ttlMs = TOKEN_TTL_MS, private readonly receivedTtlMs = RECEIVED_TOKEN_TTL_MS) {}

  prepare(token: string, vm: AgentVm): void {
    this.sweep();
    this.tokens.set(token, { vm, expiresAt: this.clock.now() + this.ttlMs });
  }

  /**
   * Whether the token could be accepted: checked before a receive's body is read, so a
   * stranger cannot make the agent buffer bodies. (The body's VM uuid is checked by take.)
   */
  known(token: string): boolean {
    const now = this.clock.now();
    const t = this.tokens.get(token);
    if (t && now <= t.expiresAt) return true;
    const r = this.received.get(token);
    return !!r && now <= r.expiresAt;
  }

  /**
   * Consumes the token if it is known, unexpired and for `vmUuid`. A token presented for
   * another VM is not consumed: whoever holds it could have asked for the right VM anyway.
   */
  take(token: string, vmUuid: string): TakeResult {
    const now = this.clock.now();
    const r = this.received.get(token);
    if (r && now <= r.expiresAt) return r.vmUuid === vmUuid ? { ok: true, again: r.done } : { ok: false, why: 'wrong-vm' };
    const t = this.tokens.get(token);
    if (!t) return { ok: false, why: 'unknown-token' };
    if (now > t.expiresAt) {
      this.tokens.delete(token);
      return { ok: false, why: 'expired-token' };
    }
    if (t.vm.uuid !== vmUuid) return { ok: false, why: 'wrong-vm' };
    this.tokens.delete(token);
    return { ok: true, vm: t.vm };
  }

  /** The receive of a taken token: remembered for resends while it runs and, if it succeeds, for RECEIVED_TOKEN_TTL_MS. */
  receiving(token: string, vmUuid: string, done: Promise<AgentVm>): void {
    this.sweep();
    const entry = { vmUuid, done, expiresAt: this.clock.now() + this.receivedTtlMs };
    this.received.set(token, entry);
    done.catch(() => {
      if (this.received.get(token) === entry) this.received.delete(token);
    });
  }

  get size(): number {
    return this.tokens.size + this.received.size;
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const [k, t] of this.tokens) if (now > t.expiresAt) this.tokens.delete(k);
    for (const [k, r] of this.received) if (now > r.expiresAt) this.received.delete(k);
  }
}
