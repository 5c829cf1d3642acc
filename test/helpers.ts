/**
 * Small factories for tests: an in-process controller on a temp data dir with a fake clock
 * and a logged-in admin, plus helpers to call the API the way a client does.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import request from 'supertest';
import type { Express } from 'express';
import { createApp } from '../controller/api/app.ts';
import { type Core, type CoreOptions, openCore } from '../controller/core.ts';
import type { Kind } from '../protocol/resources.ts';
import { FakeClock } from './fakes/clock.ts';
import { refusingSsh } from './fakes/ssh.ts';

export const ADMIN_PASSWORD = 'test-admin-password';

/** Names tests may use as managementIp; anything else does not resolve. No DNS server is asked. */
export const TEST_NAMES: Record<string, string> = { 'kvm-1.test': '10.77.0.1', 'kvm-2.test': '10.77.0.2' };
export async function fakeLookup(name: string): Promise<{ address: string; family: number }> {
  const address = TEST_NAMES[name.toLowerCase()];
  if (!address) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
  return { address, family: 4 };
}

export interface TestController {
  core: Core;
  app: Express;
  clock: FakeClock;
  dir: string;
  session: string;
  auth: { Authorization: string };
  close(): Promise<void>;
}

export async function tempDir(prefix = 'hk-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export const silentLog = () => pino({ level: 'silent' });

export async function makeController(opts: { dir?: string; clock?: FakeClock; log?: pino.Logger; deploy?: CoreOptions['deploy'] } = {}): Promise<TestController> {
  const dir = opts.dir ?? (await tempDir());
  const clock = opts.clock ?? new FakeClock();
  // No test controller reaches for a real host: SSH is a fake that refuses unless a test says otherwise.
  const deploy = { sshOpen: refusingSsh(), ...opts.deploy };
  const core = await openCore({ dataDir: dir, adminPassword: ADMIN_PASSWORD, clock, log: opts.log ?? silentLog(), sync: false, deploy, lookup: fakeLookup });
  const app = createApp(core);
  const res = await request(app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.body)}`);
  const session = res.body.inventory.uuid as string;
  return {
    core, app, clock, dir, session, auth: { Authorization: `OAuth ${session}` },
    async close() {
      await core.close();
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Polls `fn` (real time: for real processes and hosts) until it returns something truthy,
 * which is returned; throws naming `what` after `ms`.
 */
export async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 15_000, everyMs = 20): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, everyMs));
  }
}

/** Every file under `dir`, recursively (for "the secret is nowhere on disk" checks). */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Follows a 202's job location until it is final; returns the final status and body. */
export async function finish(t: TestController, res: request.Response): Promise<{ status: number; body: any }> {
  if (res.status !== 202 || !res.body.location) return { status: res.status, body: res.body };
  const path = new URL(res.body.location).pathname;
  for (let i = 0; i < 1000; i++) {
    await t.core.jobs.drain();
    const r = await request(t.app).get(path).set(t.auth);
    if (r.status !== 202) return { status: r.status, body: r.body };
  }
  throw new Error('job never finished');
}

/**
 * A refused asynchronous call: its 202 and then its job, read once without waiting for other
 * jobs (a refusal is recorded before the 202 goes out).
 */
export async function refused(t: TestController, res: request.Response): Promise<{ status: number; body: any }> {
  if (res.status !== 202) return { status: res.status, body: res.body };
  const r = await request(t.app).get(new URL(res.body.location).pathname).set(t.auth);
  return { status: r.status, body: r.body };
}

/** Calls and follows the job: `call(t, 'post', '/zones', body)`. */
export async function call(
  t: TestController, method: 'get' | 'post' | 'put' | 'delete', path: string, body?: unknown,
): Promise<{ status: number; body: any }> {
  let req = request(t.app)[method](`/zstack/v1${path}`).set(t.auth);
  if (body !== undefined) req = req.send(body as object);
  return finish(t, await req);
}

export async function makeZone(t: TestController, name = 'zone1'): Promise<any> {
  const r = await call(t, 'post', '/zones', { params: { name } });
  if (r.status !== 200) throw new Error(`zone: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.inventory;
}

export async function makeCluster(t: TestController, zoneUuid: string, name = 'cluster1'): Promise<any> {
  const r = await call(t, 'post', '/clusters', { params: { zoneUuid, name, hypervisorType: 'KVM' } });
  if (r.status !== 200) throw new Error(`cluster: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.inventory;
}

let ipSeq = 1;
/**
 * Adds a host through AddKVMHost without reaching it: the test controller's fake SSH refuses
 * the login and `keepHostOnFailure` keeps the record, Disconnected with the reason.
 */
export async function makeHost(t: TestController, clusterUuid: string, over: Record<string, unknown> = {}): Promise<any> {
  const n = ipSeq++;
  const params = { name: `host${n}`, managementIp: `10.0.${Math.floor(n / 250)}.${(n % 250) + 1}`, clusterUuid, username: 'root', password: 'pw', ...over };
  const r = await call(t, 'post', '/hosts/kvm', { params, systemTags: ['keepHostOnFailure'] });
  if (r.status !== 503 || r.body.error?.code !== 'HOST.1000') throw new Error(`host: ${r.status} ${JSON.stringify(r.body)}`);
  const q = await request(t.app).get(`/zstack/v1/hosts?q=managementIp=${params.managementIp}`).set(t.auth);
  if (q.body.inventories?.length !== 1) throw new Error(`host ${params.managementIp} not kept: ${JSON.stringify(q.body)}`);
  return q.body.inventories[0];
}

/** Sets a host's connection status directly (no agent channel in these tests). */
export async function setStatus(t: TestController, hostUuid: string, status: 'Connecting' | 'Connected' | 'Disconnected'): Promise<void> {
  await t.core.repo.transaction((tx) => tx.update<any>('host', hostUuid, { status }));
}

const KINDS: Kind[] = ['zone', 'cluster', 'host', 'vm', 'tag', 'config', 'account', 'session', 'job'];

/** Everything in the store except sessions and jobs, for "nothing changed" checks. */
export async function storeImage(t: TestController): Promise<string> {
  const out: Record<string, unknown> = {};
  for (const k of KINDS) if (k !== 'session' && k !== 'job') out[k] = await t.core.repo.all(k);
  return JSON.stringify(out);
}
