/**
 * One agent: an HTTP server speaking protocol/agent.ts for one (real or simulated) host.
 * `startAgent()` is what `npm run agent` runs, and what tests and the fleet run in-process
 * (many per process: the express app, the logger, the facts schedule and the simulated OS
 * facts are shared per process; what is per agent is small).
 *
 * Every request is authenticated BEFORE routing (protocol/agent.ts, "security model"):
 * headers present and for our host uuid, else 401 without reading the body; then the raw
 * body (capped) is read, the HMAC checked and the nonce recorded; only then is the request
 * handed to the routes, which alone parse JSON. Any failure is the same 401
 * `{"success":false,"error":"unauthorized"}` on every path, existing or not. The one
 * exception is vmReceive (agent to agent), authenticated by its one-time migration token,
 * which is checked before its (small, capped) body is read.
 *
 * Beyond the nonce guard, a ReplayFence refuses requests signed before this process could
 * have seen them (a replay right after a restart). Answers to authenticated requests are
 * signed (x-hk-answer-sig). VM changes from the driver are pushed over the channel.
 *
 * The port speaks only TLS (agent/tls.ts): a certificate from the controller's CA once the
 * agent has one (obtained at registration or by a signed request, renewed at 2/3 of its
 * life: certs.ts), a temporary self-signed one before. With a pinned CA, a client without a
 * certificate from it is cut off right after the handshake, and signed paths take only the
 * controller's certificate (CN hostkeeper-controller); vmReceive takes any certificate from
 * the CA (another agent). `plainHttp` (tests and bench/ only, no flag) serves HTTP instead,
 * to measure what TLS costs.
 */
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { hostname as osHostname } from 'node:os';
import {
  AGENT_PATHS, AGENT_PORT, AGENT_VERSION, type AgentErrorCode, type AgentIdentity, type AgentVm, AUTH, CONTROLLER_AGENT_PATHS, type ConnectCmd, type FactsPush,
  type HostCapacityReport, type HostFacts, MIGRATION_TOKEN_HEADER, ReplayGuard, signedHeaders, type UpdateConfigCmd, verifySigned,
  type VmMigrateCmd, type VmPrepareMigrationCmd, type VmReceiveCmd, type VmResolveMigrationCmd,
} from '../protocol/agent.ts';
import { type Backoff, BackoffSequence } from '../protocol/backoff.ts';
import { signAnswers } from './answers.ts';
import { agentApp, sendJson, tagRequest } from './app.ts';
import { Channel } from './channel.ts';
import { type Clock, systemClock } from './clock.ts';
import { DriverError, type HypervisorDriver, plainVm } from './drivers/driver.ts';
import { LibvirtDriver } from './drivers/libvirt.ts';
import { SimulatorDriver, type SimulatorOptions } from './drivers/simulator.ts';
import { deliverVm } from './delivery.ts';
import { canonicalFacts, MACHINE_ARCH, type SystemProbe, sameFacts } from './facts.ts';
import { answerError, joinUrl, postJson } from './http-client.ts';
import type { Limiter } from './limiter.ts';
import { createAgentLogger, type Logger } from './log.ts';
import { MigrationTokens } from './migration.ts';
import { FactsRefresher, processRefresher } from './refresher.ts';
import { register, RegistrationRefused } from './register.ts';
import { openReplayFence, type ReplayFence } from './replay-fence.ts';
import { LeaseFence } from './lease-fence.ts';
import { CertKeeper } from './certs.ts';
import type { ClientTls } from './http-client.ts';
import { CONTROLLER_CN } from '../protocol/pki.ts';
import { AgentTlsStore, anyIdentity, controllerIdentity, newKey, placeholderIdentity, type TlsMaterial } from './tls.ts';
import { type AgentConfig, readConfigFile, StartupError, StateStore } from './state.ts';
import { BadRequest } from './validate.ts';

export { RegistrationRefused, StartupError };

export const DEFAULT_STATE_DIR = '/var/lib/hostkeeper-agent';
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** A vmReceive body is one AgentVm (well under 1 KB with a few NICs): a small cap. */
export const RECEIVE_BODY_LIMIT = 64 * 1024;
/**
 * VMs that changed while no channel was open (uuid -> nothing: the current state is re-read
 * when one opens). Past this many distinct VMs the list is dropped: the controller's
 * /vm/list at its next connect covers them, except changes between that list and the channel.
 */
