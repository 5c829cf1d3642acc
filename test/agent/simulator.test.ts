/**
 * VMs on the simulated hypervisor through the agent's HTTP API: lifecycle, persistence
 * across agent restarts, injected latency and failures.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseInjections, SIM_FILE, SimulatorDriver } from '../../agent/drivers/simulator.ts';
import { AGENT_PATHS } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { makeAgent, signedPost, tempDir, testOs, vmSpec } from './helpers.ts';

describe('VM lifecycle on the simulator', () => {
  it('create, list, stop, start, destroy', async () => {
    const a = await makeAgent();
    const spec = vmSpec(1);
    const created = await signedPost(a, AGENT_PATHS.vmCreate, { vm: spec, start: true });
    expect(created.body).toEqual({ success: true, vm: { ...spec, state: 'Running' } });

    const stopped = await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(2) });
    expect(stopped.body.vm.state).toBe('Stopped');

    expect((await signedPost(a, AGENT_PATHS.vmList, {})).body).toEqual({
      success: true,
      vms: [{ ...spec, state: 'Running' }, { ...vmSpec(2), state: 'Stopped' }],
    });
    expect((await signedPost(a, AGENT_PATHS.vmStop, { vmUuid: spec.uuid })).body.vm.state).toBe('Stopped');
    expect((await signedPost(a, AGENT_PATHS.vmStart, { vmUuid: spec.uuid })).body.vm.state).toBe('Running');
    const destroyed = await signedPost(a, AGENT_PATHS.vmDestroy, { vmUuid: spec.uuid });
    expect(destroyed.body).toEqual({ success: true, vm: { ...spec, state: 'Stopped' } });
    expect((await signedPost(a, AGENT_PATHS.vmList, {})).body.vms.map((v: { uuid: string }) => v.uuid)).toEqual([vmSpec(2).uuid]);
  });

  it.each([
    ['create of an existing uuid', AGENT_PATHS.vmCreate, { vm: vmSpec(1) }, 409, /vm\[uuid:00000001.*already exists/],
    ['start of an unknown VM', AGENT_PATHS.vmStart, { vmUuid: vmSpec(7).uuid }, 404, /vm\[uuid:00000007.*is not on this host/],
    ['stop of an unknown VM', AGENT_PATHS.vmStop, { vmUuid: vmSpec(7).uuid }, 404, /not on this host/],
    ['destroy of an unknown VM', AGENT_PATHS.vmDestroy, { vmUuid: vmSpec(7).uuid }, 404, /not on this host/],
    ['a VM without a name', AGENT_PATHS.vmCreate, { vm: vmSpec(5, { name: '' }) }, 400, /body\.vm\.name/],
    ['a VM with 0 memory', AGENT_PATHS.vmCreate, { vm: vmSpec(5, { memorySize: 0 }) }, 400, /body\.vm\.memorySize must be an integer > 0/],
    ['a NIC with a bad MAC', AGENT_PATHS.vmCreate, { vm: vmSpec(5, { vmNics: [{ ip: '10.0.0.1', mac: 'zz' }] }) }, 400, /body\.vm\.vmNics\[0\]\.mac/],
    ['a NIC with a bad IP', AGENT_PATHS.vmCreate, { vm: vmSpec(5, { vmNics: [{ ip: '10.0.0.300', mac: '52:54:00:00:00:01' }] }) }, 400, /vmNics\[0\]\.ip/],
    ['a bad vmUuid', AGENT_PATHS.vmStart, { vmUuid: 'nope' }, 400, /body\.vmUuid must be a uuid/],
  ])('refuses %s', async (_n, path, body, status, error) => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), false);
    const r = await signedPost(a, path, body);
    expect(r.status).toBe(status);
    expect(r.body).toEqual({ success: false, error: expect.stringMatching(error) });
  });

  it('keeps VMs, hardware and boot id across agent restarts (atomic JSON file in the state dir)', async () => {
    const a = await makeAgent();
    await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true });
    await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(2) });
    await a.sim.setHardware({ cpuNum: 4 });
    const bootId = a.identity().bootId;
    await a.stop();

    const onDisk = JSON.parse(await readFile(join(a.stateDir, SIM_FILE), 'utf8'));
    expect(onDisk.vms).toHaveLength(2);

    const b = await makeAgent({ stateDir: a.stateDir });
    expect((await signedPost(b, AGENT_PATHS.vmList, {})).body.vms).toEqual([{ ...vmSpec(1), state: 'Running' }, { ...vmSpec(2), state: 'Stopped' }]);
    expect((await b.facts()).cpuNum).toBe(4);
    expect(b.identity().bootId).toBe(bootId);
  });

  it('a killed agent loses nothing it had answered', async () => {
    const a = await makeAgent();
    await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true });
    a.kill();
    const b = await makeAgent({ stateDir: a.stateDir });
    expect((await b.driver.list()).map((v) => v.state)).toEqual(['Running']);
  });
});

describe('fault injection', () => {
  it('fails an operation with the injected message, then works again (times)', async () => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), false);
    a.sim.inject({ op: 'start', fail: 'qemu: could not open disk', times: 1 });
    const r = await signedPost(a, AGENT_PATHS.vmStart, { vmUuid: vmSpec(1).uuid });
    expect(r.status).toBe(500);
    expect(r.body).toEqual({ success: false, error: 'qemu: could not open disk' });
    expect((await a.driver.get(vmSpec(1).uuid))!.state).toBe('Stopped');
    expect((await signedPost(a, AGENT_PATHS.vmStart, { vmUuid: vmSpec(1).uuid })).body.vm.state).toBe('Running');
  });

  it('delays an operation on the injected clock (no sleeping in the test)', async () => {
    const clock = new FakeClock();
    const dir = await tempDir();
    const d = await SimulatorDriver.open({ stateDir: dir, clock, inject: [], osFacts: testOs });
    await d.create(vmSpec(1), false);
    const remove = d.inject({ op: 'start', delayMs: 5_000 });
    let done = false;
    const p = d.start(vmSpec(1).uuid).then((vm) => {
      done = true;
      return vm;
    });
    await new Promise((r) => setImmediate(r));
    clock.advance(4_999);
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    clock.advance(1);
    expect((await p).state).toBe('Running');
    remove();
    expect((await d.stop(vmSpec(1).uuid)).state).toBe('Stopped');
    await d.close();
  });

  it('takes faults from HK_SIM_INJECT', async () => {
    expect(parseInjections('[{"op":"create","fail":"no space"},{"op":"stop","delayMs":10,"times":2}]')).toEqual([
      { op: 'create', fail: 'no space', delayMs: undefined, times: undefined },
      { op: 'stop', delayMs: 10, fail: undefined, times: 2 },
    ]);
    expect(() => parseInjections('[{"op":"explode"}]')).toThrow(/op must be one of/);
    expect(() => parseInjections('nope')).toThrow(/JSON array/);
    const old = process.env.HK_SIM_INJECT;
    process.env.HK_SIM_INJECT = '[{"op":"create","fail":"no space left"}]';
    try {
      const d = await SimulatorDriver.open({ stateDir: await tempDir(), osFacts: testOs });
      await expect(d.create(vmSpec(1), false)).rejects.toThrow('no space left');
      await d.close();
    } finally {
      if (old === undefined) delete process.env.HK_SIM_INJECT;
      else process.env.HK_SIM_INJECT = old;
    }
  });
});
