/**
 * One-time migration tokens on the destination. The controller calls the destination's
 * vmPrepareMigration `{vm, token}` (signed with the host secret), then the source's vmMigrate;
 * the source presents the token in `x-hk-migration-token` when it POSTs vmReceive here.
 * A token is good for one VM uuid, once, for TOKEN_TTL_MS.
 */
import type { AgentVm } from '../protocol/agent.ts';
import type { Clock } from './clock.ts';

export const TOKEN_TTL_MS = 60_000;

export type TakeResult = { ok: true; vm: AgentVm } | { ok: false; why: 'unknown-token' | 'expired-token' | 'wrong-vm' };

export class MigrationTokens {
  private readonly tokens = new Map<string, { vm: AgentVm; expiresAt: number }>();

  constructor(private readonly clock: Clock, private readonly ttlMs = TOKEN_TTL_MS) {}

  prepare(token: string, vm: AgentVm): void {
    this.sweep();
    this.tokens.set(token, { vm, expiresAt: this.clock.now() + this.ttlMs });
  }

  /**
   * Consumes the token if it is known, unexpired and for `vmUuid`. A token presented for
   * another VM is not consumed: whoever holds it could have asked for the right VM anyway.
   */
  take(token: string, vmUuid: string): TakeResult {
    const t = this.tokens.get(token);
    if (!t) return { ok: false, why: 'unknown-token' };
    if (this.clock.now() > t.expiresAt) {
      this.tokens.delete(token);
      return { ok: false, why: 'expired-token' };
    }
    if (t.vm.uuid !== vmUuid) return { ok: false, why: 'wrong-vm' };
    this.tokens.delete(token);
    return { ok: true, vm: t.vm };
  }

  get size(): number {
    return this.tokens.size;
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const [k, t] of this.tokens) if (now > t.expiresAt) this.tokens.delete(k);
  }
}
