/**
 * Ed25519 key pairs in OpenSSH format, for the controller's own key (keys.ts) and the
 * clusters' migration keys (migration-keys.ts).
 *
 * ssh2 1.17's generateKeyPairSync drops a leading zero byte of the ed25519 public key, so
 * about one pair in 256 comes out with a 31-byte key that ssh2's own parser (and OpenSSH)
 * rejects as "Malformed OpenSSH private key": 19 of 5,000 pairs here. A controller that drew
 * one could not start again. A pair is therefore kept only once it parses back; drawing again
 * is cheaper than writing the OpenSSH format ourselves.
 */
import ssh2 from 'ssh2';

export interface KeyPair {
  private: string;
  /** `ssh-ed25519 AAAA... <comment>`, no newline. */
  public: string;
}

type Generate = (comment: string) => { private: string; public: string };
const sshGenerate: Generate = (comment) => ssh2.utils.generateKeyPairSync('ed25519', { comment });

/** The public half, derived from the private key (never read from a file that could differ). */
export function publicKeyOf(privateKey: string, where: string, comment: string): string {
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) {
    throw new Error(`${where} is not a usable private key: ${parsed instanceof Error ? parsed.message : 'several keys'}`);
  }
  return `${parsed.type} ${parsed.getPublicSSH().toString('base64')} ${comment}`;
}

/** A new pair whose private key parses back; at most `tries` draws (the chance of 8 bad ones is 2^-64). */
export function newKeyPair(comment: string, generate: Generate = sshGenerate, tries = 8): KeyPair {
  for (let i = 0; i < tries; i++) {
    const pair = generate(comment);
    try {
      return { private: pair.private, public: publicKeyOf(pair.private, 'a new key', comment) };
    } catch {
      // a malformed draw (see above): draw again
    }
  }
  throw new Error(`no usable ed25519 key pair in ${tries} draws`);
}
