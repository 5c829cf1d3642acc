/**
 * The resume decisions, table-driven: where a migration ended for each combination of what
 * the two agents report (controller/flows/settle.ts), and an evacuation item's phase for each
 * phase recorded before the crash x where the VM is now (controller/flows/maintenance.ts).
 */
import { describe, expect, it } from 'vitest';
import type { AgentVm } from '../../protocol/agent.ts';
import { phaseAfterRestart } from '../../controller/flows/maintenance.ts';
import { type Seen, settleDecision } from '../../controller/flows/settle.ts';

const vm = (state: AgentVm['state'], migratingTo?: string): AgentVm => ({ uuid: 'v', name: 'v', state, memorySize: 1, cpuNum: 1, vmNics: [], ...(migratingTo ? { migratingTo } : {}) });
const SEEN: Record<string, Seen> = {
  'no answer': 'no-answer', absent: null, Running: vm('Running'), Paused: vm('Paused'), Stopped: vm('Stopped'),
  Migrating: vm('Migrating'), 'sending (Migrating, migratingTo)': vm('Migrating', 'https://d'), 'outcome unknown (Paused, migratingTo)': vm('Paused', 'https://d'),
};

// [source, destination] -> the decision, as a short string.
const TABLE: [string, string, string][] = [
  ['no answer', 'Running', 'wait'], ['Running', 'no answer', 'wait'], ['no answer', 'no answer', 'wait'],
  ['sending (Migrating, migratingTo)', 'absent', 'wait'], ['sending (Migrating, migratingTo)', 'Migrating', 'wait'],
  ['sending (Migrating, migratingTo)', 'Running', 'wait'], ['absent', 'Migrating', 'wait'], ['Running', 'Migrating', 'wait'],
  ['absent', 'Running', 'target Running'], ['absent', 'Paused', 'target Paused'],
  ['outcome unknown (Paused, migratingTo)', 'Running', 'target Running, resolve source true'],
  ['outcome unknown (Paused, migratingTo)', 'Paused', 'target Paused, resolve source true'],
  ['outcome unknown (Paused, migratingTo)', 'absent', 'source Paused, resolve source false'],
  ['outcome unknown (Paused, migratingTo)', 'Stopped', 'source Paused, resolve source false'],
  ['Running', 'absent', 'source Running'], ['Paused', 'absent', 'source Paused'], ['Stopped', 'absent', 'source Stopped'],
  ['Running', 'Stopped', 'source Running'], ['absent', 'Stopped', 'target Stopped'], ['absent', 'absent', 'nowhere'],
  ['Running', 'Running', 'wait'], ['Paused', 'Running', 'wait'], ['Stopped', 'Running', 'target Running'],
];

describe('where a migration ended, from what both agents report', () => {
  it.each(TABLE)('source %s, destination %s -> %s', (s, d, want) => {
    const r = settleDecision(SEEN[s]!, SEEN[d]!);
    const got = r.kind === 'wait' ? 'wait' : r.on === 'nowhere' ? 'nowhere'
      : `${r.on} ${r.vm!.state}${r.resolveSource !== undefined ? `, resolve source ${r.resolveSource}` : ''}`;
    expect(got).toBe(want);
  });
  it('never decides a VM lives on both ends', () => {
    for (const s of Object.values(SEEN)) for (const d of Object.values(SEEN)) {
      const r = settleDecision(s, d);
      // Choosing the target while the source still holds a copy it may run: only with resolve true.
      if (r.kind === 'decided' && r.on === 'target' && s && s !== 'no-answer' && s.state !== 'Stopped') expect(r.resolveSource).toBe(true);
    }
  });
});

describe("an evacuation item's phase after a restart", () => {
  const H = 'host-a';
  const where = { gone: undefined, 'elsewhere Running': { hostUuid: 'host-b', state: 'Running' as const }, 'here Stopped': { hostUuid: H, state: 'Stopped' as const }, 'here Running': { hostUuid: H, state: 'Running' as const }, 'here Migrating': { hostUuid: H, state: 'Migrating' as const } };
  const want: Record<string, Record<string, string>> = {
    pending: { gone: 'migrated', 'elsewhere Running': 'migrated host-b', 'here Stopped': 'stopped', 'here Running': 'pending', 'here Migrating': 'pending' },
    migrating: { gone: 'migrated', 'elsewhere Running': 'migrated host-b', 'here Stopped': 'stopped', 'here Running': 'pending', 'here Migrating': 'pending' },
    stopping: { gone: 'migrated', 'elsewhere Running': 'migrated host-b', 'here Stopped': 'stopped', 'here Running': 'pending', 'here Migrating': 'pending' },
    migrated: { gone: 'migrated', 'elsewhere Running': 'migrated', 'here Stopped': 'migrated', 'here Running': 'migrated', 'here Migrating': 'migrated' },
    stopped: { gone: 'stopped', 'elsewhere Running': 'stopped', 'here Stopped': 'stopped', 'here Running': 'stopped', 'here Migrating': 'stopped' },
    failed: { gone: 'failed', 'elsewhere Running': 'failed', 'here Stopped': 'failed', 'here Running': 'failed', 'here Migrating': 'failed' },
  };
  const cases = Object.entries(want).flatMap(([phase, row]) => Object.entries(row).map(([w, out]) => [phase, w, out] as const));
  it.each(cases)('recorded %s, VM %s -> %s', (phase, w, out) => {
    const r = phaseAfterRestart({ phase: phase as never }, where[w as keyof typeof where], H);
    expect(`${r.phase}${r.target ? ` ${r.target}` : ''}`).toBe(out);
  });
});
