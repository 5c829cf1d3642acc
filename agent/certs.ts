/**
 * Getting and renewing the agent's certificate over the command channel (protocol/pki.ts).
 *
 * A request is POST <controllerUrl>/zstack/agent/v1/certificate `{publicKey}` signed with
 * the host secret like every request (a fresh key each time: a renewal also rotates the
 * key); the controller's answer `{certificate, caCertificates, agentPort}` is signed back
 * (x-hk-answer-sig over status, our nonce and the body), so it is trusted even when it
 * came over plain HTTP to a deployed agent that has no CA yet: the secret is the anchor.
 *
 * When: at start when there is no usable certificate (none, expired, not for our key), then
 * at RENEW_AT (2/3) of each certificate's life. A failure is retried (30 s doubling to 1 h),
 * so a controller down for a while costs nothing while a third of the life remains.
 * The server swaps its context (`onNew`); connections already open are not touched.
 */
import { ANSWER_SIG_HEADER, AUTH, signedHeaders, verifyAnswer } from '../protocol/agent.ts';
import { type Backoff, BackoffSequence } from '../protocol/backoff.ts';
import { type CertificateCmd, type CertificateRsp, PKI_PATHS, renewAt, validity } from '../protocol/pki.ts';
import type { Clock } from './clock.ts';
import { answerError, type ClientTls, joinUrl, postJson } from './http-client.ts';
import type { Logger } from './log.ts';
import { agentUrlOf } from './register.ts';
import type { StateStore } from './state.ts';
import { checkIssued, newKey, type AgentTlsStore, type TlsMaterial } from './tls.ts';

const REQUEST_TIMEOUT_MS = 30_000;
/** Failed requests: 30 s doubling to 1 h (the one policy, protocol/backoff.ts). */
export const CERT_RETRY: Backoff = { initialMs: 30_000, maxMs: 3600_000 };
/** setTimeout's limit: a longer wait is taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class CertKeeper {
  private cancel?: () => void;
  private readonly retry = new BackoffSequence(CERT_RETRY);
  private inFlight: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly store: AgentTlsStore,
    private readonly state: StateStore,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly clientTls: () => ClientTls,
    private readonly onNew: (m: TlsMaterial) => void,
  ) {}

  /** Obtains a certificate now if there is no usable one, else waits for the renewal time. */
  start(): void {
    if (this.stopped) return;
    if (!this.store.usable(this.clock.now())) void this.renew().catch(() => {});
    else this.scheduleRenewal();
  }

  /** Requests a new certificate now (also what the timer does). Rejects when it failed (a retry is scheduled). */
  renew(): Promise<void> {
    this.inFlight ??= this.request().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
  }

  private wait(ms: number, fn: () => void): void {
    this.cancel?.();
    if (this.stopped) return;
    this.cancel = this.clock.setTimer(Math.min(Math.max(ms, 1_000), MAX_TIMER_MS), fn);
  }

  private scheduleRenewal(): void {
    const m = this.store.material;
    if (!m) return;
    const v = validity(m.cert);
    const due = renewAt(v.notBefore, v.notAfter);
    const ms = due - this.clock.now();
    // A wait past the timer limit is re-checked then rather than overflowing.
    this.wait(ms, () => (this.clock.now() >= due - 1_000 ? void this.renew().catch(() => {}) : this.scheduleRenewal()));
  }

  private async request(): Promise<void> {
    const cfg = this.state.get();
    if (!cfg.secret || !cfg.hostUuid || !cfg.controllerUrl) return;
    const key = await newKey();
    const url = joinUrl(cfg.controllerUrl, PKI_PATHS.certificate);
    const u = new URL(url);
    const body = JSON.stringify({ publicKey: key.publicKey } satisfies CertificateCmd);
    try {
      const headers = signedHeaders(cfg.secret, cfg.hostUuid, 'POST', u.pathname + u.search, body, this.clock.now());
      const a = await postJson(url, body, headers, REQUEST_TIMEOUT_MS, this.clientTls());
      if (!verifyAnswer(cfg.secret, a.status, headers[AUTH.nonce]!, a.raw, a.headers[ANSWER_SIG_HEADER])) {
        throw new Error(`the controller's answer (HTTP ${a.status}: ${answerError(a)}) is not signed with our secret`);
      }
      if (a.status !== 200) throw new Error(`HTTP ${a.status}: ${answerError(a)}`);
      const rsp = a.body as Partial<CertificateRsp>;
      if (typeof rsp.certificate !== 'string' || typeof rsp.caCertificates !== 'string' || typeof rsp.agentPort !== 'number') {
        throw new Error('the answer lacks certificate, caCertificates or agentPort');
      }
      checkIssued(rsp.certificate, key.privateKey, rsp.caCertificates, this.clock.now());
      const m: TlsMaterial = { key: key.privateKey, cert: rsp.certificate, ca: rsp.caCertificates };
      await this.store.save(m);
      this.onNew(m);
      // From now on pushes and renewals go to the controller's TLS port.
      const agentUrl = agentUrlOf(cfg.controllerUrl, rsp.agentPort);
      if (cfg.controllerUrl !== agentUrl) await this.state.update({ controllerUrl: agentUrl });
      this.retry.reset();
      this.log.info({ notAfter: new Date(validity(m.cert).notAfter).toISOString() }, 'obtained a certificate from the controller');
      this.scheduleRenewal();
    } catch (err) {
      const retryInMs = this.retry.next();
      this.log.warn({ err: (err as Error).message, retryInMs }, 'certificate request failed; will retry');
      this.wait(retryInMs, () => void this.renew().catch(() => {}));
      throw err;
    }
  }
}
