/**
 * The simulated fleet, in-process: every agent on its own 127.x address and the agent
 * port, registered with the controller; handles to stop, kill and reboot each.
 */
import { describe, expect, it } from 'vitest';
import { fleetAddresses, intToIp, ipToInt } from '../../agent/fleet-core.ts';
import { startFleet } from '../../agent/fleet.ts';
import { silentLogger } from '../../agent/log.ts';
import { AGENT_PATHS, AGENT_PORT } from '../../protocol/agent.ts';
import { fakeController, later, presentClientCert, rawRequest, signedPost, tempDir } from './helpers.ts';

const FAST = { initialMs: 5, maxMs: 20 };
/** A random /16 inside 127/8, so parallel runs do not collide on port 7070. */
const randomBase = () => `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 200)}.250`;

describe('fleet addresses', () => {
  it('counts through the last octet (10,000 from 127.1.0.1 end at 127.1.39.16)', () => {
    const { first, last } = fleetAddresses('127.1.0.1', 10_000);
    expect(intToIp(first)).toBe('127.1.0.1');
    expect(intToIp(last)).toBe('127.1.39.16');
    expect(ipToInt(intToIp(ipToInt('127.200.3.4')))).toBe(ipToInt('127.200.3.4'));
  });
  it('refuses a range outside 127/8', () => {
    expect(() => fleetAddresses('127.255.255.250', 10)).toThrow(/do not fit/);
    expect(() => fleetAddresses('10.0.0.1', 1)).toThrow(/do not fit/);
  });
});

describe('startFleet in-process', () => {
  it('starts ~20 agents, each on its own 127.x address, all registered', async () => {
    const fc = await fakeController('fleet-token');
    const firstIp = randomBase();
    const progress: number[] = [];
    const fleet = await startFleet({
      count: 20, controllerUrl: fc.url, token: 'fleet-token', stateDir: await tempDir(), firstIp, inProcess: true,
      registerBackoff: FAST, log: silentLogger(), onProgress: (up) => progress.push(up),
    });
    later(() => fleet.stop());
    expect(fleet.agents).toHaveLength(20);
    expect(progress.at(-1)).toBe(20);
    const ips = fleet.agents.map((a) => a.ip);
    expect(new Set(ips).size).toBe(20);
    expect(ips[0]).toBe(firstIp);
    expect(fleet.lastIp).toBe(intToIp(ipToInt(firstIp) + 19)); // crosses a third-octet boundary
    expect(fleet.agents.every((a) => a.port === AGENT_PORT)).toBe(true);
    expect(fc.registrations.map((r) => `${r.managementIp}:${r.port}`).sort()).toEqual(ips.map((ip) => `${ip}:${AGENT_PORT}`).sort());
    expect(new Set(fleet.agents.map((a) => a.stateDir)).size).toBe(20);

    // each answers requests signed with its own secret, and only those (from the controller's certificate)
    presentClientCert(fc.ca.controller);
    for (const a of fleet.agents.slice(0, 5)) {
      const { hostUuid, secret } = a.config();
      expect((await signedPost(a, AGENT_PATHS.ping, {}, { hostUuid, secret })).status).toBe(200);
      const other = fleet.agents.find((b) => b !== a)!.config();
      expect((await signedPost(a, AGENT_PATHS.ping, {}, { hostUuid: other.hostUuid, secret: other.secret })).status).toBe(401);
    }

    // handles: reboot one (new boot id), kill another (its address stops answering)
    const [one, two] = fleet.agents;
    const before = one!.identity().bootId;
    await one!.setBootId();
    expect(one!.identity().bootId).not.toBe(before);
    two!.kill();
    await expect(rawRequest(`${two!.url}/host/ping`, 'POST', {}, '{}')).rejects.toThrow(/ECONNREFUSED/);
    await one!.sim.create({ uuid: 'c'.repeat(32), name: 'x', memorySize: 1, cpuNum: 1, vmNics: [] }, true);
    expect(await one!.driver.list()).toHaveLength(1);
  });

  it('fails as a whole when the controller refuses the token, leaving no agent listening', async () => {
    const fc = await fakeController('fleet-token');
    const firstIp = randomBase();
    const err = await startFleet({
      count: 5, controllerUrl: fc.url, token: 'wrong', stateDir: await tempDir(), firstIp, inProcess: true, registerBackoff: FAST, log: silentLogger(),
    }).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/refused the registration \(HTTP 403\)/);
    await expect(rawRequest(`http://${firstIp}:${AGENT_PORT}/host/ping`, 'POST', {}, '{}')).rejects.toThrow(/ECONNREFUSED/);
  });
});
