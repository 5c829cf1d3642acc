/**
 * SSH key pairs: a malformed draw from ssh2 is never kept, and the keys on disk are read back
 * with their public half derived from the private key.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadOrCreateKey } from '../../controller/deploy/keys.ts';
import { clusterMigrationKey } from '../../controller/deploy/migration-keys.ts';
import { newKeyPair, publicKeyOf } from '../../controller/deploy/ssh-keypair.ts';
import { tempDir } from '../helpers.ts';

// A real ssh2 1.17 draw with a 31-byte public key (its leading zero byte dropped).
const MALFORMED = [
  '-----BEGIN OPENSSH PRIVATE KEY-----',
  'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMgAAAAtz',
  'c2gtZWQyNTUxOQAAAB+feYZSZezOnLYXWHkV/LPH0pFM9nmCwQ5VRqztSEqzAAAA',
  'mLtLUQm7S1EJAAAAC3NzaC1lZDI1NTE5AAAAH595hlJl7M6cthdYeRX8s8fSkUz2',
  'eYLBDlVGrO1ISrMAAAA/SG++nKOi+ARrgxXsGsd9w4NyjoRmGWKK44ov3LdwD1mf',
  'eYZSZezOnLYXWHkV/LPH0pFM9nmCwQ5VRqztSEqzAAAAFWhvc3RrZWVwZXItY29u',
  'dHJvbGxlcgEC',
  '-----END OPENSSH PRIVATE KEY-----',
  '',
].join('\n');

describe('newKeyPair', () => {
  it('draws again when a pair does not parse back', () => {
    const good = newKeyPair('c');
    const draws = [{ private: MALFORMED, public: 'x' }, { private: MALFORMED, public: 'x' }, good];
    let n = 0;
    const pair = newKeyPair('c', () => draws[n++]);
    expect(n).toBe(3);
    expect(pair.private).toBe(good.private);
    expect(pair.public).toBe(publicKeyOf(good.private, 'k', 'c'));
  });

  it('gives up with a clear error after its draws', () => {
    expect(() => newKeyPair('c', () => ({ private: MALFORMED, public: 'x' }), 3)).toThrow(/no usable ed25519 key pair in 3 draws/);
  });

  it('names the file of an unusable key', () => {
    expect(() => publicKeyOf(MALFORMED, '/d/ssh/id_ed25519', 'c')).toThrow(/\/d\/ssh\/id_ed25519 is not a usable private key: Malformed/);
  });

  it('500 real draws all parse back', () => {
    // ~86% of 500 raw ssh2 draws would include a malformed one; none may come through.
    for (let i = 0; i < 500; i++) expect(publicKeyOf(newKeyPair('c').private, 'k', 'c')).toMatch(/^ssh-ed25519 \S+ c$/);
  });
});

describe('keys on disk', () => {
  it('the controller key is made once, 0600, and its public half derived again when the .pub file is lost', async () => {
    const dir = await tempDir();
    const first = await loadOrCreateKey(dir);
    expect((await stat(first.privateKeyPath)).mode & 0o777).toBe(0o600);
    await writeFile(`${first.privateKeyPath}.pub`, 'ssh-ed25519 AAAAforged x\n');
    const again = await loadOrCreateKey(dir);
    expect(again.publicKey).toBe(first.publicKey);
    expect((await readFile(`${first.privateKeyPath}.pub`, 'utf8')).trim()).toBe(first.publicKey);
  });

  it('a cluster migration key is made once per cluster', async () => {
    const dir = await tempDir();
    const a = await clusterMigrationKey(dir, 'a'.repeat(32));
    expect(a.publicKey).toMatch(new RegExp(`^ssh-ed25519 \\S+ hostkeeper-migration-${'a'.repeat(32)}$`));
    expect(a.privateKeyPath).toBe(join(dir, 'migration-keys', 'a'.repeat(32), 'id_ed25519'));
    const b = await clusterMigrationKey(dir, 'b'.repeat(32));
    expect(b.publicKey).not.toBe(a.publicKey);
  });
});

describe('keys in the store (several controllers on one database)', () => {
  it('two controllers with their own data dirs get the same controller key and migration key; a key file from before is adopted', async () => {
    const { EmbeddedStore } = await import('../../controller/store/embedded-store.ts');
    const repo = await EmbeddedStore.open(await tempDir(), { sync: false });
    // The first controller ran before keys moved to the store: its file is adopted.
    const before = await loadOrCreateKey(await tempDir());
    const dirA = join(before.privateKeyPath, '..', '..');
    const a = await loadOrCreateKey(dirA, repo);
    expect(a.publicKey).toBe(before.publicKey);
    const b = await loadOrCreateKey(await tempDir(), repo);
    expect(b.publicKey).toBe(a.publicKey);
    expect(await readFile(b.privateKeyPath, 'utf8')).toBe(a.privateKey);
    expect((await stat(b.privateKeyPath)).mode & 0o777).toBe(0o600);
    const cluster = 'c'.repeat(32);
    const [ma, mb] = await Promise.all([clusterMigrationKey(await tempDir(), cluster, repo), clusterMigrationKey(await tempDir(), cluster, repo)]);
    expect(mb.publicKey).toBe(ma.publicKey);
    await repo.close();
  });
});
