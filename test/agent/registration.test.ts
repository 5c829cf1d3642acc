/**
 * Where the secret comes from (bootstrap-token registration, or a deployment-written
 * agent.json / --config file), and the signed facts push back to the controller.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FactsRefresher } from '../../agent/refresher.ts';
import { RegistrationRefused, StartupError, startAgent } from '../../agent/server.ts';
import { silentLogger } from '../../agent/log.ts';
import { AGENT_PATHS } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { fakeController, HOST_UUID, makeAgent, presentClientCert, SECRET, signedPost, tempDir, testOs, until, writeAgentJson } from './helpers.ts';

const FAST = { initialMs: 5, maxMs: 20 };

describe('bootstrap-token registration', () => {
  it('registers, stores agent.json (0600) and from then on accepts only the issued secret', async () => {
    const fc = await fakeController('good-token');
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', hostname: 'kvm-17', registerBackoff: FAST });
    await a.registered;
    expect(fc.registrations).toEqual([{ token: 'good-token', hostname: 'kvm-17', managementIp: '127.0.0.1', port: a.port, publicKey: expect.stringMatching(/^-----BEGIN PUBLIC KEY-----/) }]);
    const [[hostUuid, secret]] = [...fc.hosts];
    const file = join(a.stateDir, 'agent.json');
    // From now on it talks to the controller's TLS port.
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ hostUuid, secret, controllerUrl: fc.agentUrl });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    // Its CA is pinned now: only the controller's certificate from it gets in.
    presentClientCert(fc.ca.controller);

    expect((await signedPost(a, AGENT_PATHS.echo, {}, { hostUuid, secret })).status).toBe(200);
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { hostUuid, secret: 'guessed-secret-0123456789' })).status).toBe(401);
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { hostUuid: HOST_UUID, secret: SECRET })).status).toBe(401);
  });

  it('retries while the controller answers 5xx or is unreachable', async () => {
    const fc = await fakeController();
    fc.registerScript.push(503, 502, 500);
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', registerBackoff: FAST });
    await a.registered;
    expect(fc.hosts.size).toBe(1);

    // Unreachable: each failed attempt leaves one backoff timer on the (fake) clock.
    const clock = new FakeClock();
    const b = await makeAgent({ clock, withSecret: false, controllerUrl: 'http://127.0.0.1:1', bootstrapToken: 'good-token', registerBackoff: { initialMs: 1_000, maxMs: 4_000 } });
    let settled = false;
    b.registered.then(() => (settled = true), () => (settled = true));
    for (let attempt = 1; attempt <= 4; attempt++) {
      await until(() => clock.pending === 1);
      clock.advance(5_000); // past the largest jittered backoff
    }
    expect(settled).toBe(false);
    expect(b.config().secret).toBeUndefined();
  });

  it.each([
    ['a wrong token (403)', 'bad-token', [], /refused the registration \(HTTP 403\): bootstrap token is not valid/],
    ['an expired token (410)', 'good-token', [410], /refused the registration \(HTTP 410\): scripted 410/],
  ])('stops for good on %s', async (_n, token, script, error) => {
    const fc = await fakeController('good-token');
    fc.registerScript.push(...script);
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: token, registerBackoff: FAST });
    const err = await a.registered.then(() => undefined, (e: Error) => e);
    expect(err).toBeInstanceOf(RegistrationRefused);
    expect(err!.message).toMatch(error);
    expect(a.config().secret).toBeUndefined();
  });

  it('does not register again when agent.json already holds a secret', async () => {
    const fc = await fakeController();
    const a = await makeAgent({ controllerUrl: fc.url, bootstrapToken: 'good-token' });
    await a.registered;
    expect(fc.registrations).toEqual([]);
    expect(a.config().hostUuid).toBe(HOST_UUID);
  });
});

describe('a secret written by the deployment', () => {
  it('takes --config FILE into the state dir (0600)', async () => {
    const dir = await tempDir();
    const cfg = join(await tempDir(), 'deployed.json');
    await writeFile(cfg, JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET, controllerUrl: 'http://10.0.0.1:8080' }));
    const a = await makeAgent({ stateDir: dir, configFile: cfg });
    expect(JSON.parse(await readFile(join(dir, 'agent.json'), 'utf8'))).toEqual({ hostUuid: HOST_UUID, secret: SECRET, controllerUrl: 'http://10.0.0.1:8080' });
    expect((await stat(join(dir, 'agent.json'))).mode & 0o777).toBe(0o600);
    expect((await signedPost(a, AGENT_PATHS.echo, {})).status).toBe(200);
  });

  it('closes an agent.json left readable by others', async () => {
    const dir = await tempDir();
    await writeAgentJson(dir, { hostUuid: HOST_UUID, secret: SECRET }, 0o644);
    await makeAgent({ stateDir: dir });
    expect((await stat(join(dir, 'agent.json'))).mode & 0o777).toBe(0o600);
  });

  it.each([
    ['not JSON', '{', /agent\.json is not valid JSON/],
    ['a secret without host uuid', JSON.stringify({ secret: SECRET }), /has a secret but no hostUuid/],
    ['a short secret', JSON.stringify({ hostUuid: HOST_UUID, secret: 'short' }), /secret must be a string of at least 16/],
    ['a bad controller URL', JSON.stringify({ controllerUrl: 'ftp://x' }), /controllerUrl must be an http\(s\) URL/],
  ])('refuses to start with %s', async (_n, text, error) => {
    const dir = await tempDir();
    await writeFile(join(dir, 'agent.json'), text);
    const err = await startAgent({ stateDir: dir, listen: { host: '127.0.0.1', port: 0 }, hypervisor: 'simulator', log: silentLogger(), refresher: null }).then(
      (a) => a.stop().then(() => undefined),
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(StartupError);
    expect(err!.message).toMatch(error);
  });
});

describe('facts push', () => {
  async function registered() {
    const fc = await fakeController();
    const a = await makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', registerBackoff: FAST, simulator: { osFacts: testOs, inject: [] } });
    await a.registered;
    await a.refreshFacts(); // the baseline: nothing to push
    return { fc, a };
  }

  it('pushes, signed with the host secret, only when the facts changed', async () => {
    const { fc, a } = await registered();
    expect(await a.refreshFacts()).toEqual({ changed: false, pushed: false });
    await a.sim.setHardware({ cpuNum: 64, qemuImgVersion: '8.0.0' });
    expect(await a.refreshFacts()).toEqual({ changed: true, pushed: true });
    expect(fc.badPushes).toEqual([]);
    expect(fc.pushes).toHaveLength(1);
    expect(fc.pushes[0]!.hostUuid).toBe(a.config().hostUuid);
    expect(fc.pushes[0]!.body.facts).toMatchObject({ cpuNum: 64, qemuImgVersion: '8.0.0', hypervisor: 'simulator' });
    expect(await a.refreshFacts()).toEqual({ changed: false, pushed: false });
    // a host reboot is a change of facts too
    await a.setBootId();
    expect(await a.refreshFacts()).toEqual({ changed: true, pushed: true });
    expect(fc.pushes[1]!.body.facts.bootId).toBe(a.identity().bootId);
  });

  it('keeps a failed push and retries it at the next refresh', async () => {
    const { fc, a } = await registered();
    fc.pushStatus = 503;
    await a.sim.setHardware({ cpuNum: 48 });
    expect(await a.refreshFacts()).toEqual({ changed: true, pushed: false });
    fc.pushStatus = 200;
    expect(await a.refreshFacts()).toEqual({ changed: false, pushed: true });
    expect(fc.pushes.map((p) => p.body.facts.cpuNum)).toEqual([48]);
  });

  it('one process-wide schedule refreshes every agent in it', async () => {
    const fc = await fakeController();
    const clock = new FakeClock(new Date(2026, 0, 1, 12, 0, 30).getTime());
    const refresher = new FactsRefresher('*/5 * * * *', clock, silentLogger());
    const agents = await Promise.all(
      [1, 2, 3].map(() => makeAgent({ withSecret: false, controllerUrl: fc.url, bootstrapToken: 'good-token', registerBackoff: FAST, refresher })),
    );
    await Promise.all(agents.map((a) => a.registered));
    expect(refresher.size).toBe(3);
    await refresher.tick(); // baselines (the first gathering may still be running)
    await Promise.all(agents.map((a) => a.sim.setHardware({ cpuMhz: 3000 })));
    // one timer for the three agents, firing at the next 5-minute mark (12:05:00)
    expect(refresher.nextAt).toBe(new Date(2026, 0, 1, 12, 5, 0).getTime());
    expect(clock.pending).toBe(1);
    clock.advance(4 * 60_000 + 29_000);
    expect(fc.pushes).toEqual([]);
    clock.advance(1_000);
    await until(() => fc.pushes.length === 3);
    expect(fc.pushes.map((p) => p.hostUuid).sort()).toEqual([...fc.hosts.keys()].sort());
    await Promise.all(agents.map((a) => a.stop()));
    expect(refresher.size).toBe(0);
  });
});
