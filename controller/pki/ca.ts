/**
 * The controller's CA and its own TLS identity (protocol/pki.ts describes the trust model).
 *
 * The CA (certificate + PKCS#8 key) is one store row (kind 'pki', uuid 'ca'), so controllers
 * sharing a database share it: the first to start creates it inside a transaction, the
 * others read it. `trusted` holds older CA certificates still accepted while a CA is being
 * replaced (docs/operator-guide.md, "Replacing the CA"); the row's `cert` is the one that
 * issues.
 *
 * The controller's own certificate (CN = CONTROLLER_CN) is NOT stored: each process makes a
 * fresh key at start and issues itself a certificate, renewed in process once RENEW_AT of its
 * life has passed (`renewIfDue`, run by the store's housekeeping tick: no timer of its own;
 * listeners get the new one for new connections; open channels carry on).
 */
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import {
  AGENT_CERT_LIFETIME_MS, BACKDATE_MS, CA_LIFETIME_MS, caCertHash, CONTROLLER_CERT_LIFETIME_MS, CONTROLLER_CN, renewAt,
} from '../../protocol/pki.ts';
import type { Logger } from '../log.ts';
import type { Repository } from '../store/repository.ts';
import { importPrivateKey, importPublicKey, issueLeaf, newKeyPair, selfSignedCa } from './x509.ts';

export interface CaRow {
  uuid: 'ca';
  /** The issuing CA (PEM) and its key (PKCS#8 PEM). */
  cert: string;
  key: string;
  /** Older CA certificates still trusted (PEM each), during a replacement. */
  trusted: string[];
  createDate: number;
}

export const CA_ROW = 'ca';

/** What TLS clients and servers of the controller use: its key, certificate and the CA bundle. */
export interface ControllerTls {
  /** The current context (renewed in place: take it per connection, do not keep it). */
  context(): tls.SecureContext;
  /** PEM bundle of trusted CAs (issuing one first). */
  readonly caBundle: string;
  key(): string;
  cert(): string;
}

export class BadPublicKey extends Error {}

/**
 * Certificate validity is judged by every peer against its own wall clock, so issuing and
 * renewal read wall time, not the injected scheduling clock (a test's fake clock would issue
 * certificates that real TLS stacks find expired). Injectable for tests of renewal.
 */
export type WallClock = () => number;

export class Pki implements ControllerTls {
  private ctx!: tls.SecureContext;
  private myKey = '';
  private myCert = '';
  private dueAt = 0;
  private renewing: Promise<void> | undefined;
  private readonly listeners: (() => void)[] = [];

  private constructor(
    private readonly row: CaRow,
    private readonly caKey: CryptoKey,
    private readonly wall: WallClock,
    private readonly log: Logger,
  ) {}

  /** Loads the CA row, creating it on the first start; then issues this process its certificate. */
  static async open(repo: Repository, log: Logger, wall: WallClock = Date.now): Promise<Pki> {
    let row = await repo.get<CaRow>('pki', CA_ROW);
    if (!row) {
      const made = await selfSignedCa('Hostkeeper CA', wall(), CA_LIFETIME_MS);
      // Another controller on the same database may have won the race: keep its CA.
      row = await repo.transaction(async (tx) => {
        const there = await tx.get<CaRow>('pki', CA_ROW);
        if (there) return there;
        return tx.insert<CaRow>('pki', { uuid: CA_ROW, cert: made.cert, key: made.key.privateKey, trusted: [], createDate: wall() });
      });
      log.info({ caCertHash: caCertHash(row.cert) }, 'created the controller CA');
    }
    const pki = new Pki(row, await importPrivateKey(row.key), wall, log);
    await pki.renewOwn();
    return pki;
  }

  get caCert(): string {
    return this.row.cert;
  }

  get caBundle(): string {
    return [this.row.cert, ...this.row.trusted].map((p) => p.trim()).join('\n') + '\n';
  }

  /** `sha256:<hex>` of the issuing CA's public key: what bootstrap tokens carry. */
  get caCertHash(): string {
    return caCertHash(this.row.cert);
  }

  context(): tls.SecureContext {
    return this.ctx;
  }
  key(): string {
    return this.myKey;
  }
  cert(): string {
    return this.myCert;
  }

  /** Called after each renewal of the controller's certificate (listeners swap their context). */
  onRenew(fn: () => void): void {
    this.listeners.push(fn);
  }

  /**
   * A certificate for host `hostUuid` at `managementIp` for the agent's public key (SPKI PEM,
   * ECDSA P-256). Throws BadPublicKey when the key is not one.
   */
  async issueAgent(hostUuid: string, managementIp: string, publicKeyPem: string): Promise<{ cert: string; notAfter: number }> {
    const publicKey = await this.checkPublicKey(publicKeyPem);
    const now = this.wall();
    const notAfter = now + AGENT_CERT_LIFETIME_MS;
    const ips = /^\d{1,3}(\.\d{1,3}){3}$/.test(managementIp) ? [managementIp] : [];
    const cert = await issueLeaf(this.row.cert, this.caKey, { cn: hostUuid, dns: [hostUuid], ips, publicKey, notBefore: now - BACKDATE_MS, notAfter });
    // As written in the certificate (X.509 keeps whole seconds).
    return { cert, notAfter: Date.parse(new X509Certificate(cert).validTo) };
  }

  /** The key as WebCrypto holds it; BadPublicKey when it is not an ECDSA P-256 SPKI PEM. */
  async checkPublicKey(publicKeyPem: string): Promise<CryptoKey> {
    try {
      return await importPublicKey(publicKeyPem);
    } catch {
      throw new BadPublicKey('publicKey must be the SPKI PEM of an ECDSA P-256 key');
    }
  }

  private async renewOwn(): Promise<void> {
    const now = this.wall();
    const { keys, pem } = await newKeyPair();
    const notBefore = now - BACKDATE_MS;
    const cert = await issueLeaf(this.row.cert, this.caKey, {
      cn: CONTROLLER_CN, dns: [CONTROLLER_CN], publicKey: keys.publicKey, notBefore, notAfter: now + CONTROLLER_CERT_LIFETIME_MS,
    });
    this.myKey = pem.privateKey;
    this.myCert = cert;
    this.ctx = tls.createSecureContext({ key: pem.privateKey, cert, ca: this.caBundle });
    this.dueAt = renewAt(notBefore, Date.parse(new X509Certificate(cert).validTo));
    for (const l of this.listeners) l();
  }

  /** Renews the controller's certificate when RENEW_AT of its life has passed; a failure is logged and retried next time. */
  renewIfDue(): Promise<void> {
    if (this.renewing || this.wall() < this.dueAt) return this.renewing ?? Promise.resolve();
    this.renewing = this.renewOwn().then(
      () => this.log.info('renewed the controller certificate'),
      (err) => this.log.error({ err: (err as Error).message }, 'renewing the controller certificate failed; retrying at the next housekeeping tick'),
    ).finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /** Nothing runs on its own (renewIfDue is called from outside): nothing to stop. */
  stop(): void {}
}
