/**
 * The controller's side of signed answers and VM pushes, against a real in-process agent
 * and the fake agent: AgentClient accepts only answers signed with the host secret for its
 * own request, openChannel checks the channel's signed 200 and hands `vm` frames to onVm.
 */
import { describe, expect, it } from 'vitest';
import { openChannel } from '../../controller/agents/channel.ts';
import { AgentClient, AgentError, type AgentTarget } from '../../controller/agents/client.ts';
import { AGENT_PATHS, type AgentVm } from '../../protocol/agent.ts';
import { HOST_UUID, makeAgent, SECRET, until, vmSpec } from '../agent/helpers.ts';
import { FakeAgent } from '../fakes/agent.ts';
import { testCa } from '../fakes/pki.ts';

// The agents here have no certificate from a CA (not certified): TLS unchecked, signatures checked.
const ca = await testCa();
const client = () => new AgentClient(() => Date.now(), 10, 10, ca.tls);
const targetOf = (port: number, secret = SECRET): AgentTarget => ({ uuid: HOST_UUID, managementIp: '127.0.0.1', agentPort: port, secret, tls: ca.tls });

async function fake(signAnswers: boolean): Promise<FakeAgent> {
  const f = new FakeAgent('127.0.0.1', HOST_UUID, SECRET);
  f.signAnswers = signAnswers;
  await f.listen();
  return f;
}

describe('signed answers (controller client)', () => {
  it('accepts a real agent\'s signed answers, errors included (with status and code)', async () => {
    const a = await makeAgent();
    await a.driver.create(vmSpec(1), true);
    a.sim.inject({ op: 'shutdown', hang: true });
    const c = client();
    const list = await c.call<{ success: boolean; vms: AgentVm[] }>(targetOf(a.port), AGENT_PATHS.vmList, {}, 5_000);
    expect(list.body.vms).toEqual([{ ...vmSpec(1), state: 'Running' }]);
    const err = await c.call(targetOf(a.port), AGENT_PATHS.vmStop, { vmUuid: vmSpec(1).uuid, graceTimeoutMs: 1 }, 5_000).catch((e) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect(err).toMatchObject({ kind: 'refused', status: 409, code: 'GRACE_TIMEOUT' });
  });

  it.each([
    ['an impostor that answers unsigned', false, SECRET],
    ['an agent whose secret differs (its 401)', true, 'another-secret-0123456789'],
  ])('refuses %s as unauthorized', async (_n, sign, secret) => {
    const f = await fake(sign);
    try {
      const err = await client().call(targetOf(f.port, secret), AGENT_PATHS.echo, {}, 5_000).catch((e) => e);
      expect(err).toMatchObject({ kind: 'unauthorized' });
      const ch = await openChannel(targetOf(f.port, secret), () => Date.now(), 5_000, () => {}).catch((e) => e);
      expect(ch).toMatchObject({ kind: 'unauthorized' });
    } finally {
      f.kill();
    }
  });

  it('the fake agent signs like the real one', async () => {
    const f = await fake(true);
    try {
      const r = await client().call(targetOf(f.port), AGENT_PATHS.echo, {}, 5_000);
      expect(r.body).toEqual({ success: true });
    } finally {
      f.kill();
    }
  });
});

describe('vm frames (controller channel)', () => {
  it('hands each vm frame of a real agent to onVm', async () => {
    const a = await makeAgent();
    const seen: [string, string | null][] = [];
    const ch = await openChannel(targetOf(a.port), () => Date.now(), 5_000, () => {}, (uuid, vm) => seen.push([uuid, vm?.state ?? null]));
    try {
      await a.driver.create(vmSpec(1), true);
      await a.sim.simulatePause(vmSpec(1).uuid);
      await a.driver.destroy(vmSpec(1).uuid).catch(() => undefined);
      await a.sim.simulateCrash(vmSpec(1).uuid).catch(() => undefined);
      await until(() => seen.length === 3);
      expect(seen).toEqual([[vmSpec(1).uuid, 'Running'], [vmSpec(1).uuid, 'Paused'], [vmSpec(1).uuid, null]]);
      // pings still work beside the frames
      expect((await ch.ping(2_000)).instanceId).toBe(a.instanceId);
    } finally {
      ch.close();
    }
  });

  it('the fake agent can push vm frames', async () => {
    const f = await fake(true);
    const seen: string[] = [];
    const ch = await openChannel(targetOf(f.port), () => Date.now(), 5_000, () => {}, (uuid) => seen.push(uuid));
    try {
      await until(() => f.calls.includes(AGENT_PATHS.channel));
      f.pushVm(vmSpec(3).uuid, null);
      await until(() => seen.length === 1);
      expect(seen).toEqual([vmSpec(3).uuid]);
    } finally {
      ch.close();
      f.kill();
    }
  });
});
