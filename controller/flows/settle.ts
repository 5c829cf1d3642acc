/**
 * Where a migration ended, decided from what its two agents report (pure: the I/O is in
 * vm-ops.ts). Nothing the controller hoped or recorded counts here, only the agents' answers:
 *
 *   either agent does not answer                  -> wait (decide nothing on half a picture)
 *   destination still receiving it (Migrating)    -> wait
 *   source still sending it (Migrating)           -> wait
 *   destination has it (Running/Paused)           -> there; a copy the source kept paused with
 *                                                    migratingTo is destroyed (resolve true)
 *   both run it, the source unaware of a handover -> wait (never happens by the agents'
 *                                                    protocol; the controller will not guess)
 *   source has it, destination not                -> stays on the source; a copy paused with
 *                                                    migratingTo is resumed (resolve false)
 *   destination has it Stopped, source not        -> there, Stopped
 *   neither has it                                -> nowhere: Stopped, its last host kept
 */
import type { AgentVm } from '../../protocol/agent.ts';

export type Seen = AgentVm | null | 'no-answer';

export type SettleDecision =
  | { kind: 'wait'; why: string }
  | { kind: 'decided'; on: 'source' | 'target' | 'nowhere'; vm?: AgentVm; resolveSource?: boolean };

export function settleDecision(src: Seen, dst: Seen): SettleDecision {
  if (src === 'no-answer' || dst === 'no-answer') return { kind: 'wait', why: `${src === 'no-answer' ? 'the source' : 'the destination'} does not answer` };
  if (dst?.state === 'Migrating') return { kind: 'wait', why: 'the destination is still receiving it' };
  if (src?.state === 'Migrating') return { kind: 'wait', why: 'the source is still sending it' };
  if (dst && dst.state !== 'Stopped') {
    // Both run it and the source does not know it handed it over: the agents' protocol rules
    // this out; should it happen, the controller picks neither rather than guess.
    if (src && src.state !== 'Stopped' && !src.migratingTo) return { kind: 'wait', why: `both hosts report it (${src.state} on the source, ${dst.state} on the destination)` };
    return { kind: 'decided', on: 'target', vm: dst, ...(src?.migratingTo ? { resolveSource: true } : {}) };
  }
  if (src) return { kind: 'decided', on: 'source', vm: src, ...(src.migratingTo ? { resolveSource: false } : {}) };
  if (dst) return { kind: 'decided', on: 'target', vm: dst };
  return { kind: 'decided', on: 'nowhere' };
}
