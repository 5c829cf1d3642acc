/**
 * Fencing (protocol/agent.ts): a request under an older lease token than one the agent has
 * seen is refused with 409 FENCED and does nothing, also after the agent restarts; the token
 * is part of the signature; requests without one (a single controller) are not fenced.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LEASE_FENCE_FILE } from '../../agent/lease-fence.ts';
import { AGENT_PATHS, AUTH, signedHeaders } from '../../protocol/agent.ts';
import { HOST_UUID, makeAgent, rawRequest, SECRET, vmSpec } from './helpers.ts';

type Agent = Awaited<ReturnType<typeof makeAgent>>;

function fencedPost(a: Agent, path: string, body: unknown, fence?: number, headers: Record<string, string> = {}) {
  const text = JSON.stringify(body);
  const h = { 'content-type': 'application/json', ...signedHeaders(SECRET, HOST_UUID, 'POST', path, text, Date.now(), fence), ...headers };
  return rawRequest(a.url + path, 'POST', h, text);
}

describe('lease tokens at the agent', () => {
  it.each<[string, number[], number | undefined, number, boolean]>([
    // name, tokens seen before, token of the request, status, VM created
    ['first token ever', [], 3, 200, true],
    ['same token again', [3], 3, 200, true],
    ['a newer token', [3], 4, 200, true],
    ['an older token', [5], 4, 409, false],
    ['no token (one controller)', [5], undefined, 200, true],
  ])('%s', async (_n, before, token, status, created) => {
    const a = await makeAgent();
    for (const t of before) expect((await fencedPost(a, AGENT_PATHS.echo, {}, t)).status).toBe(200);
    const r = await fencedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true }, token);
    expect(r.status).toBe(status);
    if (status === 409) {
      expect(r.body.code).toBe('FENCED');
      expect(r.body.error).toMatch(/lease token 4 is older than 5: another controller holds this host now/);
    }
    expect((await a.driver.list()).length > 0).toBe(created);
  });

  it('the highest token survives a restart, on disk before the request that raised it is served', async () => {
    const a = await makeAgent();
    expect((await fencedPost(a, AGENT_PATHS.echo, {}, 7)).status).toBe(200);
    expect(JSON.parse(await readFile(join(a.stateDir, LEASE_FENCE_FILE), 'utf8'))).toEqual({ token: 7 });
    await a.stop();
    const b = await makeAgent({ stateDir: a.stateDir });
    const r = await fencedPost(b, AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true }, 6);
    expect(r.status).toBe(409);
    expect(await b.driver.list()).toEqual([]);
    expect((await fencedPost(b, AGENT_PATHS.echo, {}, 7)).status).toBe(200);
  });

  it('the token is signed: changing it in transit breaks the signature', async () => {
    const a = await makeAgent();
    expect((await fencedPost(a, AGENT_PATHS.echo, {}, 9)).status).toBe(200);
    // signed with 2, sent claiming 9: refused as unauthenticated
    expect((await fencedPost(a, AGENT_PATHS.echo, {}, 2, { [AUTH.fence]: '9' })).status).toBe(401);
    // a malformed token is refused as unauthenticated too
    expect((await fencedPost(a, AGENT_PATHS.echo, {}, 2, { [AUTH.fence]: '-1' })).status).toBe(401);
  });
});
