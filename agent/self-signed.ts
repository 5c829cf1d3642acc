/**
 * The agent's temporary self-signed certificate (agent/tls.ts, provisional phase), written
 * here in DER with node:crypto (key pair and ECDSA signature); Node's crypto parses X.509 but
 * cannot issue certificates, so the few fixed structures are encoded below.
 *
 * Why not @peculiar/x509, which the controller uses for its CA (controller/pki/x509.ts):
 * memory, measured. Loading it (with reflect-metadata, tsyringe and its asn1 libraries) takes
 * a bare Node 20 process from 39.6 to 54.5 MB, and it stays loaded for the life of the
 * process: the bundled agent that had no certificate at start idled at 70.0 MB (not
 * registered) and 72.5 MB (registered, connected), against 61.8 MB for the same agent
 * restarted with its certificate (bench/agent-rss.bench.ts; the target is < 60 MB). This
 * file loads nothing beyond node:crypto, which the agent loads anyway.
 *
 * The certificate is the one @peculiar/x509 made (compared field by field with `openssl
 * asn1parse`; test/agent/footprint.test.ts checks it with X509Certificate and openssl):
 * X.509 v3, a random positive 128-bit serial, ecdsa-with-SHA256 over an ECDSA P-256 key,
 * subject = issuer = CN (PrintableString), valid from 5 minutes ago, extensions
 * basicConstraints (critical, not a CA), keyUsage (critical, digitalSignature), extKeyUsage
 * (serverAuth, clientAuth).
 */
import { generateKeyPair, type KeyObject, randomBytes, sign } from 'node:crypto';

/** One DER element: tag, definite length, contents. */
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
const seq = (...c: Buffer[]) => der(SEQUENCE, ...c);

/** An OBJECT IDENTIFIER from its dotted form. */
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const v of rest) {
    const groups: number[] = [];
    for (let x = v; ; x = Math.floor(x / 128)) {
      groups.unshift(x % 128);
      if (x < 128) break;
    }
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return der(0x06, Buffer.from(out));
}

/** A non-negative INTEGER from its big-endian bytes (a leading 0 when the high bit is set). */
const uint = (b: Buffer) => der(0x02, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5); whole seconds, UTC. */
function time(ms: number): Buffer {
  const iso = new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const year = Number(iso.slice(0, 4));
  return year >= 1950 && year < 2050 ? der(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii')) : der(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

/** CN=<cn> as a Name: PrintableString when it fits that alphabet, else UTF8String. */
function name(cn: string): Buffer {
  const value = /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(cn) ? der(0x13, Buffer.from(cn, 'ascii')) : der(0x0c, Buffer.from(cn, 'utf8'));
  return seq(der(SET, seq(oid('2.5.4.3'), value)));
}

const ECDSA_WITH_SHA256 = seq(oid('1.2.840.10045.4.3.2'));
const TRUE = der(0x01, Buffer.from([0xff]));

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), TRUE, der(0x04, value)) : seq(oid(id), der(0x04, value));
}

const EXTENSIONS = der(0xa3, seq(
  // basicConstraints: cA false (the default, so an empty SEQUENCE in DER).
  extension('2.5.29.19', true, seq()),
  // keyUsage: digitalSignature (bit 0; 7 unused bits).
  extension('2.5.29.15', true, der(0x03, Buffer.from([0x07, 0x80]))),
  // extKeyUsage: serverAuth, clientAuth.
  extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))),
));

function newEcKey(): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  return new Promise((resolve, reject) => {
    generateKeyPair('ec', { namedCurve: 'prime256v1' }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey })));
  });
}

export async function selfSignedServer(cn: string, now: number, lifetimeMs: number): Promise<{ key: string; cert: string }> {
  const keys = await newEcKey();
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  if (serial[0] === 0) serial[0] = 1; // positive and minimal: no leading zero byte
  const tbs = seq(
    der(0xa0, uint(Buffer.from([2]))), // v3
    uint(serial),
    ECDSA_WITH_SHA256,
    name(cn),
    seq(time(now - 5 * 60_000), time(now + lifetimeMs)),
    name(cn),
    keys.publicKey.export({ type: 'spki', format: 'der' }),
    EXTENSIONS,
  );
  // Node's ECDSA signature is DER (r, s), as X.509 wants it.
  const signature = sign('sha256', tbs, keys.privateKey);
  const cert = seq(tbs, ECDSA_WITH_SHA256, der(0x03, Buffer.from([0]), signature));
  const b64 = cert.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return {
    key: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    cert: `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----`,
  };
}
