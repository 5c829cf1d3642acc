/**
 * VM changes reach the controller over the channel as `vm` frames, as they happen (well
 * within 2 s), whatever caused them: a command, a migration step, or something outside the
 * agent (a crash, a pause). Changes made while no channel was open go out, re-read, when
 * the next one opens.
 */
import { describe, expect, it } from 'vitest';
import { AGENT_PATHS, MIGRATION_TOKEN_HEADER } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { agentAs, DST, makeAgent, rawRequest, readChannel, SRC, signedPost, until, vmSpec } from './helpers.ts';

const UUID = vmSpec(1).uuid;
type Agent = Awaited<ReturnType<typeof makeAgent>>;

const vmFrames = (frames: { t: string; [k: string]: unknown }[]) =>
  frames.filter((f) => f.t === 'vm').map((f) => [f.vmUuid, (f.vm as { state?: string } | null)?.state ?? null]);

describe('vm frames on the channel', () => {
  it.each<[string, (a: Agent) => Promise<unknown>, string | null]>([
    ['create (started)', (a) => signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(2), start: true }), 'Running'],
    ['stop (cold)', (a) => signedPost(a, AGENT_PATHS.vmStop, { vmUuid: UUID, type: 'cold' }), 'Stopped'],
    ['stop (grace)', (a) => signedPost(a, AGENT_PATHS.vmStop, { vmUuid: UUID }), 'Stopped'],
    ['reboot', (a) => signedPost(a, AGENT_PATHS.vmReboot, { vmUuid: UUID }), 'Running'],
    ['destroy', (a) => signedPost(a, AGENT_PATHS.vmDestroy, { vmUuid: UUID }), null],
    ['a guest crash (outside the agent)', (a) => a.sim.simulateCrash(UUID), 'Stopped'],
    ['a pause (outside the agent)', (a) => a.sim.simulatePause(UUID), 'Paused'],
  ])('%s is pushed within 2 s', async (_n, op, state) => {
    const a = await makeAgent();
    const ch = readChannel(a);
    expect(await ch.status).toBe(200);
    await a.driver.create(vmSpec(1), true);
    await until(() => ch.frames.length === 1);
    const t0 = performance.now();
    await op(a);
    await until(() => ch.frames.length === 2);
    expect(ch.at[1]! - t0).toBeLessThan(2_000);
    const uuid = _n.startsWith('create') ? vmSpec(2).uuid : UUID;
    expect(vmFrames(ch.frames)).toEqual([[UUID, 'Running'], [uuid, state]]);
  });

  it('a frame carries the whole VM description', async () => {
    const a = await makeAgent();
    const ch = readChannel(a);
    await ch.status;
    await a.driver.create(vmSpec(1), true);
    await a.sim.simulatePause(UUID);
    await until(() => ch.frames.length === 2);
    expect(ch.frames[1]).toEqual({ t: 'vm', vmUuid: UUID, vm: { ...vmSpec(1), state: 'Paused' } });
  });

  it('changes while no channel was open are sent, current, when one opens; nothing before', async () => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), true);
    await a.driver.create(vmSpec(2), true);
    await a.sim.simulatePause(UUID);
    await a.sim.simulateCrash(UUID); // two changes, one frame: the state now
    await a.driver.destroy(vmSpec(2).uuid);
    const ch = readChannel(a);
    await ch.status;
    await until(() => ch.frames.length === 2);
    expect(vmFrames(ch.frames).sort()).toEqual([[UUID, 'Stopped'], [vmSpec(2).uuid, null]].sort());
    // then live changes, in order
    await a.driver.start(UUID);
    await until(() => ch.frames.length === 3);
    expect(vmFrames(ch.frames)[2]).toEqual([UUID, 'Running']);
  });

  it('after the controller closes the channel, changes wait for the next one', async () => {
    const a = await makeAgent();
    const first = readChannel(a);
    await first.status;
    await a.driver.create(vmSpec(1), true);
    await until(() => first.frames.length === 1);
    first.close();
    await new Promise((r) => setTimeout(r, 50));
    await a.sim.simulatePause(UUID);
    const second = readChannel(a);
    await second.status;
    await until(() => second.frames.length === 1);
    expect(vmFrames(second.frames)).toEqual([[UUID, 'Paused']]);
    expect(vmFrames(first.frames)).toEqual([[UUID, 'Running']]);
  });

  it('a migration is visible on both sides: Migrating (with migratingTo) then gone; arriving then Running', async () => {
    const clock = new FakeClock();
    const src = await agentAs(SRC, clock);
    const dst = await agentAs(DST, clock);
    await src.driver.create(vmSpec(1), true);
    const token = 'ab'.repeat(16);
    await dst.call(AGENT_PATHS.vmPrepareMigration, { vm: { ...vmSpec(1), state: 'Running' }, token });
    const sc = readChannel(src, { clock, ...SRC });
    const dc = readChannel(dst, { clock, ...DST });
    await Promise.all([sc.status, dc.status]);
    // the VM created before the channel opened comes first
    await until(() => sc.frames.length === 1);
    expect((await src.call(AGENT_PATHS.vmMigrate, { vmUuid: UUID, destinationUrl: dst.url, token })).status).toBe(200);
    await until(() => sc.frames.length === 3 && dc.frames.length === 2);
    expect(sc.frames.slice(1)).toEqual([
      { t: 'vm', vmUuid: UUID, vm: { ...vmSpec(1), state: 'Migrating', migratingTo: dst.url } },
      { t: 'vm', vmUuid: UUID, vm: null },
    ]);
    expect(vmFrames(dc.frames)).toEqual([[UUID, 'Migrating'], [UUID, 'Running']]);
    // the token is spent: a stranger's resend after the VM left the destination is refused
    await dst.driver.destroy(UUID);
    const again = await rawRequest(dst.url + AGENT_PATHS.vmReceive, 'POST', { [MIGRATION_TOKEN_HEADER]: token }, JSON.stringify({ vm: vmSpec(1) }));
    expect(again.status).toBe(401);
  });
});
