/**
 * `npx tsx controller/pki/rotate-ca.ts [--data-dir DIR | --database-url URL] start|status|prepare|switch|finish`:
 * replaces the controller CA (docs/operator-guide.md, "Replacing the CA").
 *
 * Online, the usual way (controller/pki/ca.ts, Pki.startRotation):
 * - start: makes the new CA and trusts it at once; from then on the controllers move the
 *   replacement on by themselves at their housekeeping tick: the new CA issues once every
 *   Connected host holds a certificate carrying it, and the old one is dropped once every
 *   Connected host holds a certificate from the new one. Agents move at their usual renewal.
 *   On PostgreSQL (`--database-url`, the controllers' HOSTKEEPER_DATABASE_URL) run it while
 *   they run: they adopt the new CA at their next tick (within 10 minutes). On the embedded
 *   store the controller holds the store while it runs: stop it, run `start`, start it; the
 *   rest needs no other restart.
 * - status: where a replacement stands, and which Connected hosts it waits for.
 *
 * By hand, each step followed by a controller restart (the older way; it also works with the
 * controller stopped on the embedded store, and lets you choose when each step happens):
 * - prepare: makes the new CA and adds it to the trusted bundle; the old one still issues.
 *   Agents receive the bundle with their next certificate (at most 20 days: RENEW_AT).
 * - switch: the new CA issues (the controller's own certificate first, at restart); the old
 *   one stays trusted, so agents' certificates from it keep working until renewed.
 * - finish: the old CA is dropped (its key is gone with it).
 */
import { resolve } from 'node:path';
import pino from 'pino';
import { CA_LIFETIME_MS, caCertHash } from '../../protocol/pki.ts';
import { openStore } from '../store/open.ts';
import { CA_ROW, type CaRow, Pki } from './ca.ts';
import { selfSignedCa } from './x509.ts';

function fail(msg: string): never {
  process.stderr.write(`rotate-ca: ${msg}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const dir = opt('--data-dir');
const databaseUrl = opt('--database-url') ?? (dir ? undefined : process.env.HOSTKEEPER_DATABASE_URL);
const step = args.find((a, k) => !a.startsWith('--') && !['--data-dir', '--database-url'].includes(args[k - 1] ?? ''));
const STEPS = ['start', 'status', 'prepare', 'switch', 'finish'];
if ((!dir && !databaseUrl) || !step || !STEPS.includes(step)) {
  fail('usage: rotate-ca.ts [--data-dir DIR | --database-url URL] start|status|prepare|switch|finish');
}

const log = pino({ level: 'warn' });
const repo = await openStore({ dataDir: resolve(dir ?? '.'), databaseUrl, sync: true, log });
const where = databaseUrl ? 'the database' : dir;
try {
  if (step === 'start' || step === 'status') {
    if (!(await repo.get<CaRow>('pki', CA_ROW))) fail(`no CA in ${where}: start the controller once first`);
    const pki = await Pki.open(repo, log);
    const s = step === 'start' ? await pki.startRotation().catch((e: Error & { details?: string }) => fail(e.details ?? e.message)) : await pki.rotationStatus();
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
    if (step === 'start') {
      process.stdout.write(`the new CA ${s.next} is trusted now; ${s.issuing} issues until every connected host has renewed (${s.waiting} to go). `
        + `${databaseUrl ? 'Running controllers adopt it within 10 minutes.' : 'Start the controller: it moves the replacement on by itself.'} New bootstrap tokens carry the new hash once it issues.\n`);
    }
  } else {
    await repo.transaction(async (tx) => {
      const row = await tx.get<CaRow>('pki', CA_ROW);
      if (!row) fail(`no CA in ${where}: start the controller once first`);
      if (row.rotation) fail(`an online replacement is under way (phase ${row.rotation.phase}): see status; the controllers finish it by themselves`);
      if (step === 'prepare') {
        if (row.next) fail(`a new CA is already prepared (${caCertHash(row.next.cert)}): run switch`);
        const made = await selfSignedCa('Hostkeeper CA', Date.now(), CA_LIFETIME_MS);
        await tx.update<CaRow>('pki', CA_ROW, { next: { cert: made.cert, key: made.key.privateKey }, trusted: [...row.trusted, made.cert] });
        process.stdout.write(`prepared the new CA ${caCertHash(made.cert)}; it is trusted now, the old one (${caCertHash(row.cert)}) still issues\n`);
      } else if (step === 'switch') {
        if (!row.next) fail('no new CA prepared: run prepare first');
        const trusted = [...row.trusted.filter((p) => p !== row.next!.cert), row.cert];
        await tx.update<CaRow>('pki', CA_ROW, { cert: row.next.cert, key: row.next.key, trusted, next: undefined });
        process.stdout.write(`the new CA ${caCertHash(row.next.cert)} issues now; the old one stays trusted until finish. New bootstrap tokens carry the new hash.\n`);
      } else {
        if (row.next) fail('a new CA is prepared but not switched to: run switch first');
        await tx.update<CaRow>('pki', CA_ROW, { trusted: [] });
        process.stdout.write(`only ${caCertHash(row.cert)} is trusted now\n`);
      }
    });
  }
} finally {
  await repo.close();
}
