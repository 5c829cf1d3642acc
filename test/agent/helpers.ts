/**
 * Factories for agent tests: an in-process agent on 127.0.0.1:<free port> with a simulated
 * host and a known secret, a signed-request client that can break any part of the
 * signature, and a tiny fake controller (registration + facts pushes).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach } from 'vitest';
import {
  AGENT_PATHS, ANSWER_SIG_HEADER, answerSignature, AUTH, CONTROLLER_AGENT_PATHS, type FactsPush, type RegisterCmd, ReplayGuard, signedHeaders, verifySigned,
} from '../../protocol/agent.ts';
import { type CertificateCmd, PKI_PATHS } from '../../protocol/pki.ts';
import { type TestCa, testCa } from '../fakes/pki.ts';
import type { Clock } from '../../agent/clock.ts';
import { SimulatorDriver } from '../../agent/drivers/simulator.ts';
import type { OsFacts } from '../../agent/facts.ts';
import { silentLogger } from '../../agent/log.ts';
import { type AgentOptions, type RunningAgent, startAgent } from '../../agent/server.ts';

export const HOST_UUID = 'aaaaaaaabbbbccccddddeeeeffff0000';
export const SECRET = 'test-secret-0123456789abcdef';
export const TEST_OS: OsFacts = { osDistribution: 'TestOS', osRelease: 'testing', osVersion: '1.0' };
export const testOs = async () => TEST_OS;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});
/** Runs `fn` after the current test. */
export function later(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

export interface AgentRun {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exit: Promise<number | null>;
}

/** Runs `npm run agent`/`npm run fleet` from source as a process; killed after the test. */
export function runAgentProcess(script: 'agent/main.ts' | 'agent/fleet.ts', args: string[], env: Record<string, string> = {}): AgentRun {
  const root = resolve(new URL('.', import.meta.url).pathname, '../..');
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (c: string) => stdout.push(...c.split('\n').filter(Boolean)));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => stderr.push(...c.split('\n').filter(Boolean)));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  later(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exit;
    }
  });
  return { child, stdout, stderr, exit };
}

export async function tempDir(prefix = 'hk-agent-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  later(() => rm(d, { recursive: true, force: true }));
  return d;
}

export async function writeAgentJson(dir: string, cfg: Record<string, unknown>, mode = 0o600): Promise<void> {
  await writeFile(join(dir, 'agent.json'), JSON.stringify(cfg), { mode });
}

export interface TestAgentOptions extends Partial<AgentOptions> {
  /** Write agent.json with HOST_UUID + SECRET first (default true). */
  withSecret?: boolean;
}

/** An agent with a simulated host, listening on 127.0.0.1:<free port>, stopped after the test. */
export async function makeAgent(o: TestAgentOptions = {}): Promise<RunningAgent & { sim: SimulatorDriver }> {
  const stateDir = o.stateDir ?? (await tempDir());
  if (o.withSecret !== false && !o.stateDir) await writeAgentJson(stateDir, { hostUuid: HOST_UUID, secret: SECRET });
  const agent = await startAgent({
    listen: { host: '127.0.0.1', port: 0 },
    hypervisor: 'simulator',
    log: silentLogger(),
    refresher: null,
    simulator: { osFacts: testOs, inject: [] },
    ...o,
    stateDir,
  });
  later(() => agent.stop());
  return Object.assign(agent, { sim: agent.driver as SimulatorDriver });
}

export interface Answer {
  status: number;
  body: any;
  text: string;
}

export interface SignOpts {
  secret?: string;
  hostUuid?: string;
  /** Signing time (default: now). */
  ts?: number;
  /** Headers to send instead of / on top of the signed ones (undefined removes one). */
  headers?: Record<string, string | undefined>;
  /** Sign this path but request `path`. */
  signPath?: string;
  /** Sign this body but send the real one. */
  signBody?: string;
  method?: string;
  clock?: Clock;
}

/** A POST signed like the controller signs it; every part can be broken for auth tests. */
export async function signedPost(agent: { url: string }, path: string, body: unknown = {}, o: SignOpts = {}): Promise<Answer> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const method = o.method ?? 'POST';
  const now = o.ts ?? o.clock?.now() ?? Date.now();
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    ...signedHeaders(o.secret ?? SECRET, o.hostUuid ?? HOST_UUID, method, o.signPath ?? path, o.signBody ?? text, now),
  };
  for (const [k, v] of Object.entries(o.headers ?? {})) {
    if (v === undefined) delete headers[k];
    else headers[k] = v;
  }
  return rawRequest(agent.url + path, method, headers, method === 'GET' ? undefined : text);
}

