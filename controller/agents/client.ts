/**
 * Signed HTTP calls from the controller to agents (protocol/agent.ts). Bounded twice: a
 * global limit protects the controller (how many agents it talks to at once), and a
 * per-host limit (`kvm / host.syncLevel`) protects each host.
 *
 * Request timeouts use real timers: they bound real I/O. Loops that decide *when* to call
 * (tracker, reconnects) take the injected clock instead.
 *
 * Every answer must carry the agent's answer signature (x-hk-answer-sig: HMAC with the host
 * secret over status, our request nonce and the body), so a party between us and the agent
 * cannot make up "VM stopped" or "migrated". An answer without a valid one is an
 * AgentError 'unauthorized', whatever its status. (A 401 is never signed: the agent did not
 * accept our request, because the secrets differ, or it restarted after we signed and
 * refuses requests signed before its start; a fresh call signs anew.)
 *
 * TLS (protocol/pki.ts): every call is HTTPS with the controller's certificate as client
 * certificate. A certified host (the controller issued it a certificate: HostRow
 * agentCertNotAfter) must present a certificate from our CA with CN = its uuid, checked
 * before anything is sent. A host not certified yet (a deployed agent before its first
 * certificate request) is called without checking its temporary certificate: the request and
 * answer signatures authenticate both sides, agent/tls.ts says why that is enough.
 * TLS sessions are resumed per host (one ticket each, ~1 KB), so a call after the first costs
 * an abbreviated handshake; the cache is keyed by whether the host was checked, so a session
 * from before its certification is never resumed after it.
 */
import http from 'node:http';
import https from 'node:https';
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import type { ControllerTls } from '../pki/ca.ts';
import { ANSWER_SIG_HEADER, AUTH, type AgentErrorCode, type AgentResponse, signedHeaders, verifyAnswer } from '../../protocol/agent.ts';
import { Semaphore } from '../semaphore.ts';

export interface AgentTarget {
  uuid: string;
  managementIp: string;
  agentPort: number;
  secret: string;
  /** The agent holds a certificate from our CA: check it (else: provisional, see above). */
  certified?: boolean;
  /** The controller's lease token on the host (several controllers: controller/cluster/); sent as x-hk-fence. */
  fence?: number;
  /** The controller's TLS identity; absent: plain HTTP (bench/ only, to measure TLS). */
  tls?: ControllerTls | null;
}

/** The https.request options of a call to `t` (none for plain HTTP). */
export type TlsRequestOptions = https.RequestOptions & Pick<ConnectionOptions, 'secureContext' | 'session'>;

export function tlsRequestOptions(t: AgentTarget, session?: Buffer): TlsRequestOptions {
  if (!t.tls) return {};
  const base: TlsRequestOptions = { secureContext: t.tls.context(), ...(session ? { session } : {}) };
  if (!t.certified) return { ...base, rejectUnauthorized: false };
  return {
    ...base,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      cert.subject?.CN === t.uuid ? undefined : new Error(`host[uuid:${t.uuid}]'s agent presented the certificate of ${cert.subject?.CN ?? 'nobody'}`),
  };
}

/** An error of the TLS layer, in words: the agent is not who the CA says it should be. */
export function tlsFailure(err: NodeJS.ErrnoException): string | undefined {
  const c = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL/.test(c) || /certificate/i.test(err.message)) {
    return `TLS: ${err.message}: its certificate is not one our CA issued to this host (a restored or replaced agent gets a new one at start)`;
  }
  return undefined;
}

export type AgentErrorKind = 'unreachable' | 'timeout' | 'unauthorized' | 'refused' | 'bad-answer';

/**
 * A failed agent call; `message` says what happened in words an admin can act on. For an
 * answer the agent gave ('refused'), `status` is its HTTP status and `code` its error code
 * when it sent one (GRACE_TIMEOUT, MIGRATION_UNKNOWN: protocol/agent.ts AgentErrorCode).
 */
export class AgentError extends Error {
  readonly status?: number;
  readonly code?: AgentErrorCode;
  constructor(readonly kind: AgentErrorKind, message: string, detail: { status?: number; code?: AgentErrorCode } = {}) {
    super(message);
    this.name = 'AgentError';
    if (detail.status !== undefined) this.status = detail.status;
    if (detail.code !== undefined) this.code = detail.code;
  }
}

export interface CallResult<T> {
  body: T;
  /** The controller's own address on the connection: how the agent can reach it back. */
  localAddress: string;
}

export class AgentClient {
  private readonly global: Semaphore;
  private readonly perHost = new Map<string, Semaphore>();

  /** One resumable TLS session per host (and per checked/unchecked). */
  private readonly tlsSessions = new Map<string, Buffer>();

  constructor(
    private readonly now: () => number,
    globalLimit: number,
    private perHostLimit: number,
    /** The controller's TLS identity; null: plain HTTP (bench/ only). */
    readonly tls: ControllerTls | null = null,
  ) {
    this.global = new Semaphore(globalLimit);
  }

