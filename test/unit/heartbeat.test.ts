/** The heartbeat period a controller asks for grows with its fleet (protocol/agent.ts). */
import { describe, expect, it } from 'vitest';
import { HEARTBEAT_BUDGET_PER_S, HEARTBEAT_MAX_MS, heartbeatDeadline, heartbeatPeriodFor } from '../../protocol/agent.ts';

describe('heartbeat period for a fleet', () => {
  it.each([
    [0, 600, 1500], [1, 600, 1500], [2100, 600, 1500], [2101, 700, 1750], [3500, 1000, 2500],
    [10_000, 2900, 7250], [50_000, 14_300, 35_750], [10 ** 7, HEARTBEAT_MAX_MS, 150_000],
  ])('%i hosts: every %i ms, suspect after %i ms of silence', (hosts, period, deadline) => {
    expect(heartbeatPeriodFor(hosts)).toBe(period);
    expect(heartbeatDeadline(period)).toBe(deadline);
  });

  it('keeps the heartbeats a controller receives within its budget', () => {
    for (let hosts = 1; hosts <= 200_000; hosts += 997) {
      const perSecond = hosts / (heartbeatPeriodFor(hosts) / 1000);
      expect(perSecond).toBeLessThanOrEqual(Math.max(HEARTBEAT_BUDGET_PER_S, hosts / (HEARTBEAT_MAX_MS / 1000)) + 1e-9);
    }
  });
});

describe('Channel.setHeartbeat (controller side)', async () => {
  const { Channel } = await import('../../controller/agents/channel.ts');
  const fakeChannel = () => {
    const written: string[] = [];
    const req = { write: (s: string) => written.push(s), destroy: () => undefined } as never;
    return { ch: new Channel('h', req, () => 0, () => undefined), written };
  };

  it('tells the agent; a longer period is allowed for at once, a shorter one only after the old deadline', () => {
    const { ch, written } = fakeChannel();
    const deferred: { apply: () => void; after: number }[] = [];
    const later = (apply: () => void, after: number) => void deferred.push({ apply, after });
    ch.setHeartbeat(2900, later);
    expect(written).toEqual(['{"t":"hb","ms":2900}\n']);
    expect(ch.deadlineMs).toBe(7250);
    ch.setHeartbeat(2900, later); // no change: nothing sent
    expect(written).toHaveLength(1);
    ch.setHeartbeat(1000, later);
    expect(written[1]).toBe('{"t":"hb","ms":1000}\n');
    expect(ch.deadlineMs).toBe(7250); // beats already on their way follow the old period
    expect(deferred).toHaveLength(1);
    expect(deferred[0]!.after).toBe(7250);
    deferred[0]!.apply();
    expect(ch.deadlineMs).toBe(2500);
  });
});
