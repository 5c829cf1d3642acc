/**
 * Stop (grace: ACPI with a bounded wait; cold: power off), reboot, and pause/resume on the
 * simulator, through the agent's HTTP API, on a fake clock.
 */
import { describe, expect, it } from 'vitest';
import type { Injection } from '../../agent/drivers/simulator.ts';
import { AGENT_PATHS } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { makeAgent, signedPost, until, vmSpec } from './helpers.ts';

const UUID = vmSpec(1).uuid;

type StopCase = [
  name: string,
  setup: { state?: 'Paused'; inject?: Injection },
  body: Record<string, unknown>,
  /** Clock steps (ms) taken once the agent waits on `timers` clock timers. */
  steps: number[],
  expected: { status: number; state: string; code?: string; error?: RegExp },
];

describe('vm/stop', () => {
  it.each<StopCase>([
    ['grace (default), the guest powers off at once', {}, {}, [], { status: 200, state: 'Stopped' }],
    ['cold', { inject: { op: 'shutdown', hang: true } }, { type: 'cold' }, [], { status: 200, state: 'Stopped' }],
    ['grace, the guest takes 5 s of a 10 s timeout', { inject: { op: 'shutdown', delayMs: 5_000 } }, { type: 'grace', graceTimeoutMs: 10_000 }, [5_000], { status: 200, state: 'Stopped' }],
    ['grace, a guest that ignores ACPI', { inject: { op: 'shutdown', hang: true } }, { graceTimeoutMs: 2_000 }, [2_000],
      { status: 409, state: 'Running', code: 'GRACE_TIMEOUT', error: /did not shut down within 2000 ms.*stop it with type cold/ }],
    ['grace with the default timeout (60 s)', { inject: { op: 'shutdown', hang: true } }, {}, [59_999, 1], { status: 409, state: 'Running', code: 'GRACE_TIMEOUT', error: /60000 ms/ }],
    ['grace of a Paused VM', { state: 'Paused' }, {}, [], { status: 409, state: 'Paused', code: 'GRACE_TIMEOUT', error: /is Paused/ }],
    ['grace of another VM\'s hanging guest does not apply', { inject: { op: 'shutdown', hang: true, vmUuid: vmSpec(2).uuid } }, {}, [], { status: 200, state: 'Stopped' }],
    ['an unknown type', {}, { type: 'hard' }, [], { status: 400, state: 'Running', error: /body\.type must be grace or cold/ }],
    ['a zero timeout', {}, { graceTimeoutMs: 0 }, [], { status: 400, state: 'Running', error: /graceTimeoutMs must be an integer > 0/ }],
  ])('%s', async (_n, setup, body, steps, want) => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    await a.driver.create(vmSpec(1), true);
    if (setup.state === 'Paused') await a.sim.simulatePause(UUID);
    if (setup.inject) a.sim.inject(setup.inject);
    const answer = signedPost(a, AGENT_PATHS.vmStop, { vmUuid: UUID, ...body }, { clock });
    for (const ms of steps) {
      await until(() => clock.pending > 0);
      clock.advance(ms);
    }
    const r = await answer;
    expect(r.status).toBe(want.status);
    if (want.status === 200) expect(r.body.vm.state).toBe(want.state);
    else expect(r.body).toEqual({ success: false, error: expect.stringMatching(want.error!), ...(want.code ? { code: want.code } : {}) });
    expect((await a.driver.get(UUID))!.state).toBe(want.state);
  });

  it('a guest slower than the timeout still powers off later, as a real one would', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    await a.driver.create(vmSpec(1), true);
    a.sim.inject({ op: 'shutdown', delayMs: 5_000 });
    const answer = signedPost(a, AGENT_PATHS.vmStop, { vmUuid: UUID, graceTimeoutMs: 2_000 }, { clock });
    await until(() => clock.pending === 2);
    clock.advance(2_000);
    expect((await answer).body.code).toBe('GRACE_TIMEOUT');
    expect((await a.driver.get(UUID))!.state).toBe('Running');
    clock.advance(3_000);
    await until(async () => (await a.driver.get(UUID))!.state === 'Stopped');
  });
});

describe('vm/reboot, pause and resume', () => {
  it.each([
    ['a Running VM', 'Running', 200, /.*/],
    ['a Stopped VM', 'Stopped', 409, /is Stopped; only a Running VM reboots/],
    ['a Paused VM', 'Paused', 409, /is Paused; only a Running VM reboots/],
  ])('reboot of %s', async (_n, state, status, error) => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), state !== 'Stopped');
    if (state === 'Paused') await a.sim.simulatePause(UUID);
    const r = await signedPost(a, AGENT_PATHS.vmReboot, { vmUuid: UUID });
    expect(r.status).toBe(status);
    if (status === 200) expect(r.body.vm).toEqual({ ...vmSpec(1), state: 'Running' });
    else expect(r.body.error).toMatch(error);
    expect((await signedPost(a, AGENT_PATHS.vmReboot, { vmUuid: vmSpec(9).uuid })).status).toBe(404);
  });

  it('a paused VM is listed Paused, counts in capacity, survives a restart paused, and start resumes it', async () => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), true);
    await a.sim.simulatePause(UUID);
    expect((await signedPost(a, AGENT_PATHS.vmList, {})).body.vms).toEqual([{ ...vmSpec(1), state: 'Paused' }]);
    expect((await signedPost(a, AGENT_PATHS.capacity, {})).body.capacity).toMatchObject({ usedCpu: 2, usedMemory: 1024 ** 3 });
    await a.stop();
    const b = await makeAgent({ stateDir: a.stateDir });
    expect((await b.driver.get(UUID))!.state).toBe('Paused');
    expect((await signedPost(b, AGENT_PATHS.vmStart, { vmUuid: UUID })).body.vm.state).toBe('Running');
  });

  it.each([
    ['crash of a Running VM', 'Running', (a: Awaited<ReturnType<typeof makeAgent>>) => a.sim.simulateCrash(UUID), 'Stopped'],
    ['crash of a Paused VM', 'Paused', (a: Awaited<ReturnType<typeof makeAgent>>) => a.sim.simulateCrash(UUID), 'Stopped'],
    ['pause', 'Running', (a: Awaited<ReturnType<typeof makeAgent>>) => a.sim.simulatePause(UUID), 'Paused'],
    ['resume', 'Paused', (a: Awaited<ReturnType<typeof makeAgent>>) => a.sim.simulateResume(UUID), 'Running'],
  ])('test hook: %s', async (_n, from, hook, to) => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), true);
    if (from === 'Paused') await a.sim.simulatePause(UUID);
    expect((await hook(a)).state).toBe(to);
    expect((await a.driver.get(UUID))!.state).toBe(to);
  });

  it('test hooks refuse a VM in the wrong state', async () => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), false);
    await expect(a.sim.simulatePause(UUID)).rejects.toMatchObject({ status: 409 });
    await expect(a.sim.simulateCrash(vmSpec(9).uuid)).rejects.toMatchObject({ status: 404 });
  });
});
