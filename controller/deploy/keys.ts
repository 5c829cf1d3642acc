/**
 * The controller's own SSH key pair: ed25519, OpenSSH format. It is the one credential the
 * controller keeps for a host added with a password (the password itself is used once and
 * dropped).
 *
 * The private key is a store row (kind 'pki', uuid 'ssh-key'), like the CA, so that every
 * controller sharing a database reaches every host (issue 12); it is also written to
 * `<data dir>/ssh/id_ed25519` (0600, dir 0700), the file ssh and ansible-playbook read. A
 * store without the row adopts the key file already in the data dir (a controller from before
 * the key moved to the store), else a new pair is made; when two controllers make one at once,
 * the transaction that inserts first wins and the other takes its key.
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository, Row } from '../store/repository.ts';
import { newKeyPair, publicKeyOf } from './ssh-keypair.ts';

export interface ControllerKey {
  privateKeyPath: string;
  privateKey: string;
  publicKey: string;
}

/** A private key kept in the store (kind 'pki'). */
export interface KeyRow extends Row {
  privateKey: string;
  createDate: number;
}

const COMMENT = 'hostkeeper-controller';
export const SSH_KEY_ROW = 'ssh-key';

/**
 * The key in the store row `uuid`, made (or adopted from `existing`) when absent; the first
 * insert wins when several controllers race.
 */
export async function keyFromStore(repo: Repository, uuid: string, existing: () => Promise<string | undefined>, make: () => string): Promise<string> {
  const have = await repo.get<KeyRow>('pki', uuid);
  if (have) return have.privateKey;
  const candidate = (await existing()) ?? make();
  return repo.transaction(async (tx) => {
    const there = await tx.get<KeyRow>('pki', uuid);
    if (there) return there.privateKey;
    await tx.insert<KeyRow>('pki', { uuid, privateKey: candidate, createDate: Date.now() });
    return candidate;
  });
}

/** Writes `text` to `path` (0600) unless it already holds it; aside and renamed, never half a key. */
export async function writeKeyFile(path: string, text: string): Promise<void> {
  const now = await readFile(path, 'utf8').catch(() => undefined);
  if (now === text) {
    await chmod(path, 0o600);
    return;
  }
  await writeFile(`${path}.tmp`, text, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

async function readKeyFile(path: string): Promise<string | undefined> {
  try {
    const text = await readFile(path, 'utf8');
    publicKeyOf(text, path, COMMENT); // an unusable file is an error, not something to replace silently
    return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function loadOrCreateKey(dataDir: string, repo?: Repository): Promise<ControllerKey> {
  const dir = join(dataDir, 'ssh');
  const privateKeyPath = join(dir, 'id_ed25519');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const privateKey = repo
    ? await keyFromStore(repo, SSH_KEY_ROW, () => readKeyFile(privateKeyPath), () => newKeyPair(COMMENT).private)
    : (await readKeyFile(privateKeyPath)) ?? newKeyPair(COMMENT).private;
  // The public half is derived, never trusted from the .pub file: losing that file must
  // not lead to a new pair (and to no access to every host deployed with the old one).
  const publicKey = publicKeyOf(privateKey, repo ? `the store's ${SSH_KEY_ROW} row` : privateKeyPath, COMMENT);
  await writeKeyFile(privateKeyPath, privateKey);
  await writeFile(`${privateKeyPath}.pub`, `${publicKey}\n`, { mode: 0o644 });
  return { privateKeyPath, privateKey, publicKey };
}