const PENDING_VM_CHANGES_MAX = 10_000;
/** How long a client may take to send a request body (headers: HEADERS_TIMEOUT_MS). */
const BODY_TIMEOUT_MS = 30_000;
const HEADERS_TIMEOUT_MS = 20_000;
/** Graceful stop: in-flight requests get this long before their sockets are cut. */
const STOP_GRACE_MS = 5_000;
const PUSH_TIMEOUT_MS = 15_000;
/** A failed facts push is retried 30 s, doubling to 5 min (and at every scheduled refresh). */
const PUSH_RETRY: Backoff = { initialMs: 30_000, maxMs: 5 * 60_000 };

export interface AgentOptions {
  /** Where agent.json (and a simulated host) live. */
  stateDir: string;
  /** Default 0.0.0.0:7070; port 0 picks a free one. */
  listen?: { host: string; port: number };
  hypervisor?: 'libvirt' | 'simulator';
  /** A ready driver instead of `hypervisor` (tests, the fleet). */
  driver?: HypervisorDriver;
  /** With bootstrapToken: register there when agent.json has no secret. */
  controllerUrl?: string;
  bootstrapToken?: string;
  /** `sha256:<hex>` of the controller CA's public key (the token's caCertHash): pinned at registration. */
  caCertHash?: string;
  /** Serve plain HTTP and make no certificate requests: tests and bench/ only (to measure TLS). */
  plainHttp?: boolean;
  /** A deployment-written agent.json elsewhere (`--config FILE`): copied into the state dir. */
  configFile?: string;
  /** libvirt driver: connection URI (default qemu:///system). */
  libvirtUri?: string;
  /** Simulator driver: hardware, faults, OS facts source. */
  simulator?: Omit<SimulatorOptions, 'stateDir' | 'clock'>;
  /** Real-host probes (commands, /proc, systeminformation) for the libvirt driver. */
  probe?: SystemProbe;
  /** Sent in RegisterCmd (default: os.hostname()). */
  hostname?: string;
  clock?: Clock;
  log?: Logger;
  /** Facts schedule shared by the process (default); null: none (tests call refreshFacts()). */
  refresher?: FactsRefresher | null;
  /** Registration retries (default register.ts DEFAULT_BACKOFF; a policy without `jitter` keeps its 25%). */
  registerBackoff?: Partial<Backoff>;
  /** Bounds concurrent registrations across agents of one process (the fleet). */
  registerLimiter?: Limiter;
  bodyLimitBytes?: number;
  /** Pauses before each resend of a broken migration delivery (default delivery.ts DELIVERY_RETRY_MS). */
  deliveryRetryMs?: number[];
}

export interface RunningAgent {
  /** http://<listen host>:<port> (0.0.0.0 shown as 127.0.0.1). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly stateDir: string;
  readonly driver: HypervisorDriver;
  /** Random per start: a restart changes it. */
  readonly instanceId: string;
  /**
   * Resolves once the agent has a secret: at once when agent.json held one, else when
   * registration succeeded. Rejects with RegistrationRefused when the controller answered
   * 4xx. Stays pending without a secret and without a bootstrap token, or once stopped.
   */
  readonly registered: Promise<void>;
  identity(): AgentIdentity;
  /** What agent.json holds now (the secret included: for tests and the fleet only). */
  config(): Readonly<AgentConfig>;
  /** Gathers facts now (what /host/fact answers). */
  facts(): Promise<HostFacts>;
  /** What the schedule does: gather, and push FactsPush when they changed (or a push is pending). */
  refreshFacts(): Promise<{ changed: boolean; pushed: boolean }>;
  /** Simulator only: a new boot id, as after a host reboot (persisted in the state dir). */
  setBootId(id?: string): Promise<void>;
  /** The certificate (PEM) the server presents now, and whether it is from the controller's CA. */
  certificate(): { cert: string; certified: boolean };
  /** Requests a new certificate now (what the renewal timer does). */
  renewCertificate(): Promise<void>;
  /** Graceful: ends the channel, finishes in-flight requests, flushes state. */
  stop(): Promise<void>;
  /** Abrupt, like a killed process: listening and connected sockets are cut at once. */
  kill(): void;
}

class Unauthorized extends Error {
  constructor(readonly why: string) {
    super('unauthorized');
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: AgentErrorCode,
  ) {
    super(message);
  }
}

