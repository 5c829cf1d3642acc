/**
 * One SSH key pair per cluster for live migration (qemu+ssh between its hosts): made on first
 * use in `<data dir>/migration-keys/<cluster uuid>/id_ed25519` (private key 0600, dir 0700).
 * The playbook's kvm role puts the private half on every libvirt host of the cluster and the
 * public half in root's authorized_keys restricted to reaching libvirtd
 * (`restrict,command="hostkeeper-migration-shell"`), so a host can migrate to the other hosts
 * of its cluster and to nothing else; a host of another cluster holds another key.
 *
 * Why per cluster and not per host: migrations stay within a cluster (the allocator only
 * picks hosts of the VM's cluster), and one key per cluster needs no per-pair bookkeeping.
 * The key is a store row (kind 'pki', see clusterMigrationKey), so controllers sharing a
 * database deploy the same one. A host leaving a cluster loses the key at DeleteHost
 * (deployer.stopAgent). Rotation: delete the row and the directory, then redeploy the hosts.
 */
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../store/repository.ts';
import { keyFromStore, writeKeyFile } from './keys.ts';
import { newKeyPair, publicKeyOf } from './ssh-keypair.ts';

export interface MigrationKey {
  privateKeyPath: string;
  /** `ssh-ed25519 AAAA... hostkeeper-migration-<cluster uuid>` (the comment marks our line in authorized_keys). */
  publicKey: string;
}

const UUID_RE = /^[0-9a-f]{32}$/;
const pending = new Map<string, Promise<MigrationKey>>();

/**
 * The cluster's key, made once; concurrent deploys of one cluster share the making. With a
 * store (`repo`) the key is its row `migration-key-<cluster uuid>` (kind 'pki'), so that every
 * controller on one database deploys the same key; the file is a copy for the playbook.
 */
export function clusterMigrationKey(dataDir: string, clusterUuid: string, repo?: Repository): Promise<MigrationKey> {
  if (!UUID_RE.test(clusterUuid)) return Promise.reject(new Error(`not a cluster uuid: ${clusterUuid}`));
  const dir = join(dataDir, 'migration-keys', clusterUuid);
  let p = pending.get(dir);
  if (!p) {
    p = loadOrCreate(dir, clusterUuid, repo);
    pending.set(dir, p);
    p.catch(() => pending.delete(dir));
  }
  return p;
}

async function loadOrCreate(dir: string, clusterUuid: string, repo?: Repository): Promise<MigrationKey> {
  const privateKeyPath = join(dir, 'id_ed25519');
  const comment = `hostkeeper-migration-${clusterUuid}`;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const fromFile = async () => {
    try {
      const text = await readFile(privateKeyPath, 'utf8');
      publicKeyOf(text, privateKeyPath, comment);
      return text;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  };
  const text = repo
    ? await keyFromStore(repo, `migration-key-${clusterUuid}`, fromFile, () => newKeyPair(comment).private)
    : (await fromFile()) ?? newKeyPair(comment).private;
  await writeKeyFile(privateKeyPath, text);
  // The public half is derived from the private key, never read from a file that could differ.
  return { privateKeyPath, publicKey: publicKeyOf(text, privateKeyPath, comment) };
}
