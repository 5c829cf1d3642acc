/**
 * TLS on the command channel (both directions): what controller and agent agree on.
 *
 * Trust. The controller keeps a CA (controller/pki/). Every agent holds a certificate from it
 * (CN = host uuid, SAN = host uuid + management IP) for a key the agent generated itself
 * (the private key never leaves the host); the controller holds one too (CN =
 * CONTROLLER_CN), used as its server certificate on the agent port and as its client
 * certificate towards agents. Each side checks the other against the CA it trusts, and by
 * role: an agent accepts a controller only with CN = CONTROLLER_CN (another agent's
 * certificate is from the same CA, so the CA alone would not do), the controller accepts an
 * agent only with CN = the host uuid it means to reach.
 *
 * Pinning. A bootstrapping agent learns the CA from the controller over plain HTTP
 * (GET CA path) and accepts it only when its SubjectPublicKeyInfo hashes to the
 * `--ca-cert-hash` the admin gave (as `kubeadm join --discovery-token-ca-cert-hash`), BEFORE
 * it sends its token. A deployed agent (secret written by the deployment, no certificate
 * yet) learns the CA in the answer to its certificate request, which the controller signs
 * with the host secret (x-hk-answer-sig, protocol/agent.ts): the secret is the trust anchor
 * there, as it already is for every command.
 *
 * Request signing (protocol/agent.ts) stays as a second factor inside TLS.
 */
import { createHash, X509Certificate } from 'node:crypto';

/** The controller's TLS port for agents (HOSTKEEPER_AGENT_PORT). */
export const CONTROLLER_AGENT_PORT = 7443;
/** Subject CN of the controller's certificates; the CA issues it to nothing else. */
export const CONTROLLER_CN = 'hostkeeper-controller';

/**
 * Lifetimes. Agent certificates: 30 days, renewed at 2/3 (day 20) over the channel. Short
 * enough that a certificate leaked with a host's disk stops working within a month without
 * needing revocation lists, long enough that a host powered off for a week comes back with
 * a valid certificate; a host off past expiry gets a new one with its HMAC secret (the
 * certificate request is signed), so expiry never strands a host. 20 days also stays under
 * Node's timer limit (24.8 days), so one timer covers the wait. The controller's own
 * certificate lives as long and is renewed the same way, in process. The CA: 10 years,
 * replaced by hand (docs/operator-guide.md).
 */
export const AGENT_CERT_LIFETIME_MS = 30 * 24 * 3600_000;
export const CONTROLLER_CERT_LIFETIME_MS = 30 * 24 * 3600_000;
export const CA_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Renew when this fraction of a certificate's life has passed. */
export const RENEW_AT = 2 / 3;
/** Issued certificates start this much before now, so a host clock a little behind accepts them. */
export const BACKDATE_MS = 5 * 60_000;

export const PKI_PATHS = {
  /** GET, public: the CA bundle and the agent port (no secret in it: the hash check makes it trusted). */
  ca: '/zstack/agent/v1/ca',
  /** POST, signed with the host secret: CertificateCmd -> CertificateRsp (answer signed too). */
  certificate: '/zstack/agent/v1/certificate',
} as const;

export interface CaInfo {
  success: true;
  /** PEM, the CA that issues now first, then any older one still trusted (during a CA replacement). */
  caCertificates: string;
  /** The hash of the first (issuing) CA, as in a bootstrap token's inventory. */
  caCertHash: string;
  /** Where the controller serves agents over TLS. */
  agentPort: number;
}

export interface CertificateCmd {
  /** SPKI PEM of an ECDSA P-256 key the agent generated (its private half stays on the host). */
  publicKey: string;
}
export interface CertificateRsp {
  success: boolean;
  error?: string;
  certificate: string;
  caCertificates: string;
  agentPort: number;
}

/** `sha256:<hex>` of a certificate's SubjectPublicKeyInfo DER (kubeadm's format). */
export function caCertHash(certPem: string): string {
  const der = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(der).digest('hex')}`;
}

export const CA_CERT_HASH_RE = /^sha256:[0-9a-f]{64}$/;

/** The PEM blocks of a bundle, in order. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** The subject CN of a parsed certificate (node:crypto's `subject` is `K=V` lines). */
export function subjectCn(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3);
  return undefined;
}

/** When a certificate valid [notBefore, notAfter] is due for renewal. */
export function renewAt(notBefore: number, notAfter: number): number {
  return notBefore + (notAfter - notBefore) * RENEW_AT;
}

/** A certificate's validity in epoch ms. */
export function validity(certPem: string): { notBefore: number; notAfter: number } {
  const c = new X509Certificate(certPem);
  return { notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo) };
}