const UNAUTHORIZED_BODY = '{"success":false,"error":"unauthorized"}';
const EMPTY = Buffer.alloc(0);

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** Reads a request body up to `limit` bytes within `timeoutMs` (on `clock`). */
function readBody(req: IncomingMessage, limit: number, clock: Clock, timeoutMs = BODY_TIMEOUT_MS): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(new HttpError(413, `body larger than ${limit} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      cancel();
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const cancel = clock.setTimer(timeoutMs, () => done(new HttpError(408, 'request body not received in time')));
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) done(new HttpError(413, `body larger than ${limit} bytes`));
      else chunks.push(c);
    };
    const onEnd = () => done();
    const onError = (err: Error) => done(err);
    const onClose = () => done(new HttpError(400, 'connection closed before the body ended'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

export class Agent implements RunningAgent {
  readonly instanceId = randomUUID();
  readonly stateDir: string;
  host: string;
  port = 0;
  registered: Promise<void> = Promise.resolve();

  /** null until a connect in this process (ZStack: how the controller notices an agent restart). */
  private connectedHostUuid: string | null = null;
  private bootIdValue: string;
  private readonly guard = new ReplayGuard();
  private readonly tokens: MigrationTokens;
  private channel: Channel | undefined;
  /** The highest controller lease token seen (agent/lease-fence.ts); startAgent opens it on disk. */
  leaseFence = new LeaseFence();
  /** VM changes not yet sent: no channel was open, or the one just opened is catching up. */
  private readonly pendingVms = new Set<string>();
  private flushing = false;
  private readonly unwatch: () => void;
  private cachedFacts: HostFacts | undefined;
  private gathering: Promise<HostFacts> | undefined;
  private pendingPush: HostFacts | undefined;
  /** While a failed push waits for its retry (made on the first failure: most agents never need one). */
  private pushRetry: { cancel: () => void; backoff: BackoffSequence } | undefined;
  private readonly abort = new AbortController();
  private stopped = false;
  private readonly server: http.Server | https.Server;
  private readonly bodyLimit: number;
  private readonly certs: CertKeeper;
  private presented: { cert: string; certified: boolean };

  constructor(
    readonly driver: HypervisorDriver,
    private readonly state: StateStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly refresher: FactsRefresher | null,
    bootId: string,
    private readonly opts: AgentOptions,
    private readonly fence: ReplayFence,
    private readonly tlsStore: AgentTlsStore,
    initialTls: { key: string; cert: string; ca?: string; certified: boolean } | undefined,
  ) {
    this.stateDir = state.dir;
    this.unwatch = driver.watch((uuid, vm) => this.onVmChange(uuid, vm));
    this.host = opts.listen?.host ?? '0.0.0.0';
    this.bootIdValue = bootId;
    this.tokens = new MigrationTokens(clock);
    this.bodyLimit = opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
    const serverOpts = {
      // The channel is a request whose body never ends: no whole-request deadline. Bodies
      // of ordinary requests have their own (BODY_TIMEOUT_MS, in readBody).
      requestTimeout: 0,
      headersTimeout: HEADERS_TIMEOUT_MS,
      noDelay: true,
    };
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    this.presented = { cert: initialTls?.cert ?? '', certified: initialTls?.certified ?? false };
    if (initialTls) {
      // requestCert without rejectUnauthorized: whether a client certificate is required
      // depends on having a pinned CA, which can change without a restart (registration), so
      // it is enforced at 'secureConnection' and again per request (authorizedPeer).
      const srv = https.createServer({ ...serverOpts, key: initialTls.key, cert: initialTls.cert, ...(initialTls.ca ? { ca: initialTls.ca } : {}), requestCert: true, rejectUnauthorized: false }, onRequest);
      srv.on('secureConnection', (sock: TLSSocket) => {
        if (this.tlsStore.ca && !sock.authorized) {
          this.log.warn({ from: sock.remoteAddress, why: sock.authorizationError ? String(sock.authorizationError) : 'no client certificate' }, 'refused a TLS client without a certificate from the controller CA');
          sock.destroy();
        }
      });
      srv.on('tlsClientError', (err, sock) => this.log.debug({ from: sock.remoteAddress, err: err.message }, 'TLS handshake failed'));
      this.server = srv;
    } else {
      this.server = http.createServer(serverOpts, onRequest);
    }
    this.server.keepAliveTimeout = 5_000;
    this.certs = new CertKeeper(tlsStore, state, clock, log, () => this.clientTls(true), (m) => this.useCertificate(m));
  }

  get url(): string {
    return `${this.opts.plainHttp ? 'http' : 'https'}://${this.host === '0.0.0.0' ? '127.0.0.1' : this.host}:${this.port}`;
  }

  certificate(): { cert: string; certified: boolean } {
    return this.presented;
  }

  renewCertificate(): Promise<void> {
    return this.certs.renew();
  }

  /** A new certificate from the CA: new connections get it; open ones carry on. */
  private useCertificate(m: TlsMaterial): void {
    if (this.server instanceof https.Server) this.server.setSecureContext({ key: m.key, cert: m.cert, ca: m.ca });
    this.presented = { cert: m.cert, certified: true };
  }

  /**
   * TLS settings for calls to the controller (forController) or to another agent: the pinned
   * CA and the role check, our certificate as client certificate when we have one. Without a
   * pinned CA (provisional) the server is not checked: tls.ts says why that is safe.
   */
  clientTls(forController: boolean): ClientTls {
    const m = this.tlsStore.material;
    if (!m?.ca) return { rejectUnauthorized: false };
    const mine = this.tlsStore.usable(this.clock.now()) ? { key: m.key, cert: m.cert } : {};
    return { ca: m.ca, checkServerIdentity: forController ? controllerIdentity : anyIdentity, ...mine };
  }

  /** With a pinned CA: is the client the controller (or, for vmReceive, any holder of a CA certificate)? */
  private authorizedPeer(req: IncomingMessage, controllerOnly: boolean): boolean {
    if (!this.tlsStore.ca) return true;
    const sock = req.socket as TLSSocket;
    if (!sock.authorized) return false;
    return !controllerOnly || sock.getPeerCertificate()?.subject?.CN === CONTROLLER_CN;
  }

  listen(): Promise<void> {
    const { host } = this;
    const port = this.opts.listen?.port ?? AGENT_PORT;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why: Record<string, string> = {
          EADDRINUSE: 'address already in use',
          EADDRNOTAVAIL: 'address not available on this machine',
          EACCES: 'permission denied',
        };
        reject(new StartupError(`cannot listen on ${host}:${port}: ${why[err.code ?? ''] ?? err.message}`));
      };
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.log.error({ err: err.message }, 'server error'));
        this.port = (this.server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  // ---- the door ---------------------------------------------------------------------------

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.dispatch(req, res).catch((err) => this.sendError(req, res, err));
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = pathOf(url);
    const method = req.method ?? 'GET';

    if (method === 'POST' && path === AGENT_PATHS.vmReceive) {
      const token = req.headers[MIGRATION_TOKEN_HEADER];
      if (typeof token !== 'string' || !token) throw new Unauthorized('missing-migration-token');
      // Before reading anything: a stranger must not make the agent buffer bodies.
      if (!this.tokens.known(token)) throw new Unauthorized('unknown-token');
      if (!this.opts.plainHttp && !this.authorizedPeer(req, false)) throw new Unauthorized('client-certificate');
      const raw = await readBody(req, Math.min(RECEIVE_BODY_LIMIT, this.bodyLimit), this.clock);
      agentApp()(tagRequest(req, this, raw, token), res);
      return;
    }

    const cfg = this.state.get();
    if (!cfg.secret || !cfg.hostUuid) throw new Unauthorized('no-secret-yet');
    if (!this.opts.plainHttp && !this.authorizedPeer(req, true)) throw new Unauthorized('not-the-controller-certificate');
    // Cheap checks first: a request that cannot be ours is refused before its body is read.
    const host = req.headers[AUTH.host];
    if (typeof host !== 'string' || !host) throw new Unauthorized('missing');
    if (host !== cfg.hostUuid) throw new Unauthorized('unknown-host');
    // The channel's signature covers an empty body: its body is the frame stream.
    const isChannel = method === 'POST' && path === AGENT_PATHS.channel;
    const raw = isChannel ? EMPTY : await readBody(req, this.bodyLimit, this.clock);
    const secret = cfg.secret;
    const v = verifySigned(req.headers, method, url, raw, this.clock.now(), (h) => (h === cfg.hostUuid ? secret : undefined), this.guard);
    if (!v.ok) throw new Unauthorized(v.why);
    const ts = Number(req.headers[AUTH.ts]);
    if (!this.fence.admits(ts)) throw new Unauthorized('signed-before-start');
    try {
      await this.fence.cover(ts);
    } catch (err) {
      throw new HttpError(503, `cannot record the replay fence in ${this.stateDir}: ${(err as Error).message}`);
    }
    signAnswers(res, secret, req.headers[AUTH.nonce] as string);
    // Several controllers: a request under an older lease token than one seen comes from a
    // controller that lost the host (protocol/agent.ts, "Fencing"); a newer one is kept on disk first.
    if (v.fence !== undefined && !(await this.leaseFence.admit(v.fence))) {
      throw new HttpError(409, `lease token ${v.fence} is older than ${this.leaseFence.token}: another controller holds this host now`, 'FENCED');
    }
    agentApp()(tagRequest(req, this, raw), res);
  }

  /** The one place errors become answers: 401 for any auth failure, else `{success:false,error}`. */
  sendError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof Unauthorized) {
      this.log.warn({ why: err.why, method: req.method, path: pathOf(req.url ?? '/').slice(0, 200), from: req.socket.remoteAddress }, 'refused request');
      // Do not read (or wait for) whatever body an unauthenticated client is sending.
      res.writeHead(401, { 'content-type': 'application/json', 'content-length': UNAUTHORIZED_BODY.length, connection: 'close' });
      res.end(UNAUTHORIZED_BODY);
      return;
    }
    let status = 500;
    let message = err instanceof Error ? err.message : String(err);
    const code = err instanceof DriverError || err instanceof HttpError ? err.code : undefined;
    if (err instanceof DriverError || err instanceof BadRequest || err instanceof HttpError) status = err.status;
    else if ((err as { code?: string }).code === 'ECONNRESET' || (err as Error).message === 'aborted') {
      res.destroy();
      return;
    }
    if (status >= 500) this.log.error({ path: pathOf(req.url ?? '/'), status, err: message }, 'request failed');
    else this.log.info({ path: pathOf(req.url ?? '/'), status, err: message }, 'request refused');
    if (!message) message = `HTTP ${status}`;
    // The rest of an over-long or late body is not read: the connection cannot be reused.
    sendJson(res, status, { success: false, error: message, ...(code ? { code } : {}) }, status === 413 || status === 408 ? { connection: 'close' } : {});
  }

  // ---- host commands ----------------------------------------------------------------------

  identity(): AgentIdentity {
    return { hostUuid: this.connectedHostUuid, agentVersion: AGENT_VERSION, bootId: this.bootIdValue, instanceId: this.instanceId };
  }

  config(): Readonly<AgentConfig> {
    return this.state.get();
  }

  async connect(cmd: ConnectCmd): Promise<AgentIdentity> {
    const cfg = this.state.get();
    if (cmd.hostUuid !== cfg.hostUuid) {
      // The secret is bound to one host uuid: a connect for another one is a controller mix-up.
      throw new HttpError(409, `connect is for host[uuid:${cmd.hostUuid}], but this agent is host[uuid:${cfg.hostUuid}]`);
    }
    if (cfg.controllerUrl !== cmd.controllerUrl) await this.state.update({ controllerUrl: cmd.controllerUrl });
    if (this.connectedHostUuid !== cmd.hostUuid) this.log.info({ hostUuid: cmd.hostUuid, controllerUrl: cmd.controllerUrl }, 'connected');
    this.connectedHostUuid = cmd.hostUuid;
    return this.identity();
  }

  async updateConfig(cmd: UpdateConfigCmd): Promise<object> {
    if (this.state.get().controllerUrl !== cmd.controllerUrl) {
      await this.state.update({ controllerUrl: cmd.controllerUrl });
      this.log.info({ controllerUrl: cmd.controllerUrl }, 'controller URL updated');
    }
    return {};
  }

  async capacity(): Promise<HostCapacityReport> {
    const [hw, available, vms] = await Promise.all([this.driver.hostFacts(), this.driver.availableMemory(), this.driver.list()]);
    let usedCpu = 0;
    let usedMemory = 0;
    // A paused VM still holds its memory and vCPUs, and a migrating one holds them on both ends.
    for (const vm of vms) {
      if (vm.state === 'Running' || vm.state === 'Paused' || vm.state === 'Migrating') {
        usedCpu += vm.cpuNum;
        usedMemory += vm.memorySize;
      }
    }
    return {
      cpuNum: hw.cpuNum, cpuSockets: hw.cpuSockets, cpuMhz: hw.cpuMhz, totalMemory: hw.memoryBytes,
      availablePhysicalMemory: available, usedCpu, usedMemory,
    };
  }

  // ---- facts ------------------------------------------------------------------------------

  private gather(): Promise<HostFacts> {
    this.gathering ??= (async () => {
      const [hw, bootId] = await Promise.all([this.driver.hostFacts(), this.driver.bootId()]);
      this.bootIdValue = bootId;
      return canonicalFacts({ ...hw, architecture: MACHINE_ARCH, bootId, agentVersion: AGENT_VERSION, hypervisor: this.driver.kind });
    })().finally(() => {
      this.gathering = undefined;
    });
    return this.gathering;
  }

  /** /host/fact: fresh facts. The controller has them now, so no push is owed for them. */
  async facts(): Promise<HostFacts> {
    const f = await this.gather();
    this.cachedFacts = f;
    this.pendingPush = undefined;
    return f;
  }

  async refreshFacts(): Promise<{ changed: boolean; pushed: boolean }> {
    if (this.stopped) return { changed: false, pushed: false };
    const f = await this.gather();
    const changed = !!this.cachedFacts && !sameFacts(this.cachedFacts, f);
    this.cachedFacts = f;
    if (changed) {
      this.log.info('facts changed');
      this.pendingPush = f;
    }
    const pushed = this.pendingPush ? await this.pushFacts() : false;
    return { changed, pushed };
  }

  private async pushFacts(): Promise<boolean> {
    const facts = this.pendingPush;
    const cfg = this.state.get();
    if (!facts) return false;
    if (!cfg.secret || !cfg.hostUuid || !cfg.controllerUrl) {
      // Nobody to tell yet: the controller reads facts at connect anyway.
      this.pendingPush = undefined;
      return false;
    }
    const url = joinUrl(cfg.controllerUrl, CONTROLLER_AGENT_PATHS.facts);
    const u = new URL(url);
    const body = JSON.stringify({ facts } satisfies FactsPush);
    try {
      const headers = signedHeaders(cfg.secret, cfg.hostUuid, 'POST', u.pathname + u.search, body, this.clock.now());
      const a = await postJson(url, body, headers, PUSH_TIMEOUT_MS, this.clientTls(true));
      if (a.status < 200 || a.status >= 300) throw new Error(`HTTP ${a.status}: ${answerError(a)}`);
      if (this.pendingPush === facts) this.pendingPush = undefined;
      this.pushRetry?.cancel();
      this.pushRetry = undefined;
      this.log.info('facts pushed to the controller');
      return true;
    } catch (err) {
      const backoff = this.pushRetry?.backoff ?? new BackoffSequence(PUSH_RETRY);
      const waitMs = backoff.next();
      this.log.warn({ err: (err as Error).message, retryInMs: waitMs }, 'facts push failed; will retry');
      this.pushRetry?.cancel();
      if (!this.stopped) {
        const cancel = this.clock.setTimer(waitMs, () => {
          if (this.pendingPush && !this.stopped) void this.pushFacts();
        });
        this.pushRetry = { cancel, backoff };
      }
      return false;
    }
  }

  async setBootId(id?: string): Promise<void> {
    if (!(this.driver instanceof SimulatorDriver)) throw new Error('setBootId needs the simulator driver (a real boot id changes by rebooting)');
    await this.driver.setBootId(id);
    this.bootIdValue = await this.driver.bootId();
  }

  // ---- migration --------------------------------------------------------------------------

  async prepareMigration(cmd: VmPrepareMigrationCmd): Promise<object> {
    await this.driver.prepareMigration(cmd.vm);
    this.tokens.prepare(cmd.token, cmd.vm);
    this.log.info({ vm: cmd.vm.uuid }, 'migration prepared');
    return {};
  }

  async migrate(cmd: VmMigrateCmd): Promise<AgentVm> {
    const { destinationUrl, token } = cmd;
    const vm = await this.driver.migrate(cmd.vmUuid, {
      url: destinationUrl,
      deliver: (v) => deliverVm(v, {
        destinationUrl, token, clock: this.clock, retryMs: this.opts.deliveryRetryMs, signal: this.abort.signal,
        ...(this.opts.plainHttp ? {} : { tls: this.clientTls(false) }),
      }),
    });
    this.log.info({ vm: vm.uuid, to: destinationUrl }, 'vm migrated away');
    return vm;
  }

  async resolveMigration(cmd: VmResolveMigrationCmd): Promise<AgentVm | null> {
    const vm = await this.driver.resolveMigration(cmd.vmUuid, cmd.completed);
    this.log.info({ vm: cmd.vmUuid, completed: cmd.completed }, cmd.completed ? 'migration resolved: copy here destroyed' : 'migration resolved: vm resumed here');
    return vm;
  }

  async receive(token: string | undefined, cmd: VmReceiveCmd): Promise<AgentVm> {
    if (!token) throw new Unauthorized('missing-migration-token');
    const t = this.tokens.take(token, cmd.vm.uuid);
    if (!t.ok) throw new Unauthorized(t.why);
    if (t.again) {
      // A resend of a delivery that was taken: success again, while the VM is still here. A VM
      // that left since (destroyed, moved on) makes the token spent: a token reused later
      // must not make a source drop a VM it got back by other means.
      await t.again;
      const here = await this.driver.get(cmd.vm.uuid);
      if (!here) throw new Unauthorized('used-token');
      this.log.info({ vm: cmd.vm.uuid }, 'migration delivery resent: answering as the first one');
      return plainVm(here);
    }
    // The controller's description (signed) is what runs here, not the sender's; only the
    // power state (Running or Paused) comes from the sender, who knows it.
    const done = this.driver.receive({ ...t.vm, state: cmd.vm.state === 'Paused' ? 'Paused' : 'Running' });
    this.tokens.receiving(token, cmd.vm.uuid, done);
    const vm = await done;
    this.log.info({ vm: vm.uuid }, 'vm received');
    return vm;
  }

  // ---- VM changes -------------------------------------------------------------------------

  /** A driver change: out on the channel now, or when the next one opens. */
  private onVmChange(uuid: string, vm: AgentVm | null): void {
    if (this.channel?.isOpen && !this.flushing) {
      this.channel.sendVm(uuid, vm);
      return;
    }
    if (this.pendingVms.size >= PENDING_VM_CHANGES_MAX && !this.pendingVms.has(uuid)) {
      this.log.warn({ max: PENDING_VM_CHANGES_MAX }, 'too many VM changes without a channel: leaving them to the next connect\'s /vm/list');
      this.pendingVms.clear();
    }
    this.pendingVms.add(uuid);
  }

  /**
   * Sends what changed while no channel was open, re-read now (so never older than what the
   * driver says), before any new change goes out directly: a VM's frames stay in order.
   */
  private async flushPending(ch: Channel): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pendingVms.size && this.channel === ch && ch.isOpen) {
        const uuids = [...this.pendingVms];
        this.pendingVms.clear();
        for (const uuid of uuids) {
          let vm: AgentVm | undefined;
          try {
            vm = await this.driver.get(uuid);
          } catch (err) {
            this.log.warn({ vm: uuid, err: (err as Error).message }, 'cannot read a changed VM for the channel');
            continue;
          }
          if (this.channel !== ch || !ch.sendVm(uuid, vm ?? null)) {
            this.pendingVms.add(uuid);
            return;
          }
        }
      }
    } finally {
      this.flushing = false;
      // A channel that replaced `ch` meanwhile catches up too.
      if (this.pendingVms.size && this.channel && this.channel !== ch && this.channel.isOpen) void this.flushPending(this.channel);
    }
  }

  // ---- channel ----------------------------------------------------------------------------

  openChannel(req: IncomingMessage, res: ServerResponse): void {
    const old = this.channel;
    const ch = new Channel(req, res, this.clock, () => this.identity(), this.log, (c) => {
      if (this.channel === c) this.channel = undefined;
    });
    this.channel = ch;
    old?.end();
    ch.open();
    if (this.pendingVms.size) void this.flushPending(ch);
    this.log.debug({ from: req.socket.remoteAddress }, old ? 'channel replaced' : 'channel opened');
  }

  // ---- life -------------------------------------------------------------------------------

  /** After listen: first facts, the schedule, registration. */
  begin(): void {
    void this.gather().then(
      (f) => {
        this.cachedFacts ??= f;
      },
      (err) => this.log.warn({ err: (err as Error).message }, 'first facts gathering failed'),
    );
    this.refresher?.add(this);
    const cfg = this.state.get();
    if (cfg.secret) {
      if (!this.opts.plainHttp) this.certs.start();
      return;
    }
    const controllerUrl = this.opts.controllerUrl;
    if (!controllerUrl || !this.opts.bootstrapToken) {
      this.log.warn('no secret in agent.json: every request is refused until the deployment writes one, or the agent registers (--controller and --bootstrap-token)');
      this.registered = new Promise(() => {});
      return;
    }
    const token = this.opts.bootstrapToken;
    this.registered = newKey().then((key) => register({
      controllerUrl,
      caCertHash: this.opts.caCertHash,
      cmd: { token, hostname: this.opts.hostname ?? osHostname(), managementIp: this.host, port: this.port },
      key,
      clock: this.clock,
      log: this.log,
      signal: this.abort.signal,
      backoff: this.opts.registerBackoff,
      limiter: this.opts.registerLimiter,
    })).then(
      async (rsp) => {
        // The certificate first: once the secret is stored the controller's connect is
        // accepted, and it checks our certificate.
        await this.tlsStore.save(rsp.tls);
        this.useCertificate(rsp.tls);
        await this.state.update({ hostUuid: rsp.hostUuid, secret: rsp.secret, controllerUrl: this.opts.plainHttp ? controllerUrl : rsp.agentUrl });
        this.log.info({ hostUuid: rsp.hostUuid }, 'registered with the controller');
        if (!this.opts.plainHttp) this.certs.start();
      },
      (err) => {
        if (this.stopped) return new Promise<void>(() => {});
        this.log.error({ err: (err as Error).message }, 'registration failed');
        throw err;
      },
    );
    // Callers may not await it; a refusal must not become an unhandled rejection.
    this.registered.catch(() => {});
  }

  private halt(): void {
    this.stopped = true;
    this.abort.abort(new Error('agent stopped'));
    this.refresher?.remove(this);
    this.certs.stop();
    this.pushRetry?.cancel();
    this.pushRetry = undefined;
    this.unwatch();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.halt();
    this.channel?.end();
    await new Promise<void>((resolve) => {
      const cancel = this.clock.setTimer(STOP_GRACE_MS, () => this.server.closeAllConnections());
      this.server.close(() => {
        cancel();
        resolve();
      });
      this.server.closeIdleConnections();
    });
    await this.driver.close();
    await this.state.flush();
    await this.fence.flush();
    await this.leaseFence.flush();
    this.log.info('agent stopped');
  }

  kill(): void {
    if (this.stopped) return;
    this.halt();
    this.server.close();
    this.server.closeAllConnections();
  }
}