  /**
   * A keep-alive pool for a burst of calls to one host (a connect flow): its few calls share
   * one socket, and `destroy()` closes it when the burst ends. There is deliberately no
   * shared pool: 10,000 hosts must not each keep an idle socket (open-files limit), and
   * Node's idle-socket timeouts scan every host's list, which cost a quarter of the
   * controller's CPU in a 10,000-host restart.
   */
  static session(): http.Agent {
    return new https.Agent({ keepAlive: true, maxSockets: 1 });
  }

  setPerHostLimit(n: number): void {
    this.perHostLimit = n;
    for (const s of this.perHost.values()) s.setLimit(n);
  }

  private hostLimit(uuid: string): Semaphore {
    let s = this.perHost.get(uuid);
    if (!s) this.perHost.set(uuid, (s = new Semaphore(this.perHostLimit)));
    return s;
  }

  forget(uuid: string): void {
    this.perHost.delete(uuid);
    this.tlsSessions.delete(`${uuid}:true`);
    this.tlsSessions.delete(`${uuid}:false`);
  }

  /**
   * One signed call; `session` (from AgentClient.session()) reuses its socket, else a fresh connection.
   * A host's limiter goes when its last call ends (one fewer object per idle host; a new one
   * takes the current limit).
   */
  async call<T extends AgentResponse>(t: AgentTarget, path: string, cmd: unknown, timeoutMs: number, session?: http.Agent): Promise<CallResult<T>> {
    const limit = this.hostLimit(t.uuid);
    try {
      return await limit.run(() => this.global.run(() => this.send<T>(t, path, cmd, timeoutMs, session)));
    } finally {
      if (limit.inFlight === 0 && limit.queued === 0 && this.perHost.get(t.uuid) === limit) this.perHost.delete(t.uuid);
    }
  }

  private send<T extends AgentResponse>(t: AgentTarget, path: string, cmd: unknown, timeoutMs: number, session?: http.Agent): Promise<CallResult<T>> {
    const body = JSON.stringify(cmd ?? {});
    const where = `agent ${t.managementIp}:${t.agentPort}${path}`;
    const tls = t.tls === undefined ? this.tls : t.tls;
    const sessionKey = `${t.uuid}:${!!t.certified}`;
    return new Promise((resolve, reject) => {
      const signed = signedHeaders(t.secret, t.uuid, 'POST', path, body, this.now(), t.fence);
      const opts: https.RequestOptions = {
        host: t.managementIp, port: t.agentPort, path, method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...signed },
      };
      // A keep-alive session pool speaks HTTPS; plain HTTP (bench) opens a connection per call.
      const req = tls
        ? https.request({ ...opts, agent: session ?? false, ...tlsRequestOptions({ ...t, tls }, session ? undefined : this.tlsSessions.get(sessionKey)) })
        : http.request({ ...opts, agent: false });
      let localAddress = '';
      const timer = setTimeout(() => {
        req.destroy(new AgentError('timeout', `${where} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('socket', (s) => {
        if (s.localAddress) localAddress = s.localAddress;
        else s.once('connect', () => (localAddress = s.localAddress ?? ''));
        if (tls && !session) s.once('session', (ticket: Buffer) => this.tlsSessions.set(sessionKey, ticket));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err instanceof AgentError) return reject(err);
        const bad = tlsFailure(err);
        if (bad) return reject(new AgentError('unauthorized', `${where}: ${bad}`));
        const why = err.code === 'ECONNREFUSED' ? 'refused the connection (is the agent running?)'
          : err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' ? 'is unreachable'
          : err.code === 'ECONNRESET' ? 'closed the connection' : `failed: ${err.message}`;
        reject(new AgentError('unreachable', `${where} ${why}`));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(new AgentError('unreachable', `${where} broke off its answer: ${err.message}`));
        });
        res.on('end', () => {
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          const text = raw.toString('utf8');
          const status = res.statusCode ?? 0;
          if (status === 401) {
            return reject(new AgentError('unauthorized', `${where} refused our signature: the host's agent secret differs from the controller's, or the agent restarted after the request was signed`, { status }));
          }
          if (!verifyAnswer(t.secret, status, signed[AUTH.nonce]!, raw, res.headers[ANSWER_SIG_HEADER])) {
            return reject(new AgentError('unauthorized', `${where} answered ${status} without a valid answer signature: not our agent, or its secret differs`, { status }));
          }
          let parsed: T;
          try {
            parsed = JSON.parse(text) as T;
          } catch {
            return reject(new AgentError('bad-answer', `${where} answered ${res.statusCode} with a body that is not JSON`));
          }
          if (status !== 200 || parsed.success === false) {
            return reject(new AgentError('refused', `${where} answered ${status}: ${parsed.error ?? 'no reason given'}`, { status, code: parsed.code }));
          }
          resolve({ body: parsed, localAddress });
        });
      });
      req.end(body);
    });
  }

}
