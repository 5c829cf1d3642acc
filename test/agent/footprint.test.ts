/**
 * What the agent does without its heavy libraries (agent/README.md "Footprint"): the
 * provisional certificate written with node:crypto (agent/self-signed.ts), the facts schedule
 * evaluated on local time without Intl (agent/refresher.ts), and systeminformation loaded as
 * three of its modules (agent/facts.ts). Each must give what the library route gave.
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadSystemInformation } from '../../agent/facts.ts';
import { nextCronTime, parseCron } from '../../agent/refresher.ts';
import { selfSignedServer } from '../../agent/self-signed.ts';

describe('the provisional self-signed certificate (node:crypto)', () => {
  it('is a v3 ECDSA P-256 leaf for its key, self-signed, with the fields @peculiar/x509 wrote', async () => {
    const now = Date.UTC(2026, 10, 28, 12, 0, 0);
    const { key, cert } = await selfSignedServer('hostkeeper-agent-provisional', now, 10 * 365 * 24 * 3600_000);
    const c = new X509Certificate(cert);
    expect(c.subject).toBe('CN=hostkeeper-agent-provisional');
    expect(c.issuer).toBe(c.subject);
    expect(c.checkPrivateKey(createPrivateKey(key))).toBe(true);
    expect(c.verify(c.publicKey)).toBe(true);
    expect(c.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
    expect(c.ca).toBe(false);
    expect(c.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']); // extKeyUsage: serverAuth, clientAuth
    expect(new Date(c.validFrom).getTime()).toBe(now - 5 * 60_000);
    expect(new Date(c.validTo).getTime()).toBe(now + 10 * 365 * 24 * 3600_000);
    expect(BigInt(`0x${c.serialNumber}`)).toBeGreaterThan(0n);
    expect(key).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('has the same extensions as before, as openssl reads them', async () => {
    const { cert } = await selfSignedServer('hostkeeper-agent-provisional', Date.now(), 3600_000);
    const r = spawnSync('openssl', ['x509', '-noout', '-text'], { input: cert, encoding: 'utf8' });
    if (r.error) return; // no openssl here: the checks above stand
    expect(r.stdout).toMatch(/Version: 3 \(0x2\)/);
    expect(r.stdout).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(r.stdout).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(r.stdout).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    expect(r.stdout).toMatch(/X509v3 Extended Key Usage: \s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/);
  });

  it('writes times after 2049 as GeneralizedTime', async () => {
    const { cert } = await selfSignedServer('x', Date.UTC(2049, 11, 31), 365 * 24 * 3600_000);
    expect(new Date(new X509Certificate(cert).validTo).getUTCFullYear()).toBe(2050);
  });
});

describe('the facts schedule on local time (no Intl)', () => {
  it('fires when protocol/cron.ts says, in a zone with DST changes', async () => {
    const { nextCronTime: inZone } = await import('../../protocol/cron.ts');
    const saved = process.env.TZ;
    try {
      for (const zone of ['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'UTC']) {
        process.env.TZ = zone; // Node resets its zone cache on this assignment
        for (const expr of ['*/5 * * * *', '30 2 * * *', '0 2 * * *', '15 1 * * 0', '0 0 29 2 *']) {
          const f = parseCron(expr);
          // Every hour across the 2026 spring and autumn changes of both hemispheres.
          for (const [mo, d] of [[2, 27], [3, 3], [9, 3], [9, 24], [10, 0]] as const) {
            for (let h = 0; h < 72; h++) {
              const t = Date.UTC(2026, mo, d, h, 7, 13);
              expect(nextCronTime(f, t), `${zone} ${expr} after ${new Date(t).toISOString()}`).toBe(inZone(f, t, zone));
            }
          }
        }
      }
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });
});

describe('systeminformation, three of its modules', () => {
  it('are the functions its index exports', async () => {
    const parts = await loadSystemInformation();
    const whole = (await import('systeminformation')).default;
    expect(await parts.osInfo()).toEqual(await whole.osInfo());
    expect((await parts.mem()).total).toBe((await whole.mem()).total);
    // Not the speeds: a real CPU's current MHz moves between two reads.
    const pick = ({ manufacturer, brand, cores, physicalCores, processors }: Awaited<ReturnType<typeof parts.cpu>>) => ({ manufacturer, brand, cores, physicalCores, processors });
    expect(pick(await parts.cpu())).toEqual(pick(await whole.cpu()));
  }, 30_000);
});
