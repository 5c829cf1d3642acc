/**
 * Bootstrap-token registration, as `kubeadm join --discovery-token-ca-cert-hash`:
 *
 * 1. GET <controller>/zstack/agent/v1/ca (the URL the admin knows; plain HTTP is fine): the
 *    CA bundle and the controller's agent port. Nothing secret goes out or comes back.
 * 2. The CA whose public key hashes to `--ca-cert-hash` is pinned; none does: refused at
 *    once (RegistrationRefused), before the token is sent anywhere. Without a hash the
 *    first CA is trusted on first use, with a warning (kubeadm's unsafe-skip).
 * 3. POST https://<controller host>:<agent port>/zstack/agent/v1/register over TLS checked
 *    against the pinned CA and the controller's role (agent/tls.ts controllerIdentity):
 *    token, hostname, address, port and the public half of a key made here. The answer
 *    (host uuid, secret, certificate, CA bundle) therefore never travels in clear.
 *
 * An unreachable controller or a 5xx is retried with the one backoff policy
 * (protocol/backoff.ts: capped exponential, with jitter so a fleet does not come back in
 * lockstep); a 4xx or a CA that does not match is final: retrying would not change it.
 */
import { X509Certificate } from 'node:crypto';
import { CONTROLLER_AGENT_PATHS, type RegisterCmd, type RegisterRsp } from '../protocol/agent.ts';
import { type Backoff, backoffDelay } from '../protocol/backoff.ts';
import { CA_CERT_HASH_RE, caCertHash, type CaInfo, PKI_PATHS, splitPem } from '../protocol/pki.ts';
import { isUuid } from '../protocol/values.ts';
import { type Clock, sleep } from './clock.ts';
import { answerError, getJson, joinUrl, postJson } from './http-client.ts';
import { type Limiter, unlimited } from './limiter.ts';
import type { Logger } from './log.ts';
import { MIN_SECRET_LENGTH } from './state.ts';
import { checkIssued, controllerIdentity, type KeyPem, type TlsMaterial } from './tls.ts';

export class RegistrationRefused extends Error {}

/** 0.5 s doubling to 30 s, +-25%. A caller's policy without `jitter` keeps the 25%. */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, jitter: 0.25 };
const REGISTER_TIMEOUT_MS = 30_000;

export interface Registered {
  hostUuid: string;
  secret: string;
  tls: TlsMaterial;
  /** https://<controller host>:<agent port>: where pushes and renewals go from now on. */
  agentUrl: string;
}

/** The `https://host:port` of the controller's agent port, from the admin URL's host. */
export function agentUrlOf(controllerUrl: string, agentPort: number): string {
  const u = new URL(controllerUrl);
  return `https://${u.hostname}:${agentPort}`;
}

/** Step 1-2: the CA bundle entry matching `hash` (or the first, without one). */
export async function discoverCa(controllerUrl: string, hash: string | undefined, log: Logger): Promise<{ ca: string; agentPort: number }> {
  // The hash is the trust anchor here, not the transport: an https URL's certificate is not checked.
  const a = await getJson(joinUrl(controllerUrl, PKI_PATHS.ca), REGISTER_TIMEOUT_MS, { rejectUnauthorized: false });
  if (a.status >= 400 && a.status < 500) throw new RegistrationRefused(`controller ${controllerUrl} has no CA to pin (HTTP ${a.status}: ${answerError(a)})`);
  if (a.status !== 200) throw new Error(`HTTP ${a.status}: ${answerError(a)}`);
  const info = a.body as Partial<CaInfo> | undefined;
  const port = info?.agentPort;
  if (typeof info?.caCertificates !== 'string' || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RegistrationRefused(`controller ${controllerUrl} answered its CA without a certificate and agent port`);
  }
  const certs = splitPem(info.caCertificates);
  const hashes = certs.map((p) => {
    try {
      return caCertHash(p);
    } catch {
      return '';
    }
  });
  if (hash) {
    const i = hashes.indexOf(hash);
    if (i < 0) {
      throw new RegistrationRefused(`the CA served by ${controllerUrl} (${hashes[0] || 'none'}) does not match --ca-cert-hash ${hash}: not the controller the token is for (nothing was sent)`);
    }
    return { ca: certs[i]!, agentPort: port };
  }
  if (!certs[0] || !hashes[0]) throw new RegistrationRefused(`controller ${controllerUrl} served no usable CA certificate`);
  log.warn({ caCertHash: hashes[0] }, 'no --ca-cert-hash: trusting the CA the controller served on first use (pass the token\'s caCertHash to pin it)');
  return { ca: certs[0], agentPort: port };
}

