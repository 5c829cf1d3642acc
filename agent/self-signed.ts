/**
 * The agent's temporary self-signed certificate (agent/tls.ts, provisional phase), made with
 * @peculiar/x509 on WebCrypto: Node's crypto cannot issue certificates. Loaded only when
 * needed (agent/tls.ts imports it dynamically), so a certified agent never pays for it.
 * The controller issues its certificates with its own module (controller/pki/x509.ts): the
 * two may not import each other, and this one needs only a self-signed leaf.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export async function selfSignedServer(cn: string, now: number, lifetimeMs: number): Promise<{ key: string; cert: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const serial = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)));
  serial[0]! &= 0x7f;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'), name: `CN=${cn}`, notBefore: new Date(now - 5 * 60_000), notAfter: new Date(now + lifetimeMs),
    signingAlgorithm: ALG, keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    ],
  });
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { key, cert: cert.toString('pem') };
}
