/**
 * The connect flow and the tracker rules against fake agents on loopback: table-driven over
 * reply kinds x host states x configs. Timers run on a fake clock (moved by hand); the only
 * real waiting is for loopback I/O to land.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_PATHS } from '../../protocol/agent.ts';
import type { HostRow, TagRow } from '../../protocol/resources.ts';
import { insertHost } from '../../controller/services/inventory.ts';
import { FakeAgent } from '../fakes/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { makeCluster, makeController, makeZone, type TestController } from '../helpers.ts';

let ctls: TestController[] = [];
let fakes: FakeAgent[] = [];
let ipSeq = 10;
afterEach(async () => {
  for (const f of fakes) f.kill();
  for (const t of ctls) await t.close().catch(() => undefined);
  ctls = [];
  fakes = [];
});

/** Waits (for real I/O, not time) until `pred` holds. */
async function until(pred: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function setup(n = 1, configs: Record<string, string> = {}) {
  // Signatures carry the clock's time, checked by the fake agent against the real one.
  const clock = new FakeClock(Date.now());
  const t = await makeController({ clock });
  ctls.push(t);
  for (const [k, v] of Object.entries(configs)) {
    const [category, name] = k.split('/') as [string, string];
    const row = await t.core.repo.transaction((tx) => t.core.configs.prepareUpdate(tx, category, name, v));
    t.core.configs.applied(row);
  }
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  const hosts: { uuid: string; fake: FakeAgent }[] = [];
  for (let i = 0; i < n; i++) {
    const ip = `127.0.9.${ipSeq++}`;
    const secret = 'ab'.repeat(32);
    const row = await t.core.repo.transaction(async (tx) => {
      const h = await insertHost(tx, clock.now(), { name: `h${i}`, managementIp: ip, clusterUuid: cluster.uuid }, 'Disconnected', 'new');
      return tx.update<HostRow>('host', h.uuid, { agentSecret: secret });
    });
    const fake = new FakeAgent(ip, row.uuid, secret);
    fakes.push(fake);
    await fake.listen();
    await t.core.repo.transaction((tx) => tx.update<HostRow>('host', row.uuid, { agentPort: fake.port }));
    hosts.push({ uuid: row.uuid, fake });
  }
  const status = async (uuid: string) => ((await t.core.repo.get<HostRow>('host', uuid))!).status;
  const reason = async (uuid: string) => ((await t.core.repo.get<HostRow>('host', uuid))!).statusReason;
  return { t, clock, hosts, status, reason };
}

describe('connect flow', () => {
  it('reaches the agent, writes metadata tags and capacity, syncs VMs, opens the channel: Connected', async () => {
    const { t, hosts, status } = await setup();
    const { uuid, fake } = hosts[0]!;
    fake.vms = [{ uuid: 'a1'.repeat(16), name: 'web', state: 'Running', memorySize: 2 ** 30, cpuNum: 2, vmNics: [{ ip: '10.0.0.5', mac: 'fa:00' }] }];
    await t.core.agents.connect(uuid);
    expect(await status(uuid)).toBe('Connected');
    expect(fake.calls).toEqual([AGENT_PATHS.echo, AGENT_PATHS.connect, AGENT_PATHS.fact, AGENT_PATHS.capacity, AGENT_PATHS.vmList, AGENT_PATHS.channel]);
    const tags = (await t.core.repo.find<TagRow>('tag', { resourceUuid: uuid })).map((x) => x.tag).sort();
    expect(tags).toEqual(['capability:liveSnapshot', 'hvm::vmx', 'libvirt::version::9.0.0', 'os::distribution::debian', 'os::release::bookworm', 'os::version::12', 'qemu-img::version::7.2.0']);
    const h = (await t.core.repo.get<HostRow>('host', uuid))!;
    // CPU capacity is cpuNum x host/cpu.overProvisioning.ratio (10): 80, less the VM's 2.
    expect(h).toMatchObject({ cpuNum: 8, totalMemoryCapacity: 16 * 2 ** 30, availableMemoryCapacity: 15 * 2 ** 30, totalCpuCapacity: 80, availableCpuCapacity: 78 });
    expect((await t.core.repo.find('vm', { hostUuid: uuid })).map((v) => v.uuid)).toEqual(['a1'.repeat(16)]);
    expect(t.core.agents.isTracked(uuid)).toBe(true);
  });

  it('removes a metadata tag the host stopped having on the next connect', async () => {
    const { t, hosts } = await setup();
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    fake.facts = { ...fake.facts, hvm: null, qemuImgVersion: null };
    await t.core.agents.connect(uuid);
    const tags = (await t.core.repo.find<TagRow>('tag', { resourceUuid: uuid })).map((x) => x.tag);
    expect(tags.some((x) => x.startsWith('hvm::') || x.startsWith('qemu-img::'))).toBe(false);
    expect(tags).toContain('os::distribution::debian');
  });

  it.each([
    [AGENT_PATHS.echo, { kind: 'error', status: 500, message: 'boom' }, /echo.*boom/],
    [AGENT_PATHS.connect, { kind: 'hang' }, /host\/connect did not answer within 1000 ms/],
    [AGENT_PATHS.fact, { kind: 'reset' }, /host\/fact closed the connection/],
    [AGENT_PATHS.capacity, { kind: 'error', status: 503, message: 'busy' }, /capacity answered 503: busy/],
    [AGENT_PATHS.vmList, { kind: 'error', status: 500, message: 'virsh failed' }, /virsh failed/],
  ] as const)('a failure at %s leaves the host Disconnected with the reason', async (path, b, re) => {
    const { t, hosts, status, reason } = await setup(1, { 'host/ping.timeout': '1' });
    const { uuid, fake } = hosts[0]!;
    fake.behaviour[path] = b;
    const err = await t.core.agents.connect(uuid).catch((e) => e);
    expect(err.code).toBe('HOST.1003');
    expect(err.details).toMatch(re);
    expect(await status(uuid)).toBe('Disconnected');
    expect(await reason(uuid)).toMatch(re);
    expect(t.core.agents.isTracked(uuid)).toBe(false);
  });

  it('a wrong secret is refused by the agent and named as such', async () => {
    const { t, hosts, reason } = await setup();
    hosts[0]!.fake.secret = 'cd'.repeat(32);
    await expect(t.core.agents.connect(hosts[0]!.uuid)).rejects.toMatchObject({ code: 'HOST.1003' });
    expect(await reason(hosts[0]!.uuid)).toMatch(/refused our signature/);
  });

  it('is single-flight per host', async () => {
    const { t, hosts } = await setup();
    const { uuid, fake } = hosts[0]!;
    await Promise.all([t.core.agents.connect(uuid), t.core.agents.connect(uuid), t.core.agents.connect(uuid)]);
    expect(fake.calls.filter((c) => c === AGENT_PATHS.connect)).toHaveLength(1);
  });

  it('refuses to connect a host in maintenance', async () => {
    const { t, hosts } = await setup();
    await t.core.repo.transaction((tx) => tx.update<HostRow>('host', hosts[0]!.uuid, { state: 'Maintenance' }));
    await expect(t.core.agents.connect(hosts[0]!.uuid)).rejects.toMatchObject({ code: 'SYS.1006' });
  });
});

type Reply = 'ok' | 'agent-restarted' | 'host-rebooted' | 'taken-over' | 'dead';
// [reply, host state, autoReconnect] -> [status after, reconnected (a second /host/connect), reconnect scheduled]
const TABLE: [Reply, 'Enabled' | 'Disabled' | 'Maintenance', boolean, 'Connected' | 'Disconnected', boolean, boolean][] = [
  ['ok', 'Enabled', true, 'Connected', false, false],
  ['ok', 'Disabled', true, 'Connected', false, false],
  ['agent-restarted', 'Enabled', true, 'Connected', true, false],
  ['agent-restarted', 'Disabled', false, 'Connected', true, false],
  ['host-rebooted', 'Enabled', true, 'Connected', true, false],
  ['taken-over', 'Enabled', true, 'Connected', true, false],
  ['dead', 'Enabled', true, 'Disconnected', false, true],
  ['dead', 'Enabled', false, 'Disconnected', false, false],
  ['dead', 'Disabled', true, 'Disconnected', false, true],
  // Hosts in maintenance are not pinged at all: nothing changes.
  ['dead', 'Maintenance', true, 'Connected', false, false],
  ['agent-restarted', 'Maintenance', true, 'Connected', false, false],
];

describe('tracker rules: reply x state x autoReconnect', () => {
  it.each(TABLE)('%s reply, %s host, autoReconnect=%s -> %s (reconnect %s, retry scheduled %s)', async (reply, state, auto, want, reconnected, scheduled) => {
    const { t, hosts, status } = await setup(1, { 'host/connection.autoReconnectOnError': String(auto), 'host/ping.timeout': '1' });
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    await t.core.repo.transaction((tx) => tx.update<HostRow>('host', uuid, { state }));
    const connectsBefore = fake.calls.filter((c) => c === AGENT_PATHS.connect).length;
    switch (reply) {
      case 'agent-restarted': fake.restart(); break;
      case 'host-rebooted': fake.identity = { ...fake.identity, bootId: 'boot-2' }; break;
      case 'taken-over': fake.identity = { ...fake.identity, hostUuid: 'ff'.repeat(16) }; break;
      case 'dead':
        fake.answerChannelPings = false;
        fake.behaviour[AGENT_PATHS.ping] = { kind: 'error', status: 500, message: 'dying' };
        break;
      default:
    }
    await t.core.agents.pingTracked(uuid);
    if (reconnected) await until(async () => fake.calls.filter((c) => c === AGENT_PATHS.connect).length > connectsBefore && (await status(uuid)) === 'Connected', 'reconnect');
    expect(await status(uuid)).toBe(want);
    expect(fake.calls.filter((c) => c === AGENT_PATHS.connect).length > connectsBefore).toBe(reconnected);
    expect((t.core.agents as any).reconnecting.has(uuid)).toBe(scheduled);
  });
});

describe('failure detection', () => {
  it('an agent killed is Disconnected at once (channel closes, quick ping refused), then reconnected when it is back', async () => {
    const { t, clock, hosts, status, reason } = await setup();
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    const port = fake.port;
    fake.kill();
    await until(async () => (await status(uuid)) === 'Disconnected', 'Disconnected');
    expect(await reason(uuid)).toMatch(/channel|closed|refused/);
    // Back on the same address: the capped-backoff reconnect (on the fake clock) finds it.
    const back = new FakeAgent(fake.ip, uuid, fake.secret);
    fakes.push(back);
    await back.listen(port);
    for (let i = 0; i < 20 && (await status(uuid)) !== 'Connected'; i++) {
      clock.advance(2000);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await status(uuid)).toBe('Connected');
  });

  it('a host whose heartbeats stop is Disconnected once the deadline passes, not before', async () => {
    const { t, clock, hosts, status } = await setup();
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    fake.heartbeats = false;
    clock.advance(1400);
    expect(await status(uuid)).toBe('Connected');
    clock.advance(400);
    await until(async () => (await status(uuid)) === 'Disconnected', 'Disconnected after silence');
  });

  it('a stalled controller does not blame the hosts for its own lateness', async () => {
    const { t, clock, hosts, status } = await setup();
    const { uuid } = hosts[0]!;
    await t.core.agents.connect(uuid);
    // The checker's own timer fires 5 s late: that time is granted, not counted as silence.
    (t.core.agents as any).lastCheck = clock.now();
    (clock as any).t += 5000;
    t.core.agents.checkHeartbeats();
    expect(await status(uuid)).toBe('Connected');
  });

  it('timer jitter of a few ms does not hide a silent host', async () => {
    const { t, clock, hosts, status } = await setup();
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    fake.heartbeats = false;
    t.core.agents.checkHeartbeats = t.core.agents.checkHeartbeats.bind(t.core.agents);
    (t.core.agents as any).lastCheck = clock.now();
    for (let i = 0; i < 10; i++) {
      (clock as any).t += 205; // each check 5 ms late, as real timers are
      t.core.agents.checkHeartbeats();
    }
    await until(async () => (await status(uuid)) === 'Disconnected', 'Disconnected despite jitter');
  });

  it('pings go out every ping.interval, and a new interval applies without restart', async () => {
    const { t, clock, hosts } = await setup(1, { 'host/ping.timeout': '1', 'host/ping.interval': '10' });
    const { uuid, fake } = hosts[0]!;
    await t.core.agents.connect(uuid);
    // Fake time runs far ahead of the fake agent's real-time heartbeats here; this test is
    // about ping scheduling only, so the silence check is switched off.
    t.core.agents.checkHeartbeats = () => undefined;
    const count = async (ms: number) => {
      const before = fake.channelPings;
      const tracked = (t.core.agents as any).tracked.get(uuid);
      for (let s = 0; s < ms; s += 1000) {
        clock.advance(1000);
        await new Promise((r) => setTimeout(r, 1));
        await until(() => !tracked.pingInFlight, 'ping answered');
      }
      return fake.channelPings - before;
    };
    const first = await count(60_000);
    expect(first).toBeGreaterThanOrEqual(5);
    expect(first).toBeLessThanOrEqual(7);
    await t.core.repo.transaction((tx) => t.core.configs.prepareUpdate(tx, 'host', 'ping.interval', '2')).then((r) => t.core.configs.applied(r));
    const second = await count(60_000);
    // The next ping is timed from the end of the previous one, and this test moves time in
    // 1 s steps, so each ping may slip up to 1 s: 60 s at 2 s gives 20-31 pings.
    expect(second).toBeGreaterThanOrEqual(20);
    expect(second).toBeGreaterThanOrEqual(3 * first);
    expect(t.core.agents.isTracked(uuid)).toBe(true);
  });

  it('never more than ping.parallelismDegree pings in flight', async () => {
    const { t, hosts } = await setup(6, { 'host/ping.parallelismDegree': '2' });
    for (const h of hosts) await t.core.agents.connect(h.uuid);
    let peak = 0;
    const sem = (t.core.agents as any).pingLimit;
    for (const h of hosts) h.fake.answerChannelPings = false;
    for (const h of hosts) h.fake.behaviour[AGENT_PATHS.ping] = { kind: 'slow', ms: 100 };
    const timer = setInterval(() => (peak = Math.max(peak, sem.inFlight)), 2);
    await t.core.repo.transaction((tx) => t.core.configs.prepareUpdate(tx, 'host', 'ping.timeout', '1')).then((r) => t.core.configs.applied(r));
    await Promise.all(hosts.map((h) => t.core.agents.pingTracked(h.uuid)));
    clearInterval(timer);
    expect(peak).toBe(2);
  }, 20_000);

  it('mass failure: when most hosts drop at once the brake holds automatic reconnects', async () => {
    const { t, hosts, status } = await setup(6);
    for (const h of hosts) await t.core.agents.connect(h.uuid);
    for (const h of hosts.slice(0, 4)) h.fake.kill();
    await until(async () => (await Promise.all(hosts.slice(0, 4).map((h) => status(h.uuid)))).every((s) => s === 'Disconnected'), 'drops');
    expect(t.core.agents.brakeHeld).toBe(true);
    expect(await status(hosts[5]!.uuid)).toBe('Connected');
  });
});

describe('start-up', () => {
  it('connects every host; during the grace window a host whose agent is not up yet is retried, not given up', async () => {
    const { t, clock, hosts, status } = await setup(3);
    const late = hosts[2]!;
    const port = late.fake.port;
    late.fake.kill();
    const loading = t.core.agents.loadAll();
    await until(async () => (await status(hosts[0]!.uuid)) === 'Connected' && (await status(hosts[1]!.uuid)) === 'Connected', 'first two');
    expect(await status(late.uuid)).not.toBe('Connected');
    const back = new FakeAgent(late.fake.ip, late.uuid, late.fake.secret);
    fakes.push(back);
    await back.listen(port);
    for (let i = 0; i < 30 && (await status(late.uuid)) !== 'Connected'; i++) {
      clock.advance(2000);
      await new Promise((r) => setTimeout(r, 30));
    }
    await loading;
    expect(await status(late.uuid)).toBe('Connected');
  });
});
