/**
 * The long-lived channel to each agent (protocol/agent.ts): one streaming POST per host
 * that carries pings one way and pongs plus heartbeats the other. It is how the controller
 * notices within a second or two that an agent died (the socket closes) or its host went
 * silent (heartbeats stop), without holding a second socket per host for pings. The agent
 * also pushes VM changes on it (`vm` frames, handed to `onVm`).
 *
 * The agent's 200 is signed (x-hk-answer-sig over status, our nonce, empty body) and checked
 * here; frames are not signed (protocol/agent.ts, VmFrame, says why). Over TLS like every
 * call (client.ts): the heartbeats and frames are TLS records on one long-lived connection.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import tls from 'node:tls';
import {
  AGENT_PATHS, ANSWER_SIG_HEADER, AUTH, type AgentFrame, type AgentIdentity, type AgentVm, HEARTBEAT_MS, heartbeatDeadline, signedHeaders, verifyAnswer,
} from '../../protocol/agent.ts';
import { AgentError, type AgentTarget, tlsFailure, tlsRequestOptions } from './client.ts';

export class Channel {
  /** Last heartbeat or frame (controller clock). */
  /** Chunks received since the tracker last counted (metrics: heartbeats). */
  beats = 0;
  lastSeen: number;
  /** The heartbeat period asked of the agent, and the silence allowed for it. */
  heartbeatMs = HEARTBEAT_MS;
  deadlineMs = heartbeatDeadline(HEARTBEAT_MS);
  private nextId = 1;
  /** Pings waiting for their pong; created by the first ping (memory per host: see openChannel). */
  private pending: Map<number, { resolve: (i: AgentIdentity) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> | undefined;
  private closedByUs = false;
  private buf = '';
  /** Created by the first chunk that is not a lone heartbeat. */
  private decoder: StringDecoder | undefined;
  private static readonly NL = 10;

  constructor(
    readonly hostUuid: string,
    private readonly req: http.ClientRequest,
    private readonly now: () => number,
    private readonly onLost: (reason: string) => void,
    /** Each `vm` frame: the VM now on that host, or null when it left the host. Exceptions are swallowed. */
    private readonly onVm?: (vmUuid: string, vm: AgentVm | null) => void,
  ) {
    this.lastSeen = now();
  }

  /** @internal */
  attach(res: http.IncomingMessage): void {
    res.on('data', (chunk: Buffer) => this.onData(chunk));
    const lost = (why: string) => this.lost(why);
    res.on('end', () => lost('the agent ended the channel'));
    res.on('error', (e) => lost(`channel error: ${e.message}`));
    this.req.on('error', (e) => lost(`channel error: ${e.message}`));
    this.req.socket?.on('close', () => lost('the channel connection closed'));
  }

  private onData(chunk: Buffer): void {
    this.lastSeen = this.now();
    this.beats++;
    // Nearly every chunk is a lone heartbeat: 10,000 hosts send ~16,000 a second.
    if (chunk.length === 1 && chunk[0] === Channel.NL && this.buf === '') return;
    this.buf += (this.decoder ??= new StringDecoder('utf8')).write(chunk);
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line === '') continue; // heartbeat
      let f: AgentFrame;
      try {
        f = JSON.parse(line) as AgentFrame;
      } catch {
        continue;
      }
      if (f.t === 'pong') {
        const p = this.pending?.get(f.id);
        if (p) {
          clearTimeout(p.timer);
          this.settled(f.id);
          const { hostUuid, agentVersion, bootId, instanceId } = f;
          p.resolve({ hostUuid, agentVersion, bootId, instanceId });
        }
      } else if (f.t === 'vm' && typeof f.vmUuid === 'string' && this.onVm) {
        try {
          this.onVm(f.vmUuid, f.vm ?? null);
        } catch {
          // The caller's problem; the channel keeps reading.
        }
      }
    }
  }

  private lost(reason: string): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    for (const p of this.pending?.values() ?? []) {
      clearTimeout(p.timer);
      p.reject(new AgentError('unreachable', reason));
    }
    this.pending = undefined;
    this.req.destroy();
    this.onLost(reason);
  }

  get open(): boolean {
    return !this.closedByUs;
  }

  ping(timeoutMs: number): Promise<AgentIdentity> {
    if (this.closedByUs) return Promise.reject(new AgentError('unreachable', 'channel is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settled(id);
        reject(new AgentError('timeout', `no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      (this.pending ??= new Map()).set(id, { resolve, reject, timer });
      this.req.write(`{"t":"ping","id":${id}}\n`);
    });
  }

  /** A ping answered or given up: its entry goes, and the map with the last one (one ping a minute per host). */
  private settled(id: number): void {
    if (this.pending?.delete(id) && this.pending.size === 0) this.pending = undefined;
  }

  /**
   * Asks the agent for a heartbeat every `ms`. A longer period is allowed for at once; a
   * shorter one only after the current deadline, since beats already on their way follow
   * the old period.
   */
  setHeartbeat(ms: number, onShorter: (apply: () => void, afterMs: number) => void): void {
    if (this.closedByUs || ms === this.heartbeatMs) return;
    const deadline = heartbeatDeadline(ms);
    const longer = ms > this.heartbeatMs;
    const old = this.deadlineMs;
    this.heartbeatMs = ms;
    this.req.write(`{"t":"hb","ms":${ms}}\n`);
    if (longer) this.deadlineMs = deadline;
    else onShorter(() => { if (this.heartbeatMs === ms) this.deadlineMs = deadline; }, old);
  }

  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    for (const p of this.pending?.values() ?? []) {
      clearTimeout(p.timer);
      p.reject(new AgentError('unreachable', 'channel closed by the controller'));
    }
    this.pending = undefined;
    this.req.destroy();
  }
}

/**
 * Opens a channel; resolves once the agent accepted it (200), rejects otherwise.
 *
 * Memory per host (the channel lives as long as the host is Connected, so everything it keeps
 * is paid once per host; bench/memory.bench.ts): the TLS socket is made here
 * (`createConnection`), not by an http.Agent. `agent: false` made a fresh https.Agent per
 * channel, kept by the request for the channel's life, with its own TLS session cache holding
 * this connection's session (~2 KB) that nothing could ever resume. The socket gets only the
 * options TLS needs (tls.connect keeps what it is given: the request's signed headers
 * otherwise). The listeners that only serve the opening are removed once it is accepted, so
 * that their scope (the target with its secret, the signed headers) is not kept either.
 * Measured with host-agents.ts's channelTo (2,000 -> 6,000 hosts): JS heap 28.5 -> 19.4 KB
 * per host, external 2.6 -> 0.0 KB per host. What stays per channel is mostly native: the
 * TLS connection's OpenSSL state and buffers (bench/memory.bench.ts prints RSS - heap).
 */
export function openChannel(
  t: AgentTarget,
  now: () => number,
  timeoutMs: number,
  onLost: (reason: string) => void,
  onVm?: (vmUuid: string, vm: AgentVm | null) => void,
): Promise<Channel> {
  const path = AGENT_PATHS.channel;
  return new Promise((resolve, reject) => {
    const signed = signedHeaders(t.secret, t.uuid, 'POST', path, '', now(), t.fence);
    const opts: https.RequestOptions = {
      host: t.managementIp, port: t.agentPort, path, method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked', ...signed },
    };
    const req = t.tls ? https.request({ ...opts, createConnection: () => connectTls(t) }) : http.request({ ...opts, agent: false });
    const ch = new Channel(t.uuid, req, now, onLost, onVm);
    const timer = setTimeout(() => req.destroy(new AgentError('timeout', `agent ${t.managementIp} did not accept the channel within ${timeoutMs} ms`)), timeoutMs);
    const onError = (e: Error) => {
      clearTimeout(timer);
      const bad = e instanceof AgentError ? undefined : tlsFailure(e);
      reject(e instanceof AgentError ? e : new AgentError(bad ? 'unauthorized' : 'unreachable', `channel to agent ${t.managementIp}:${t.agentPort}: ${bad ?? e.message}`));
    };
    req.once('error', onError);
    req.once('socket', (s) => s.setKeepAlive(true, 5000));
    req.once('response', (res) => {
      clearTimeout(timer);
      if (res.statusCode !== 200) {
        res.resume();
        req.destroy();
        return reject(new AgentError(res.statusCode === 401 ? 'unauthorized' : 'refused', `agent ${t.managementIp} refused the channel: HTTP ${res.statusCode}`));
      }
      if (!verifyAnswer(t.secret, 200, signed[AUTH.nonce]!, '', res.headers[ANSWER_SIG_HEADER])) {
        res.resume();
        req.destroy();
        return reject(new AgentError('unauthorized', `agent ${t.managementIp} accepted the channel without a valid answer signature: not our agent, or its secret differs`));
      }
      ch.attach(res);
      // The channel's own 'error' listener is on now (attach).
      req.removeListener('error', onError);
      resolve(ch);
    });
    req.flushHeaders();
  });
}

/**
 * The channel's TLS connection, as https.Agent would open it (same checks: tlsRequestOptions;
 * SNI only for a host name, never for an address) minus its session caching.
 */
function connectTls(t: AgentTarget): tls.TLSSocket {
  const { secureContext, rejectUnauthorized, checkServerIdentity } = tlsRequestOptions(t);
  const host = t.managementIp;
  return tls.connect({
    host, port: t.agentPort, secureContext, rejectUnauthorized, ...(checkServerIdentity ? { checkServerIdentity } : {}),
    ...(isIP(host) ? {} : { servername: host }),
  });
}
