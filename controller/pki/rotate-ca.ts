/**
 * `npx tsx controller/pki/rotate-ca.ts --data-dir DIR prepare|switch|finish`: replaces the
 * controller CA in three steps, each followed by a controller restart (docs/operator-guide.md,
 * "Replacing the CA", says when to take the next). Run it with the controller stopped: it
 * opens the embedded store itself.
 *
 * - prepare: makes the new CA and adds it to the trusted bundle; the old one still issues.
 *   Agents receive the bundle with their next certificate (at most 20 days: RENEW_AT).
 * - switch: the new CA issues (the controller's own certificate first, at restart); the old
 *   one stays trusted, so agents' certificates from it keep working until renewed.
 * - finish: the old CA is dropped (its key is gone with it).
 */
import { resolve } from 'node:path';
import pino from 'pino';
import { CA_LIFETIME_MS, caCertHash } from '../../protocol/pki.ts';
import { EmbeddedStore } from '../store/embedded-store.ts';
import { CA_ROW, type CaRow } from './ca.ts';
import { selfSignedCa } from './x509.ts';

type Row = CaRow & { next?: { cert: string; key: string } };

function fail(msg: string): never {
  process.stderr.write(`rotate-ca: ${msg}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
const i = args.indexOf('--data-dir');
const dir = i >= 0 ? args[i + 1] : undefined;
const step = args.find((a, k) => !a.startsWith('--') && k !== i + 1);
if (!dir || !step || !['prepare', 'switch', 'finish'].includes(step)) fail('usage: rotate-ca.ts --data-dir DIR prepare|switch|finish');

const repo = await EmbeddedStore.open(resolve(dir), { sync: true, log: pino({ level: 'warn' }) });
try {
  await repo.transaction(async (tx) => {
    const row = await tx.get<Row>('pki', CA_ROW);
    if (!row) fail(`no CA in ${dir}: start the controller once first`);
    if (step === 'prepare') {
      if (row.next) fail(`a new CA is already prepared (${caCertHash(row.next.cert)}): run switch`);
      const made = await selfSignedCa('Hostkeeper CA', Date.now(), CA_LIFETIME_MS);
      await tx.update<Row>('pki', CA_ROW, { next: { cert: made.cert, key: made.key.privateKey }, trusted: [...row.trusted, made.cert] });
      process.stdout.write(`prepared the new CA ${caCertHash(made.cert)}; it is trusted now, the old one (${caCertHash(row.cert)}) still issues\n`);
    } else if (step === 'switch') {
      if (!row.next) fail('no new CA prepared: run prepare first');
      const trusted = [...row.trusted.filter((p) => p !== row.next!.cert), row.cert];
      await tx.update<Row>('pki', CA_ROW, { cert: row.next.cert, key: row.next.key, trusted, next: undefined });
      process.stdout.write(`the new CA ${caCertHash(row.next.cert)} issues now; the old one stays trusted until finish. New bootstrap tokens carry the new hash.\n`);
    } else {
      if (row.next) fail('a new CA is prepared but not switched to: run switch first');
      await tx.update<Row>('pki', CA_ROW, { trusted: [] });
      process.stdout.write(`only ${caCertHash(row.cert)} is trusted now\n`);
    }
  });
} finally {
  await repo.close();
}