/**
 * TLS options for test clients of an agent: by default none checked, as the controller
 * calls an agent it has not certified yet; `tls` gives a client certificate (a certified
 * agent requires one from its CA).
 */
export interface TestClientTls {
  key?: string;
  cert?: string;
}
let defaultClientTls: TestClientTls = {};
/** The client certificate every test request presents from now on (the controller's, from the agent's CA). */
export function presentClientCert(t: TestClientTls): void {
  defaultClientTls = t;
  later(async () => {
    defaultClientTls = {};
  });
}

export function rawRequest(url: string, method: string, headers: Record<string, string>, body?: string, tlsOpts: TestClientTls = defaultClientTls): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const secure = url.startsWith('https:');
    const mod = secure ? https : http;
    const req = mod.request(url, { method, headers, agent: false, ...(secure ? { rejectUnauthorized: false, ...tlsOpts } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const vmSpec = (n: number, over: Record<string, unknown> = {}) => ({
  uuid: `${n.toString(16).padStart(8, '0')}000000000000000000000000`,
  name: `vm-${n}`,
  memorySize: 1024 ** 3,
  cpuNum: 2,
  vmNics: [{ ip: `10.0.0.${n}`, mac: `52:54:00:00:00:${n.toString(16).padStart(2, '0')}` }],
  ...over,
});

// ---- a fake controller ------------------------------------------------------------------------

export interface FakeController {
  /** The plain admin-port URL an admin knows (serves the CA, pushes, certificate requests). */
  url: string;
  /** The TLS agent port's URL (registration, pushes, certificate requests). */
  agentUrl: string;
  ca: TestCa;
  registrations: RegisterCmd[];
  pushes: { hostUuid: string; body: FactsPush }[];
  /** Refused pushes (bad signature), with the reason. */
  badPushes: string[];
  /** Hosts issued: uuid -> secret. */
  hosts: Map<string, string>;
  /** Next answers to registration (status codes), before the normal behaviour. */
  registerScript: number[];
  /** Answer facts pushes with this status (default 200). */
  pushStatus: number;
  /** Certificate requests served (host uuids). */
  certRequests: string[];
  /** Every request, as `<port kind> <method> <path>` (`plain`/`tls`). */
  seen: string[];
  /** Serve this PEM as the CA (a controller that is not the one the token is for). */
  servedCa?: string;
  /** The time signatures are checked against (agents on a fake clock sign with its time). */
  now: () => number;
  close(): Promise<void>;
}

/**
 * A controller's agent side: the CA on the plain port, registration on the TLS port only,
 * certificate requests and pushes (signed) on both; answers to certificate requests signed.
 */
export async function fakeController(token = 'good-token'): Promise<FakeController> {
  const guard = new ReplayGuard();
  const ca = await testCa();
  let seq = 0;
  let agentPort = 0;
  const fc: Omit<FakeController, 'url' | 'agentUrl' | 'close'> = {
    ca, registrations: [], pushes: [], badPushes: [], hosts: new Map(), registerScript: [], pushStatus: 200, certRequests: [], seen: [],
    now: () => Date.now(),
  };
  const handler = (secure: boolean) => (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    fc.seen.push(`${secure ? 'tls' : 'plain'} ${req.method} ${req.url}`);
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const raw = Buffer.concat(chunks);
        const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
          res.writeHead(status, { 'content-type': 'application/json', ...headers });
          res.end(typeof body === 'string' ? body : JSON.stringify(body));
        };
        if (req.method === 'GET' && req.url === PKI_PATHS.ca) {
          const pem = fc.servedCa ?? ca.caCert;
          return send(200, { success: true, caCertificates: pem, caCertHash: ca.caCertHash, agentPort });
        }
        if (req.url === CONTROLLER_AGENT_PATHS.register) {
          if (!secure) return send(403, { success: false, error: 'registration is served over TLS only' });
          const cmd = JSON.parse(raw.toString()) as RegisterCmd;
          const scripted = fc.registerScript.shift();
          if (scripted) return send(scripted, { success: false, error: `scripted ${scripted}` });
          if (cmd.token !== token) return send(403, { success: false, error: 'bootstrap token is not valid' });
          fc.registrations.push(cmd);
          const hostUuid = (++seq).toString(16).padStart(32, 'c');
          const secret = `secret-for-${hostUuid}`;
          fc.hosts.set(hostUuid, secret);
          const { cert } = await ca.issue(hostUuid, cmd.publicKey, ['127.0.0.1']);
          return send(200, { success: true, hostUuid, secret, certificate: cert, caCertificates: ca.caCert });
        }
        if (req.url === CONTROLLER_AGENT_PATHS.facts || req.url === PKI_PATHS.certificate) {
          const v = verifySigned(req.headers, req.method!, req.url, raw, fc.now(), (h) => fc.hosts.get(h), guard);
          if (!v.ok) {
            fc.badPushes.push(v.why);
            return send(401, { success: false, error: 'unauthorized' });
          }
          if (req.url === PKI_PATHS.certificate) {
            fc.certRequests.push(v.hostUuid);
            const cmd = JSON.parse(raw.toString()) as CertificateCmd;
            const { cert } = await ca.issue(v.hostUuid, cmd.publicKey, ['127.0.0.1']);
            const text = JSON.stringify({ success: true, certificate: cert, caCertificates: ca.caCert, agentPort });
            const sig = answerSignature(fc.hosts.get(v.hostUuid)!, 200, req.headers[AUTH.nonce] as string, text);
            return send(200, text, { [ANSWER_SIG_HEADER]: sig });
          }
          if (fc.pushStatus !== 200) return send(fc.pushStatus, { success: false, error: 'scripted push failure' });
          fc.pushes.push({ hostUuid: v.hostUuid, body: JSON.parse(raw.toString()) });
          return send(200, { success: true });
        }
        send(404, { success: false, error: 'no such path' });
      })();
    });
  };
  const plain = http.createServer(handler(false));
  const secure = https.createServer({ ...ca.controller, ca: ca.caCert, requestCert: true, rejectUnauthorized: false }, handler(true));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  agentPort = (secure.address() as { port: number }).port;
  const url = `http://127.0.0.1:${(plain.address() as { port: number }).port}`;
  const close = (srv: http.Server) => new Promise<void>((r) => {
    srv.closeAllConnections();
    srv.close(() => r());
  });
  const out: FakeController = Object.assign(fc, {
    url,
    agentUrl: `https://127.0.0.1:${agentPort}`,
    close: async () => {
      await Promise.all([close(plain), close(secure)]);
    },
  }) as FakeController;
  later(() => out.close());
  return out;
}

