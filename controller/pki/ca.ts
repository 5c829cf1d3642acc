/**
 * The controller's CA and its own TLS identity (protocol/pki.ts describes the trust model).
 *
 * The CA (certificate + PKCS#8 key) is one store row (kind 'pki', uuid 'ca'), so controllers
 * sharing a database share it: the first to start creates it inside a transaction, the
 * others read it. `trusted` holds other CA certificates accepted while a CA is being
 * replaced (docs/operator-guide.md, "Replacing the CA"); the row's `cert` is the one that
 * issues.
 *
 * Replacing the CA online (`startRotation`, advanced by `renewIfDue` on the housekeeping tick,
 * so no controller stops): prepared (the new CA trusted, the old one still issues; every
 * certificate issued from now carries the new CA in its bundle) -> once every Connected host
 * holds a certificate issued after that, switched (the new CA issues, the controller's own
 * certificate first; the old one stays trusted) -> once every Connected host holds a
 * certificate from the new CA, done (the old CA and its key dropped). Agents move at their
 * usual renewal (day 20 of 30), so a rotation takes at most ~40 days with nobody watching. A
 * host's certificate counts as new when its end (`agentCertNotAfter`) is at least a full
 * lifetime after the phase began plus ADOPT_MARGIN_MS: other controllers on the same database
 * adopt the row at their next tick (every 10 minutes), and until then may issue with the old
 * bundle. A host that is not Connected is not waited for; one that comes back with a
 * certificate from a CA already dropped must be given a new one (operator's guide).
 *
 * The controller's own certificate (CN = CONTROLLER_CN) is NOT stored: each process makes a
 * fresh key at start and issues itself a certificate, renewed in process once RENEW_AT of its
 * life has passed (`renewIfDue`, run by the store's housekeeping tick: no timer of its own;
 * listeners get the new one for new connections; open channels carry on).
 */
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { HkError } from '../../protocol/errors.ts';
import {
  AGENT_CERT_LIFETIME_MS, BACKDATE_MS, CA_LIFETIME_MS, caCertHash, CONTROLLER_CERT_LIFETIME_MS, CONTROLLER_CN, renewAt,
} from '../../protocol/pki.ts';
import type { HostRow } from '../../protocol/resources.ts';
import type { Logger } from '../log.ts';
import type { Repository } from '../store/repository.ts';
import { importPrivateKey, importPublicKey, issueLeaf, newKeyPair, selfSignedCa } from './x509.ts';

export interface CaRow {
  uuid: 'ca';
  /** The issuing CA (PEM) and its key (PKCS#8 PEM). */
  cert: string;
  key: string;
  /** Other CA certificates trusted (PEM each), during a replacement. */
  trusted: string[];
  createDate: number;
  /** The new CA while a replacement is prepared and not switched to. */
  next?: { cert: string; key: string };
  /** An online replacement under way (startRotation): its phase and when the phase began (wall ms). */
  rotation?: CaRotation;
}

export interface CaRotation {
  phase: 'prepared' | 'switched';
  since: number;
  startedAt: number;
}

/** What `rotationStatus` reports. */
export interface RotationStatus {
  phase: 'prepared' | 'switched' | 'none';
  since?: number;
  /** sha256 hashes of the issuing CA and, while prepared, of the next one. */
  issuing: string;
  next?: string;
  /** Connected hosts whose certificate predates the phase (the first 20), and how many. */
  waitingFor: string[];
  waiting: number;
}

export const CA_ROW = 'ca';

