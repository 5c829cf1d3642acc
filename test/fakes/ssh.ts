/**
 * Fake SSH for in-process controller tests: no network, scripted answers. The real SSH path
 * is tested against real sshd in test hosts (test/e2e).
 */
import type { SshLike } from '../../controller/deploy/deployer.ts';
import { type SshFailure, SshError, type SshTarget } from '../../controller/deploy/ssh.ts';

/** Every login fails as `kind` would (default: wrong password). */
export function refusingSsh(kind: SshFailure = 'auth'): (t: SshTarget) => Promise<SshLike> {
  return async (t) => {
    throw new SshError(kind, kind === 'auth' ? `wrong username or password for ${t.username}@${t.host}` : `fake ssh refuses ${t.host}: ${kind}`);
  };
}

/** Logins that succeed; records what was asked of them. */
export class FakeSsh {
  readonly targets: SshTarget[] = [];
  readonly commands: string[] = [];
  readonly installedKeys: string[] = [];
  constructor(private readonly answer: (cmd: string) => { code: number; stdout: string; stderr: string } = () => ({ code: 0, stdout: '', stderr: '' }),
    readonly hostKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake') {}

  open = async (t: SshTarget): Promise<SshLike> => {
    this.targets.push(t);
    if (t.knownHostKey && t.knownHostKey !== this.hostKey) throw new SshError('host-key-changed', `the SSH host key of ${t.host} changed`);
    return {
      hostKey: this.hostKey,
      localAddress: '127.0.0.1',
      exec: async (cmd: string) => {
        this.commands.push(cmd);
        return this.answer(cmd);
      },
      checkRoot: async () => ({ become: t.username !== 'root' }),
      installKey: async (k: string) => {
        this.installedKeys.push(k);
      },
      close: () => undefined,
    };
  };
}
