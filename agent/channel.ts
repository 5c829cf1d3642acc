/**
 * The long-lived channel (protocol/agent.ts, "the channel"): the controller's signed
 * streaming POST /host/channel. The agent answers 200 at once with an ndjson body that
 * stays open: a pong for every ping frame, and an empty line every HEARTBEAT_MS so the
 * controller notices a silent host within HEARTBEAT_DEADLINE_MS. One channel per agent: a
 * new one ends the old one. VM changes go out as `vm` frames (sendVm).
 *
 * The 200 carries an answer signature over an empty body (the controller knows the holder of
 * the secret accepted it); the frames after it are not signed: see VmFrame in protocol/agent.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type AgentFrame, type AgentIdentity, type AgentVm, HEARTBEAT_MAX_MS, HEARTBEAT_MS } from '../protocol/agent.ts';
import { answerHeaders } from './answers.ts';
import type { Clock } from './clock.ts';
import type { Logger } from './log.ts';

/** A frame longer than this is not ours: the channel is closed. */
const MAX_FRAME_BYTES = 64 * 1024;

export class Channel {
  private cancelBeat: (() => void) | undefined;
  private buf = '';
  private closed = false;
  /** Set by the controller with an `hb` frame (it grows with the controller's fleet). */
  private beatMs = HEARTBEAT_MS;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly clock: Clock,
    private readonly identity: () => AgentIdentity,
    private readonly log: Logger,
    private readonly onClose: (c: Channel) => void,
  ) {}

  open(): void {
    const { req, res } = this;
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', ...answerHeaders(res, 200, '') });
    res.flushHeaders();
    // Frames are tiny: send each at once rather than waiting for more.
    req.socket.setNoDelay(true);
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => this.onData(chunk));
    req.on('error', () => this.close());
    res.on('close', () => this.close());
    this.scheduleBeat();
  }

  private scheduleBeat(): void {
    this.cancelBeat = this.clock.setTimer(this.beatMs, () => {
      if (this.closed) return;
      this.res.write('\n');
      this.scheduleBeat();
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    if (this.buf.length > MAX_FRAME_BYTES && !this.buf.includes('\n')) {
      this.log.warn('channel frame too long: closing the channel');
      this.end();
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onFrame(line);
    }
  }

  private onFrame(line: string): void {
    let f: { t?: unknown; id?: unknown };
    try {
      f = JSON.parse(line);
    } catch {
      this.log.debug('channel: ignoring a frame that is not JSON');
      return;
    }
    if (f.t === 'ping' && typeof f.id === 'number') {
      const pong: AgentFrame = { t: 'pong', id: f.id, ...this.identity() };
      this.res.write(`${JSON.stringify(pong)}\n`);
    } else if (f.t === 'hb') {
      const ms = (f as { ms?: unknown }).ms;
      if (typeof ms === 'number' && Number.isInteger(ms) && ms >= 100 && ms <= HEARTBEAT_MAX_MS && ms !== this.beatMs) {
        this.beatMs = ms;
        this.cancelBeat?.();
        this.scheduleBeat();
      }
    }
  }

  /** Tells the controller a VM changed (null: no longer on this host). False when the channel is closed. */
  sendVm(vmUuid: string, vm: AgentVm | null): boolean {
    if (this.closed) return false;
    const f: AgentFrame = { t: 'vm', vmUuid, vm };
    this.res.write(`${JSON.stringify(f)}\n`);
    return true;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** The heartbeat period in use (tests). */
  get heartbeatMs(): number {
    return this.beatMs;
  }

  /** Ends the channel from our side (replaced, or the agent stops). */
  end(): void {
    if (this.closed) return;
    this.close();
    const socket = this.req.socket;
    // The request body never ends on its own, so the socket cannot be reused: drop it once
    // the final chunk is out.
    this.res.end(() => socket.destroy());
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelBeat?.();
    this.onClose(this);
  }
}
