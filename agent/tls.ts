/**
 * The agent's TLS identity (protocol/pki.ts has the trust model): its key, its certificate
 * from the controller's CA, and the CA bundle it trusts, in `<state dir>/tls/` (key 0600).
 *
 * Two phases:
 * - certified: key + certificate + pinned CA. The server presents the certificate and
 *   accepts only clients with a certificate from the pinned CA (the controller; another
 *   agent only for vmReceive); as a client the agent checks the controller by CA and role.
 * - provisional: no certificate yet (before registration, or deployed with a secret but no
 *   certificate, or the certificate expired while the host was off). The server presents a
 *   temporary self-signed certificate (one per process, shared by a fleet's agents) and
 *   checks no client certificate. Why that is safe: in this phase nothing rides on TLS alone.
 *   Every command is HMAC-signed with the host secret and replay-fenced, and every answer is
 *   signed back (protocol/agent.ts), so a party in the middle can read only what plain HTTP
 *   showed before (commands and answers: no secret, no key) and can change nothing unseen.
 *   The secret never travels on this path: registration (which hands it out) is done only
 *   over TLS to a CA pinned by hash, and the certificate request sends a public key and
 *   gets a certificate, both public. The phase ends at the first successful certificate
 *   request, which the agent makes at start. Limit: the channel's frames are unsigned
 *   (protocol/agent.ts VmFrame), so during this phase a party in the middle could inject VM
 *   frames, as it could on plain HTTP; the controller re-reads VMs at every connect.
 *
 * The server's context is swapped in place on renewal (`setSecureContext`): new connections
 * get the new certificate, open ones (the channel) carry on, so renewal costs no downtime.
 */
import { createPrivateKey, generateKeyPair, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { CONTROLLER_CN, splitPem, validity } from '../protocol/pki.ts';
import { ensureDir, writeFileAtomic } from './fsutil.ts';

export const TLS_DIR = 'tls';

export interface TlsMaterial {
  key: string;
  cert: string;
  /** PEM bundle of trusted CAs. */
  ca: string;
}

export interface KeyPem {
  privateKey: string;
  publicKey: string;
}

/** A new ECDSA P-256 key pair (node:crypto; the private half never leaves this host). */
export function newKey(): Promise<KeyPem> {
  return new Promise((resolve, reject) => {
    generateKeyPair('ec', { namedCurve: 'prime256v1', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } },
      (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey })));
  });
}

let placeholder: Promise<{ key: string; cert: string }> | undefined;

/**
 * The temporary self-signed certificate of the provisional phase: one per process (a fleet
 * process shares it), made on first use with node:crypto alone (self-signed.ts says why not
 * @peculiar/x509: +15 MB resident for the life of the process).
 */
export function placeholderIdentity(): Promise<{ key: string; cert: string }> {
  placeholder ??= (async () => {
    const { selfSignedServer } = await import('./self-signed.ts');
    // Real time, not the injected clock: a certificate's validity is judged by peers' real clocks.
    return selfSignedServer('hostkeeper-agent-provisional', Date.now(), 10 * 365 * 24 * 3600_000);
  })();
  return placeholder;
}

/** Throws when `cert` is not for `key`, not from one of `caBundle`, or expired at `now`. */
export function checkIssued(cert: string, key: string, caBundle: string, now: number): void {
  const c = new X509Certificate(cert);
  if (!c.checkPrivateKey(createPrivateKey(key))) throw new Error('the certificate is not for our key');
  const cas = splitPem(caBundle).map((p) => new X509Certificate(p));
  if (!cas.some((ca) => c.checkIssued(ca) && c.verify(ca.publicKey))) throw new Error('the certificate is not issued by the trusted CA');
  const v = validity(cert);
  if (now >= v.notAfter) throw new Error('the certificate has expired');
}

/**
 * Accepts a server certificate only from the controller (CN = CONTROLLER_CN). The chain is
 * checked by Node against `ca` before this runs; this adds the role, which the CA alone
 * does not give (agents hold certificates from the same CA).
 */
export function controllerIdentity(_host: string, cert: tls.PeerCertificate): Error | undefined {
  return cert.subject?.CN === CONTROLLER_CN ? undefined : new Error(`the server's certificate is not the controller's (CN ${cert.subject?.CN ?? 'none'})`);
}

/** Any certificate from the pinned CA (agent to agent: the migration token authenticates the transfer). */
export const anyIdentity = (): undefined => undefined;

export class AgentTlsStore {
  private mat: TlsMaterial | undefined;

  private constructor(private readonly dir: string) {}

  /** Reads `<state dir>/tls/`; absent or unreadable parts leave the agent provisional. */
  static async open(stateDir: string): Promise<AgentTlsStore> {
    const s = new AgentTlsStore(join(stateDir, TLS_DIR));
    try {
      const [key, cert, ca] = await Promise.all(['key.pem', 'cert.pem', 'ca.pem'].map((f) => readFile(join(s.dir, f), 'utf8')));
      s.mat = { key: key!, cert: cert!, ca: ca! };
    } catch {
      // Absent on a first start: provisional until a certificate is obtained.
    }
    return s;
  }

  get material(): TlsMaterial | undefined {
    return this.mat;
  }

  /** Valid now (not expired, from the CA, for our key)? */
  usable(now: number): boolean {
    if (!this.mat) return false;
    try {
      checkIssued(this.mat.cert, this.mat.key, this.mat.ca, now);
      return true;
    } catch {
      return false;
    }
  }

  /** The pinned CA bundle, even when our own certificate is not usable (expired). */
  get ca(): string | undefined {
    return this.mat?.ca;
  }

  async save(m: TlsMaterial): Promise<void> {
    await ensureDir(this.dir);
    // Key first: a crash between the writes leaves an old certificate that fails
    // checkPrivateKey (provisional, fixed by the next request), never a usable mismatch.
    await writeFileAtomic(join(this.dir, 'key.pem'), m.key, 0o600);
    await writeFileAtomic(join(this.dir, 'cert.pem'), m.cert, 0o644);
    await writeFileAtomic(join(this.dir, 'ca.pem'), m.ca, 0o644);
    this.mat = m;
  }

}
