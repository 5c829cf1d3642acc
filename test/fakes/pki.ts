/**
 * A throwaway CA for tests, made with the same issuing code as the controller's
 * (protocol/x509.ts): a controller identity (CN hostkeeper-controller) usable as a
 * ControllerTls, and agent certificates on demand.
 */
import { webcrypto } from 'node:crypto';
import tls from 'node:tls';
import { caCertHash, CONTROLLER_CN } from '../../protocol/pki.ts';
import { importPrivateKey, importPublicKey, issueLeaf, newKeyPair, selfSignedCa } from '../../controller/pki/x509.ts';
import type { ControllerTls } from '../../controller/pki/ca.ts';

export interface TestCa {
  caCert: string;
  caCertHash: string;
  /** The controller's identity from this CA. */
  controller: { key: string; cert: string };
  tls: ControllerTls;
  /** A certificate from this CA for `publicKeyPem` (a new key pair when absent). */
  issue(cn: string, publicKeyPem?: string, ips?: string[]): Promise<{ cert: string; key?: string }>;
}

const DAY = 24 * 3600_000;

export async function testCa(name = 'Test CA'): Promise<TestCa> {
  const now = Date.now();
  const ca = await selfSignedCa(name, now, 365 * DAY);
  const caKey = await importPrivateKey(ca.key.privateKey);
  async function issue(cn: string, publicKeyPem?: string, ips: string[] = []): Promise<{ cert: string; key?: string }> {
    let key: string | undefined;
    let publicKey: webcrypto.CryptoKey;
    if (publicKeyPem) publicKey = await importPublicKey(publicKeyPem);
    else {
      const kp = await newKeyPair();
      publicKey = kp.keys.publicKey;
      key = kp.pem.privateKey;
    }
    const cert = await issueLeaf(ca.cert, caKey, { cn, dns: [cn], ips, publicKey, notBefore: now - 60_000, notAfter: now + 30 * DAY });
    return { cert, ...(key ? { key } : {}) };
  }
  const ctl = await issue(CONTROLLER_CN);
  const controller = { key: ctl.key!, cert: ctl.cert };
  const context = tls.createSecureContext({ ...controller, ca: ca.cert });
  return {
    caCert: ca.cert, caCertHash: caCertHash(ca.cert), controller, issue,
    tls: { context: () => context, caBundle: ca.cert, key: () => controller.key, cert: () => controller.cert },
  };
}