export async function register(o: {
  controllerUrl: string;
  caCertHash?: string;
  cmd: Omit<RegisterCmd, 'publicKey'>;
  key: KeyPem;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
  backoff?: Partial<Backoff>;
  limiter?: Limiter;
}): Promise<Registered> {
  if (o.caCertHash !== undefined && !CA_CERT_HASH_RE.test(o.caCertHash)) {
    throw new RegistrationRefused(`--ca-cert-hash must be sha256:<64 hex digits>, not ${o.caCertHash}`);
  }
  const backoff: Backoff = { ...DEFAULT_BACKOFF, ...o.backoff };
  const body = JSON.stringify({ ...o.cmd, publicKey: o.key.publicKey } satisfies RegisterCmd);
  for (let attempt = 1; ; attempt++) {
    o.signal.throwIfAborted();
    let why: string;
    try {
      const r = await (o.limiter ?? unlimited).run(async () => {
        const { ca, agentPort } = await discoverCa(o.controllerUrl, o.caCertHash, o.log);
        const agentUrl = agentUrlOf(o.controllerUrl, agentPort);
        const a = await postJson(joinUrl(agentUrl, CONTROLLER_AGENT_PATHS.register), body, {}, REGISTER_TIMEOUT_MS, { ca, checkServerIdentity: controllerIdentity });
        return { a, ca, agentUrl };
      });
      const { a, ca, agentUrl } = r;
      if (a.status >= 200 && a.status < 300) {
        const rsp = a.body as Partial<RegisterRsp> | undefined;
        if (rsp?.success === false) throw new RegistrationRefused(`controller ${o.controllerUrl} refused the registration: ${answerError(a)}`);
        if (!rsp || !isUuid(rsp.hostUuid) || typeof rsp.secret !== 'string' || rsp.secret.length < MIN_SECRET_LENGTH) {
          throw new RegistrationRefused(`controller ${o.controllerUrl} answered the registration without a valid hostUuid and secret`);
        }
        if (typeof rsp.certificate !== 'string' || typeof rsp.caCertificates !== 'string') {
          throw new RegistrationRefused(`controller ${o.controllerUrl} answered the registration without a certificate`);
        }
        // The bundle came over TLS checked against the pinned CA: it may add older CAs still trusted.
        const bundle = splitPem(rsp.caCertificates).includes(ca) ? rsp.caCertificates : `${ca}\n${rsp.caCertificates}`;
        try {
          checkIssued(rsp.certificate, o.key.privateKey, ca, o.clock.now());
          if (new X509Certificate(rsp.certificate).subject.split('\n').indexOf(`CN=${rsp.hostUuid}`) < 0) throw new Error('its CN is not our host uuid');
        } catch (err) {
          throw new RegistrationRefused(`controller ${o.controllerUrl} answered an unusable certificate: ${(err as Error).message}`);
        }
        return { hostUuid: rsp.hostUuid, secret: rsp.secret, tls: { key: o.key.privateKey, cert: rsp.certificate, ca: bundle }, agentUrl };
      }
      if (a.status >= 400 && a.status < 500) {
        throw new RegistrationRefused(`controller ${o.controllerUrl} refused the registration (HTTP ${a.status}): ${answerError(a)}`);
      }
      why = `HTTP ${a.status}: ${answerError(a)}`;
    } catch (err) {
      if (err instanceof RegistrationRefused) throw err;
      why = (err as Error).message;
    }
    const wait = Math.round(backoffDelay(backoff, attempt - 1));
    o.log.warn({ attempt, why, retryInMs: wait }, `registration with ${o.controllerUrl} failed; retrying`);
    await sleep(o.clock, wait, o.signal);
  }
}