/** Starts one agent; resolves when it listens (registration continues in the background: see `registered`). */
export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const t0 = performance.now();
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createAgentLogger();
  if (opts.bootstrapToken && !opts.controllerUrl) throw new StartupError('a bootstrap token needs the controller URL (--controller)');
  const seed = opts.configFile ? await readConfigFile(opts.configFile) : undefined;
  const { store, modeFixed } = await StateStore.open(opts.stateDir, seed);
  if (modeFixed) log.warn({ stateDir: opts.stateDir }, 'agent.json was readable by others: set its mode to 0600');
  if (opts.controllerUrl && !store.get().controllerUrl && store.get().secret) await store.update({ controllerUrl: opts.controllerUrl.replace(/\/+$/, '') });

  let driver = opts.driver;
  if (!driver) {
    if ((opts.hypervisor ?? 'libvirt') === 'simulator') {
      driver = await SimulatorDriver.open({ stateDir: opts.stateDir, clock, ...opts.simulator });
    } else {
      driver = new LibvirtDriver({ uri: opts.libvirtUri, stateDir: opts.stateDir, clock, probe: opts.probe });
    }
  }
  const refresher = opts.refresher === undefined ? processRefresher(log) : opts.refresher;
  const fence = await openReplayFence(opts.stateDir, clock);
  const tlsStore = await AgentTlsStore.open(opts.stateDir);
  let initialTls: { key: string; cert: string; ca?: string; certified: boolean } | undefined;
  if (!opts.plainHttp) {
    const m = tlsStore.material;
    if (m && tlsStore.usable(clock.now())) initialTls = { ...m, certified: true };
    else initialTls = { ...(await placeholderIdentity()), ...(tlsStore.ca ? { ca: tlsStore.ca } : {}), certified: false };
  }
  const agent = new Agent(driver, store, clock, log, refresher, await driver.bootId(), opts, fence, tlsStore, initialTls);
  agent.leaseFence = await LeaseFence.open(opts.stateDir);
  await agent.listen();
  agent.begin();
  log.info({ url: agent.url, hypervisor: driver.kind, instanceId: agent.instanceId, stateDir: opts.stateDir, startMs: Math.round(performance.now() - t0) }, 'agent ready');
  return agent;
}
