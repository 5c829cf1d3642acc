/**
 * Host commands: echo, connect/ping identity (the restart-detection trick), facts,
 * capacity, update/configuration.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_PATHS, AGENT_VERSION } from '../../protocol/agent.ts';
import { HOST_UUID, makeAgent, signedPost, TEST_OS, vmSpec } from './helpers.ts';

const CONTROLLER = 'http://10.1.2.3:8080';

describe('echo, connect, ping', () => {
  it('echo answers success', async () => {
    const a = await makeAgent();
    expect((await signedPost(a, AGENT_PATHS.echo, {})).body).toEqual({ success: true });
    expect((await signedPost(a, AGENT_PATHS.echo, '')).body).toEqual({ success: true });
  });

  it('reports hostUuid null until the first connect in this process, then the host uuid', async () => {
    const a = await makeAgent();
    const before = await signedPost(a, AGENT_PATHS.ping, { hostUuid: HOST_UUID });
    expect(before.body).toEqual({ success: true, hostUuid: null, agentVersion: AGENT_VERSION, bootId: expect.any(String), instanceId: a.instanceId });

    const c = await signedPost(a, AGENT_PATHS.connect, { hostUuid: HOST_UUID, controllerUrl: CONTROLLER });
    expect(c.status).toBe(200);
    expect(c.body).toEqual({ success: true, hostUuid: HOST_UUID, agentVersion: AGENT_VERSION, bootId: before.body.bootId, instanceId: a.instanceId });
    expect((await signedPost(a, AGENT_PATHS.ping, { hostUuid: HOST_UUID })).body.hostUuid).toBe(HOST_UUID);

    // connect persisted the controller URL
    const saved = JSON.parse(await readFile(join(a.stateDir, 'agent.json'), 'utf8'));
    expect(saved).toEqual({ hostUuid: HOST_UUID, secret: expect.any(String), controllerUrl: CONTROLLER });
  });

  it('after an agent restart: hostUuid null again, a new instanceId, the same bootId; setBootId changes it', async () => {
    const a = await makeAgent();
    await signedPost(a, AGENT_PATHS.connect, { hostUuid: HOST_UUID, controllerUrl: CONTROLLER });
    const first = (await signedPost(a, AGENT_PATHS.ping, {})).body;
    await a.stop();

    const b = await makeAgent({ stateDir: a.stateDir });
    const second = (await signedPost(b, AGENT_PATHS.ping, {})).body;
    expect(second.hostUuid).toBeNull();
    expect(second.instanceId).not.toBe(first.instanceId);
    expect(second.bootId).toBe(first.bootId);
    // the persisted identity still authenticates, and the controller URL survived
    expect(b.config().controllerUrl).toBe(CONTROLLER);

    await b.setBootId('11111111-2222-3333-4444-555555555555');
    expect((await signedPost(b, AGENT_PATHS.ping, {})).body.bootId).toBe('11111111-2222-3333-4444-555555555555');
    await b.stop();
    const c = await makeAgent({ stateDir: a.stateDir });
    expect(c.identity().bootId).toBe('11111111-2222-3333-4444-555555555555');
  });

  it.each([
    ['a connect for another host uuid', { hostUuid: 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', controllerUrl: CONTROLLER }, 409, /this agent is host\[uuid:aaaa/],
    ['no controllerUrl', { hostUuid: HOST_UUID }, 400, /body\.controllerUrl must be an http\(s\) URL/],
    ['a bad host uuid', { hostUuid: 'x', controllerUrl: CONTROLLER }, 400, /body\.hostUuid must be a uuid/],
    ['not an object', [1, 2], 400, /body must be a JSON object/],
  ])('refuses %s', async (_n, body, status, error) => {
    const a = await makeAgent();
    const r = await signedPost(a, AGENT_PATHS.connect, body);
    expect(r.status).toBe(status);
    expect(r.body.success).toBe(false);
    expect(r.body.error).toMatch(error);
    expect(r.text).not.toMatch(/at .*\.ts:\d+/); // never a stack
    expect(a.identity().hostUuid).toBeNull();
  });

  it('update/configuration changes and persists the controller URL', async () => {
    const a = await makeAgent();
    const r = await signedPost(a, AGENT_PATHS.updateConfig, { controllerUrl: 'http://10.9.9.9:8080/' });
    expect(r.body).toEqual({ success: true });
    expect(a.config().controllerUrl).toBe('http://10.9.9.9:8080');
    expect(JSON.parse(await readFile(join(a.stateDir, 'agent.json'), 'utf8')).controllerUrl).toBe('http://10.9.9.9:8080');
  });
});

describe('facts and capacity', () => {
  it('fact answers the simulated host facts with the real-process OS facts', async () => {
    const a = await makeAgent();
    const r = await signedPost(a, AGENT_PATHS.fact, {});
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      success: true,
      facts: {
        ...TEST_OS,
        architecture: expect.stringMatching(/^[a-z0-9_]+$/),
        qemuImgVersion: '7.2.0',
        libvirtVersion: '9.0.0',
        hvm: 'vmx',
        cpuModel: expect.any(String),
        cpuCores: 16,
        cpuSockets: 2,
        cpuNum: 32,
        cpuMhz: 2400,
        memoryBytes: 128 * 1024 ** 3,
        bootId: a.identity().bootId,
        agentVersion: AGENT_VERSION,
        hypervisor: 'simulator',
        liveSnapshot: true,
      },
    });
  });

  it('simulated hardware is settable per host', async () => {
    const a = await makeAgent({ simulator: { osFacts: async () => TEST_OS, inject: [], hardware: { cpuNum: 8, hvm: 'svm', memoryBytes: 8 * 1024 ** 3 } } });
    const f = (await signedPost(a, AGENT_PATHS.fact, {})).body.facts;
    expect(f).toMatchObject({ cpuNum: 8, hvm: 'svm', memoryBytes: 8 * 1024 ** 3 });
    await a.sim.setHardware({ hvm: null, qemuImgVersion: null });
    expect((await signedPost(a, AGENT_PATHS.fact, {})).body.facts).toMatchObject({ hvm: null, qemuImgVersion: null });
  });

  it('capacity sums running and paused VMs; stopped ones use nothing', async () => {
    const a = await makeAgent({ simulator: { osFacts: async () => TEST_OS, inject: [], hardware: { memoryBytes: 64 * 1024 ** 3, cpuNum: 16 } } });
    await a.driver.create(vmSpec(1, { memorySize: 2 * 1024 ** 3, cpuNum: 2 }), true);
    await a.driver.create(vmSpec(2, { memorySize: 4 * 1024 ** 3, cpuNum: 4 }), true);
    await a.driver.create(vmSpec(3, { memorySize: 8 * 1024 ** 3, cpuNum: 8 }), false);
    const r = await signedPost(a, AGENT_PATHS.capacity, {});
    expect(r.body).toEqual({
      success: true,
      capacity: {
        cpuNum: 16, cpuSockets: 2, cpuMhz: 2400, totalMemory: 64 * 1024 ** 3,
        availablePhysicalMemory: 58 * 1024 ** 3, usedCpu: 6, usedMemory: 6 * 1024 ** 3,
      },
    });
  });
});
