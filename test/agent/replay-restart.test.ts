/**
 * A signed request captured before an agent restart is refused after it (the nonce guard is
 * in memory only): the ReplayFence refuses requests signed before the agent started, and
 * ones signed "in the future" by a controller clock running ahead are fenced on disk
 * before they are accepted.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FENCE_FILE } from '../../agent/replay-fence.ts';
import { AGENT_PATHS, signedHeaders } from '../../protocol/agent.ts';
import { FakeClock } from '../fakes/clock.ts';
import { HOST_UUID, makeAgent, rawRequest, SECRET, signedPost, vmSpec } from './helpers.ts';

const UUID = vmSpec(1).uuid;
type Agent = Awaited<ReturnType<typeof makeAgent>>;

describe('replays after an agent restart', () => {
  it.each<[string, string, unknown, (a: Agent) => Promise<unknown>, (a: Agent) => Promise<boolean>]>([
    ['vm/create', AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true }, async (a) => a.driver.destroy(UUID), async (a) => (await a.driver.list()).length > 0],
    ['vm/destroy', AGENT_PATHS.vmDestroy, { vmUuid: UUID }, async (a) => a.driver.create(vmSpec(1), true), async (a) => (await a.driver.list()).length === 0],
    ['host/connect', AGENT_PATHS.connect, { hostUuid: HOST_UUID, controllerUrl: 'http://10.9.9.9:8080' }, async () => undefined, async (a) => a.identity().hostUuid !== null],
  ])('a captured %s replayed right after a restart is 401 and does nothing', async (_n, path, body, undo, tookEffect) => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    if (path === AGENT_PATHS.vmDestroy) await a.driver.create(vmSpec(1), true);
    const text = JSON.stringify(body);
    const captured = { 'content-type': 'application/json', ...signedHeaders(SECRET, HOST_UUID, 'POST', path, text, clock.now()) };
    expect((await rawRequest(a.url + path, 'POST', captured, text)).status).toBe(200);
    await undo(a);
    await a.stop();
    clock.advance(2_000); // the restart; the capture is still well within MAX_SKEW_MS
    const b = await makeAgent({ clock, stateDir: a.stateDir });
    const replay = await rawRequest(b.url + path, 'POST', captured, text);
    expect(replay.status).toBe(401);
    expect(await tookEffect(b)).toBe(false);
    // a fresh signature works
    expect((await signedPost(b, path, body, { clock })).status).toBe(200);
  });

  it('a request signed ahead of the agent clock is fenced on disk first; after a restart it and its slack are refused', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    const ahead = 10_000; // the controller's clock runs 10 s ahead
    const text = JSON.stringify({ vm: vmSpec(1) });
    const captured = { 'content-type': 'application/json', ...signedHeaders(SECRET, HOST_UUID, 'POST', AGENT_PATHS.vmCreate, text, clock.now() + ahead) };
    const t0 = clock.now();
    expect((await rawRequest(a.url + AGENT_PATHS.vmCreate, 'POST', captured, text)).status).toBe(200);
    expect(JSON.parse(await readFile(join(a.stateDir, FENCE_FILE), 'utf8'))).toEqual({ notAfter: t0 + ahead + 1_000 });
    await a.driver.destroy(UUID);
    await a.stop();
    clock.advance(1_000);
    const b = await makeAgent({ clock, stateDir: a.stateDir });
    expect((await rawRequest(b.url + AGENT_PATHS.vmCreate, 'POST', captured, text)).status).toBe(401);
    expect(await b.driver.list()).toEqual([]);
    // the same controller, still ahead: refused within the slack, accepted past it
    expect((await signedPost(b, AGENT_PATHS.echo, {}, { ts: clock.now() + ahead })).status).toBe(401);
    clock.advance(500);
    expect((await signedPost(b, AGENT_PATHS.echo, {}, { ts: clock.now() + ahead })).status).toBe(200);
  });

  it('requests signed at or behind the agent clock write nothing; behind its start they are refused', async () => {
    const clock = new FakeClock();
    const a = await makeAgent({ clock });
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { clock })).status).toBe(200);
    // a controller 5 s behind is refused for its first 5 s after the agent started, then accepted
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { ts: clock.now() - 5_000 })).status).toBe(401);
    clock.advance(10_000);
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { ts: clock.now() - 5_000 })).status).toBe(200);
    await expect(readFile(join(a.stateDir, FENCE_FILE), 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
