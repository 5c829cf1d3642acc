/**
 * A fake agent for controller tests: speaks protocol/agent.ts over real HTTP on a loopback
 * address, checks signatures like the real one, and can be made slow, wrong or dead per path.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import {
  AGENT_PATHS, type AgentIdentity, type AgentVm, type HostFacts, ReplayGuard, verifySigned,
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
  readonly calls: string[] = [];
  channelPings = 0;
  private readonly sockets = new Set<Socket>();
  private readonly channels = new Set<http.ServerResponse>();
  private readonly guard = new ReplayGuard();
  private hbTimer?: NodeJS.Timeout;

  constructor(readonly ip: string, hostUuid: string, secret: string) {
    this.hostUuid = hostUuid;
    this.secret = secret;
    this.identity = { hostUuid: null, agentVersion: '0.1.0', bootId: 'boot-1', instanceId: 'inst-1' };
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
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
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
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
      const answer = () => this.answer(path, body, res);
      switch (b.kind) {
        case 'ok':
          return answer();
        case 'slow':
          return void setTimeout(answer, b.ms);
        case 'error':
          return void res.writeHead(b.status, { 'content-type': 'application/json' }).end(JSON.stringify({ success: false, error: b.message }));
        case 'hang':
          return;
        case 'reset':
          return void req.socket.destroy();
      }
    });
  }

  private answer(path: string, body: Buffer, res: http.ServerResponse): void {
    const cmd = body.length ? JSON.parse(body.toString('utf8')) : {};
    let out: object;
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
      default:
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"success":false,"error":"no such path"}');
        return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: true, ...out }));
  }
}
