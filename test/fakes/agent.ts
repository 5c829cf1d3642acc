/**
 * A fake agent for controller tests: speaks protocol/agent.ts over real HTTP on a loopback
 * address, checks signatures like the real one, signs its answers like the real one (set
 * `signAnswers = false` to play an impostor), pushes `vm` frames on its channels
 * (`pushVm`), keeps a plain VM list for the VM commands, and can be made slow, wrong or dead
 * per path.
 *
 * It speaks TLS like the real one: by default with a self-signed certificate (what a real
 * agent presents before it has one from the CA: the controller accepts it for a host it has
 * not certified yet), or with `tls` given (a certificate from the controller's CA, or any
 * other to play an impostor), or plain HTTP (`tls: 'plain'`, for a controller started with
 * `agents.tls: null`).
 */
import http from 'node:http';
import https from 'node:https';
import { selfSignedServer } from '../../controller/pki/x509.ts';
import type { Socket } from 'node:net';
import {
  AGENT_PATHS, ANSWER_SIG_HEADER, answerSignature, AUTH, type AgentIdentity, type AgentVm, type HostFacts, ReplayGuard, verifySigned,
  type VmFrame,
} from '../../protocol/agent.ts';

export type Behaviour =
  | { kind: 'ok' }
  | { kind: 'slow'; ms: number }
  | { kind: 'error'; status: number; message: string }
  | { kind: 'hang' }
  | { kind: 'reset' };

export const FACTS: HostFacts = {
  osDistribution: 'debian', osRelease: 'bookworm', osVersion: '12', qemuImgVersion: '7.2.0', libvirtVersion: '9.0.0',
  hvm: 'vmx', cpuModel: 'Fake CPU', cpuCores: 4, cpuSockets: 1, cpuNum: 8, cpuMhz: 2400, memoryBytes: 16 * 2 ** 30,
  bootId: 'boot-1', agentVersion: '0.1.0', hypervisor: 'simulator', liveSnapshot: true,
};

/** One self-signed identity for every fake agent of the test process. */
const SELF_SIGNED = await selfSignedServer('fake-agent', [], ['127.0.0.1'], Date.now(), 365 * 24 * 3600_000);
export const FAKE_SELF_SIGNED = { key: SELF_SIGNED.key.privateKey, cert: SELF_SIGNED.cert };

export type FakeTls = 'plain' | { key: string; cert: string; ca?: string };

export class FakeAgent {
  readonly server: http.Server;
  hostUuid: string;
  secret: string;
  identity: AgentIdentity;
  facts: HostFacts = { ...FACTS };
  vms: AgentVm[] = [];
  behaviour: Record<string, Behaviour> = {};
  /** Answer pings on the channel (false: swallow them, as a frozen agent would). */
  answerChannelPings = true;
  heartbeats = true;
  /** Sign answers with the secret (false: answers as an impostor would, unsigned). */
  signAnswers = true;
  readonly calls: string[] = [];
  /** Bodies of the calls, in order (parsed JSON). */
  readonly bodies: { path: string; body: unknown }[] = [];
  channelPings = 0;
  private readonly sockets = new Set<Socket>();
  private readonly channels = new Set<http.ServerResponse>();
  private readonly guard = new ReplayGuard();
  private hbTimer?: NodeJS.Timeout;