/** Waits for `cond` with short real polls (for work on real sockets that no clock drives). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---- a controller-side channel reader ----------------------------------------------------------

export interface ChannelReader {
  status: Promise<number>;
  /** Every non-empty line received so far, parsed. */
  frames: { t: string; [k: string]: unknown }[];
  /** Real arrival time (performance.now()) of each frame. */
  at: number[];
  close(): void;
}

/** Opens the agent's channel like the controller does and collects the frames it sends. */
export function readChannel(agent: { url: string }, o: { clock?: Clock; hostUuid?: string; secret?: string } = {}): ChannelReader {
  const frames: ChannelReader['frames'] = [];
  const at: number[] = [];
  let buf = '';
  const secure = agent.url.startsWith('https:');
  const req = (secure ? https : http).request(agent.url + AGENT_PATHS.channel, {
    method: 'POST',
    agent: false,
    ...(secure ? { rejectUnauthorized: false, ...defaultClientTls } : {}),
    headers: {
      'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked',
      ...signedHeaders(o.secret ?? SECRET, o.hostUuid ?? HOST_UUID, 'POST', AGENT_PATHS.channel, '', o.clock?.now() ?? Date.now()),
    },
  });
  const status = new Promise<number>((resolve, reject) => {
    req.on('response', (res) => {
      resolve(res.statusCode ?? 0);
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line) continue;
          frames.push(JSON.parse(line));
          at.push(performance.now());
        }
      });
    });
    req.on('error', reject);
  });
  status.catch(() => {});
  req.flushHeaders();
  later(async () => void req.destroy());
  return { status, frames, at, close: () => req.destroy() };
}

// ---- two agents for migrations ---------------------------------------------------------------

export const SRC = { hostUuid: '5'.repeat(32), secret: 'source-secret-0123456789' };
export const DST = { hostUuid: 'd'.repeat(32), secret: 'destination-secret-0123456789' };

export type CallingAgent = RunningAgent & { sim: SimulatorDriver; call: (path: string, body: unknown, o?: SignOpts) => Promise<Answer> };

/** An agent with its own identity whose `call` signs for it (on `clock`). */
export async function agentAs(creds: { hostUuid: string; secret: string }, clock: Clock, o: TestAgentOptions = {}): Promise<CallingAgent> {
  const dir = o.stateDir ?? (await tempDir());
  if (!o.stateDir) await writeAgentJson(dir, creds);
  const a = await makeAgent({ ...o, stateDir: dir, clock });
  const call = (path: string, body: unknown, so: SignOpts = {}) => signedPost(a, path, body, { clock, ...creds, ...so });
  return Object.assign(a, { call });
}
