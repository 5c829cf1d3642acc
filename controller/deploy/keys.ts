/**
 * The controller's own SSH key pair: made once (ed25519, OpenSSH format) in
 * `<data dir>/ssh/`, private key 0600. It is the one credential the controller keeps for a
 * host added with a password (the password itself is used once and dropped).
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { newKeyPair, publicKeyOf } from './ssh-keypair.ts';

export interface ControllerKey {
  privateKeyPath: string;
  privateKey: string;
  publicKey: string;
}

export async function loadOrCreateKey(dataDir: string): Promise<ControllerKey> {
  const dir = join(dataDir, 'ssh');
  const privateKeyPath = join(dir, 'id_ed25519');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const privateKey = await readFile(privateKeyPath, 'utf8');
    await chmod(privateKeyPath, 0o600);
    // The public half is derived, never trusted from the .pub file: losing that file must
    // not lead to a new pair (and to no access to every host deployed with the old one).
    const publicKey = publicKeyOf(privateKey, privateKeyPath, 'hostkeeper-controller');
    await writeFile(`${privateKeyPath}.pub`, `${publicKey}\n`, { mode: 0o644 });
    return { privateKeyPath, privateKey, publicKey };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const pair = newKeyPair('hostkeeper-controller');
  // Written aside and renamed: a crash never leaves half a key that a later start would trust.
  await writeFile(`${privateKeyPath}.pub.tmp`, `${pair.public}\n`, { mode: 0o644 });
  await writeFile(`${privateKeyPath}.tmp`, pair.private, { mode: 0o600 });
  await rename(`${privateKeyPath}.pub.tmp`, `${privateKeyPath}.pub`);
  await rename(`${privateKeyPath}.tmp`, privateKeyPath);
  return { privateKeyPath, privateKey: pair.private, publicKey: pair.public };
}
