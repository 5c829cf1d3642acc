/**
 * Certificate issuing (the controller's CA, its leaf certificates, the admin API's
 * self-signed one) with @peculiar/x509 on WebCrypto (ECDSA P-256, SHA-256): Node's own
 * crypto parses X.509 but cannot issue certificates. Only this file touches the library in
 * the controller (it needs reflect-metadata loaded first). The agent does not load it: its one
 * self-signed placeholder is built with node:crypto (agent/self-signed.ts; the library cost
 * ~15 MB of the agent's 60 MB idle budget).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { BACKDATE_MS } from '../../protocol/pki.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const subtle = webcrypto.subtle;

export interface KeyPairPem {
  /** PKCS#8 PEM. */
  privateKey: string;
  /** SPKI PEM. */
  publicKey: string;
}

const pem = (label: string, der: ArrayBuffer) => x509.PemConverter.encode(der, label);

export async function newKeyPair(): Promise<{ keys: CryptoKeyPair; pem: KeyPairPem }> {
  const keys = (await subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  return {
    keys,
    pem: {
      privateKey: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)),
      publicKey: pem('PUBLIC KEY', await subtle.exportKey('spki', keys.publicKey)),
    },
  };
}

export async function importPrivateKey(pkcs8Pem: string): Promise<CryptoKey> {
  return subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pkcs8Pem), ALG, false, ['sign']);
}

/** An agent's public key (SPKI PEM): ECDSA P-256 only; anything else throws. */
export async function importPublicKey(spkiPem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decodeFirst(spkiPem);
  return subtle.importKey('spki', der, ALG, true, ['verify']);
}

const serial = () => {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f; // positive
  return Buffer.from(b).toString('hex');
};

export async function selfSignedCa(cn: string, now: number, lifetimeMs: number): Promise<{ cert: string; key: KeyPairPem }> {
  const { keys, pem: key } = await newKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: `CN=${cn}`, notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + lifetimeMs),
    signingAlgorithm: ALG, keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key };
}

export interface LeafSpec {
  cn: string;
  /** Subject alternative names: DNS-like names and IP addresses. */
  dns?: string[];
  ips?: string[];
  publicKey: CryptoKey;
  notBefore: number;
  notAfter: number;
}

/** A server+client certificate for `spec` issued by the CA (cert PEM + its private key). */
export async function issueLeaf(caCertPem: string, caKey: CryptoKey, spec: LeafSpec): Promise<string> {
  const ca = new x509.X509Certificate(caCertPem);
  const names: x509.JsonGeneralName[] = [
    ...(spec.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: `CN=${spec.cn}`, issuer: ca.subject,
    notBefore: new Date(spec.notBefore), notAfter: new Date(spec.notAfter),
    signingAlgorithm: ALG, publicKey: spec.publicKey, signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey),
    ],
  });
  return cert.toString('pem');
}

/** A self-signed server certificate (the admin API's HTTPS when the admin asks for one generated). */
export async function selfSignedServer(cn: string, dns: string[], ips: string[], now: number, lifetimeMs: number): Promise<{ cert: string; key: KeyPairPem }> {
  const { keys, pem: key } = await newKeyPair();
  const names: x509.JsonGeneralName[] = [...dns.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))];
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: `CN=${cn}`, notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + lifetimeMs),
    signingAlgorithm: ALG, keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
    ],
  });
  return { cert: cert.toString('pem'), key };
}