  constructor(readonly ip: string, hostUuid: string, secret: string, tls: FakeTls = FAKE_SELF_SIGNED) {
    this.hostUuid = hostUuid;
    this.secret = secret;
    this.identity = { hostUuid: null, agentVersion: '0.1.0', bootId: 'boot-1', instanceId: 'inst-1' };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = tls === 'plain' ? http.createServer(handler) : https.createServer({ ...tls, requestCert: true, rejectUnauthorized: false }, handler);
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async listen(port = 0): Promise<number> {
    await new Promise<void>((r) => this.server.listen(port, this.ip, r));
    this.hbTimer = setInterval(() => {
      if (!this.heartbeats) return;
      for (const c of this.channels) c.write('\n');
    }, 300);
    return (this.server.address() as { port: number }).port;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Like kill -9: every socket closes at once. */
  kill(): void {
    clearInterval(this.hbTimer);
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }

  /** An agent restart: new instance id, host uuid forgotten until the next connect. */
  restart(): void {
    this.identity = { ...this.identity, hostUuid: null, instanceId: `inst-${Math.random()}` };
  }

  /** Sends a `vm` frame on every open channel (null: the VM left this host). */
  pushVm(vmUuid: string, vm: AgentVm | null): void {
    const f: VmFrame = { t: 'vm', vmUuid, vm };
    for (const c of this.channels) c.write(`${JSON.stringify(f)}\n`);
  }

  /** The answer signature header for a request's nonce. */
  private sig(req: http.IncomingMessage, status: number, body: string): Record<string, string> {
    const nonce = req.headers[AUTH.nonce];
    if (!this.signAnswers || typeof nonce !== 'string') return {};
    return { [ANSWER_SIG_HEADER]: answerSignature(this.secret, status, nonce, body) };
  }

  private send(req: http.IncomingMessage, res: http.ServerResponse, status: number, out: object): void {
    const text = JSON.stringify(out);
    res.writeHead(status, { 'content-type': 'application/json', ...this.sig(req, status, text) }).end(text);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    const path = req.url ?? '';
    if (path === AGENT_PATHS.channel) {
      const v = verifySigned(req.headers, req.method ?? '', path, '', Date.now(), (h) => (h === this.hostUuid ? this.secret : undefined), this.guard);
      if (!v.ok) {
        res.writeHead(401).end('{"success":false,"error":"unauthorized"}');
        return;
      }
      this.calls.push(path);
      res.writeHead(200, { 'content-type': 'application/x-ndjson', ...this.sig(req, 200, '') });
      res.flushHeaders();
      this.channels.add(res);
      let buf = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const f = JSON.parse(line) as { t: string; id: number };
          if (f.t === 'ping') this.channelPings++;
          if (f.t === 'ping' && this.answerChannelPings) res.write(`${JSON.stringify({ t: 'pong', id: f.id, ...this.identity })}\n`);
        }
      });
      req.on('close', () => this.channels.delete(res));
      return;
    }
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const v = verifySigned(req.headers, req.method ?? '', path, body, Date.now(), (h) => (h === this.hostUuid ? this.secret : undefined), this.guard);
      if (!v.ok) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"success":false,"error":"unauthorized"}');
        return;
      }
      this.calls.push(path);
      const b = this.behaviour[path] ?? { kind: 'ok' };
      const answer = () => this.answer(req, path, body, res);
      switch (b.kind) {
        case 'ok':
          return answer();
        case 'slow':
          return void setTimeout(answer, b.ms);
        case 'error':
          return this.send(req, res, b.status, { success: false, error: b.message });
        case 'hang':
          return;
        case 'reset':
          return void req.socket.destroy();
      }
    });
  }

  private answer(req: http.IncomingMessage, path: string, body: Buffer, res: http.ServerResponse): void {
    const cmd = body.length ? JSON.parse(body.toString('utf8')) : {};
    this.bodies.push({ path, body: cmd });
    const vmOf = (uuid: string) => this.vms.find((v) => v.uuid === uuid);
    const setState = (uuid: string, state: AgentVm['state']): object | undefined => {
      const vm = vmOf(uuid);
      if (!vm) return undefined;
      vm.state = state;
      return { vm: { ...vm } };
    };
    let out: object | undefined;
    switch (path) {
      case AGENT_PATHS.echo:
        out = {};
        break;
      case AGENT_PATHS.connect:
        this.identity = { ...this.identity, hostUuid: cmd.hostUuid };
        out = { ...this.identity };
        break;
      case AGENT_PATHS.ping:
        out = { ...this.identity };
        break;
      case AGENT_PATHS.fact:
        out = { facts: this.facts };
        break;
      case AGENT_PATHS.capacity:
        out = { capacity: { cpuNum: 8, cpuSockets: 1, cpuMhz: 2400, totalMemory: 16 * 2 ** 30, availablePhysicalMemory: 12 * 2 ** 30, usedCpu: 0, usedMemory: 0 } };
        break;
      case AGENT_PATHS.vmList:
        out = { vms: this.vms };
        break;
      case AGENT_PATHS.vmCreate: {
        if (vmOf(cmd.vm.uuid)) return this.send(req, res, 409, { success: false, error: `vm[uuid:${cmd.vm.uuid}] already exists on this host` });
        const vm: AgentVm = { ...cmd.vm, state: cmd.start ? 'Running' : 'Stopped' };
        this.vms.push(vm);
        out = { vm: { ...vm } };
        break;
      }
      case AGENT_PATHS.vmStart:
        out = setState(cmd.vmUuid, 'Running');
        break;
      case AGENT_PATHS.vmStop:
        out = setState(cmd.vmUuid, 'Stopped');
        break;
      case AGENT_PATHS.vmReboot:
        out = setState(cmd.vmUuid, 'Running');
        break;
      case AGENT_PATHS.vmDestroy: {
        const vm = vmOf(cmd.vmUuid);
        if (vm) this.vms = this.vms.filter((v) => v !== vm);
        out = vm && { vm: { ...vm, state: 'Stopped' } };
        break;
      }
      default:
        return this.send(req, res, 404, { success: false, error: 'no such path' });
    }
    if (!out) return this.send(req, res, 404, { success: false, error: `vm[uuid:${cmd.vmUuid}] is not on this host` });
    this.send(req, res, 200, { success: true, ...out });
  }
}