/** How long after a phase began a certificate must have been issued to count (see above). */
export const ADOPT_MARGIN_MS = 15 * 60_000;

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
    private row: CaRow,
    private caKey: CryptoKey,
    private readonly wall: WallClock,
    private readonly log: Logger,
    private readonly repo: Repository,
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
    const pki = new Pki(row, await importPrivateKey(row.key), wall, log, repo);
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

  /**
   * The housekeeping tick (the store's sweep): adopts a CA row another controller or
   * `rotate-ca.ts` changed, moves an online replacement on when its hosts are ready, and renews
   * the controller's certificate when RENEW_AT of its life has passed. A failure is logged and
   * retried at the next tick.
   */
  renewIfDue(): Promise<void> {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      try {
        await this.adopt(await this.repo.get<CaRow>('pki', CA_ROW));
        if (this.row.rotation) await this.advance();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'the CA replacement could not move on; retrying at the next housekeeping tick');
      }
      if (this.wall() < this.dueAt) return;
      await this.renewOwn().then(
        () => this.log.info('renewed the controller certificate'),
        (err) => this.log.error({ err: (err as Error).message }, 'renewing the controller certificate failed; retrying at the next housekeeping tick'),
      );
    })().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /**
   * Starts replacing the CA without stopping anything (see the file's comment): a new CA is
   * made and trusted at once; the housekeeping tick does the rest. SYS.1006 when a replacement
   * is already under way.
   */
  async startRotation(): Promise<RotationStatus> {
    const made = await selfSignedCa('Hostkeeper CA', this.wall(), CA_LIFETIME_MS);
    const now = this.wall();
    const row = await this.repo.transaction(async (tx) => {
      const r = await tx.get<CaRow>('pki', CA_ROW);
      if (!r) throw new HkError('SYS.1006', 'the controller has no CA yet');
      if (r.rotation || r.next) {
        throw new HkError('SYS.1006', `a CA replacement is already under way (${r.rotation ? `phase ${r.rotation.phase} since ${new Date(r.rotation.since).toISOString()}` : 'prepared offline by rotate-ca.ts'}): let it finish`);
      }
      return tx.update<CaRow>('pki', CA_ROW, {
        next: { cert: made.cert, key: made.key.privateKey }, trusted: [...r.trusted, made.cert],
        rotation: { phase: 'prepared', since: now, startedAt: now },
      });
    });
    await this.adopt(row);
    this.log.info({ next: caCertHash(made.cert), issuing: caCertHash(row.cert) }, 'CA replacement started: the new CA is trusted; it issues once every connected host has renewed');
    return this.rotationStatus();
  }

  /** Where an online replacement stands (phase `none` when there is none). */
  async rotationStatus(): Promise<RotationStatus> {
    const r = this.row.rotation;
    const waiting = r ? await this.waitingHosts(r.since) : [];
    return {
      phase: r?.phase ?? 'none', ...(r ? { since: r.since } : {}), issuing: this.caCertHash,
      ...(this.row.next ? { next: caCertHash(this.row.next.cert) } : {}),
      waitingFor: waiting.slice(0, 20).map((h) => `host[uuid:${h.uuid}, name:${h.name}]`), waiting: waiting.length,
    };
  }

  /** Connected hosts whose certificate was issued before `since` (+ ADOPT_MARGIN_MS). */
  private async waitingHosts(since: number): Promise<HostRow[]> {
    const newFrom = since + ADOPT_MARGIN_MS + AGENT_CERT_LIFETIME_MS - 1000; // X.509 keeps whole seconds
    return (await this.repo.find<HostRow>('host', { status: 'Connected' })).filter((h) => h.agentSecret && (h.agentCertNotAfter ?? 0) < newFrom);
  }

  /** One step of an online replacement, when no Connected host is left waiting. */
  private async advance(): Promise<void> {
    const r = this.row.rotation!;
    if ((await this.waitingHosts(r.since)).length > 0) return;
    const now = this.wall();
    const row = await this.repo.transaction(async (tx) => {
      const cur = await tx.get<CaRow>('pki', CA_ROW);
      // Another controller moved it on meanwhile: nothing to do here but adopt.
      if (!cur?.rotation || cur.rotation.phase !== r.phase || cur.rotation.since !== r.since) return cur;
      if (r.phase === 'switched') return tx.update<CaRow>('pki', CA_ROW, { trusted: [], rotation: undefined, next: undefined });
      // Prepared without a new CA (rotate-ca.ts finish run by hand meanwhile): nothing left to do.
      if (!cur.next) return tx.update<CaRow>('pki', CA_ROW, { rotation: undefined });
      const trusted = [...cur.trusted.filter((p) => p !== cur.next!.cert), cur.cert];
      return tx.update<CaRow>('pki', CA_ROW, { cert: cur.next.cert, key: cur.next.key, trusted, next: undefined, rotation: { ...r, phase: 'switched', since: now } });
    });
    if (!row) return;
    const was = this.caCertHash;
    await this.adopt(row);
    if (r.phase === 'prepared') this.log.info({ issuing: this.caCertHash, previous: was }, 'CA replacement: every connected host trusts the new CA; it issues now, the old one stays trusted');
    else this.log.info({ issuing: this.caCertHash }, 'CA replacement done: every connected host holds a certificate from the new CA; the old CA is dropped');
  }

  /** Takes `row` as the CA row when it differs from the one in use: key, contexts, own certificate. */
  private async adopt(row: CaRow | undefined): Promise<void> {
    if (!row) return;
    const same = row.cert === this.row.cert && row.trusted.join() === this.row.trusted.join()
      && row.next?.cert === this.row.next?.cert && JSON.stringify(row.rotation) === JSON.stringify(this.row.rotation);
    if (same) return;
    const issuerChanged = row.cert !== this.row.cert;
    const bundleChanged = issuerChanged || row.trusted.join() !== this.row.trusted.join();
    if (issuerChanged) this.caKey = await importPrivateKey(row.key);
    this.row = row;
    // A new issuer: our certificate must come from it; a new bundle: the contexts must trust it.
    if (bundleChanged) await this.renewOwn();
  }

  /** Nothing runs on its own (renewIfDue is called from outside): nothing to stop. */
  stop(): void {}
}
