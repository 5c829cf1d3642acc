/**
 * The one-file bundle (agent/build.ts) works as the agent: the packages it leaves out of
 * express are really never called on the agent's paths.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildAgent } from '../../agent/build.ts';
import { AGENT_PATHS, signedHeaders } from '../../protocol/agent.ts';
import { HOST_UUID, later, SECRET, signedPost, tempDir, vmSpec } from './helpers.ts';

describe('dist/hostkeeper-agent.mjs', () => {
  it('serves signed requests, the channel and errors, and stops on SIGTERM', async () => {
    const [bundle] = await buildAgent(await tempDir('hk-dist-'));
    const dir = await tempDir();
    await writeFile(join(dir, 'agent.json'), JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET }), { mode: 0o600 });
    const child = spawn(process.execPath, [bundle!, '--listen', '127.0.0.1:0', '--state-dir', dir, '--hypervisor', 'simulator'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exit = new Promise<number | null>((r) => child.on('exit', r));
    later(async () => void child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const url = await new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (c) => {
        buf += c;
        const m = /"url":"([^"]+)"[^\n]*"agent ready"/.exec(buf);
        if (m) resolve(m[1]!);
      });
      child.on('exit', () => reject(new Error(`exited: ${stderr}`)));
    });
    const a = { url };
    expect((await signedPost(a, AGENT_PATHS.connect, { hostUuid: HOST_UUID, controllerUrl: 'http://127.0.0.1:1' })).body.hostUuid).toBe(HOST_UUID);
    expect((await signedPost(a, AGENT_PATHS.vmCreate, { vm: vmSpec(1), start: true })).body.vm.state).toBe('Running');
    expect((await signedPost(a, AGENT_PATHS.vmList, {})).body.vms).toHaveLength(1);
    expect((await signedPost(a, AGENT_PATHS.fact, {})).body.facts.hypervisor).toBe('simulator');
    expect((await signedPost(a, AGENT_PATHS.vmStart, { vmUuid: 'x' })).status).toBe(400);
    expect((await signedPost(a, '/nope', {})).status).toBe(404);
    expect((await signedPost(a, AGENT_PATHS.echo, {}, { secret: 'wrong-secret-0123456789' })).status).toBe(401);
    const pong = await new Promise<string>((resolve, reject) => {
      // The bundle speaks TLS too (a temporary self-signed certificate: nothing to check it against).
      const req = https.request(url + AGENT_PATHS.channel, { method: 'POST', rejectUnauthorized: false, headers: signedHeaders(SECRET, HOST_UUID, 'POST', AGENT_PATHS.channel, '', Date.now()) });
      req.on('response', (res) => res.setEncoding('utf8').on('data', (c: string) => c.includes('pong') && (resolve(c), req.destroy())));
      req.on('error', reject);
      req.write('{"t":"ping","id":5}\n');
    });
    expect(JSON.parse(pong.trim())).toMatchObject({ t: 'pong', id: 5, hostUuid: HOST_UUID });
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(stderr).toBe('');
  });
});
