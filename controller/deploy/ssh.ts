/**
 * SSH to a host being added (ssh2, in process: the password never reaches a command line,
 * an environment or a file). One connection answers three questions in words an admin can
 * act on: can we reach the host, is this the host we saw before (its host key), and may
 * this user act as root. Then it installs the controller's public key, after which the
 * password is dropped and everything else (ansible, later checks) uses the key.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Client, type ClientChannel } from 'ssh2';
import { plainIPv4 } from '../../protocol/values.ts';

export type SshFailure = 'unreachable' | 'port-closed' | 'auth' | 'host-key-changed' | 'timeout' | 'no-root' | 'command';

export class SshError extends Error {
  constructor(readonly kind: SshFailure, message: string) {
    super(message);
  }
}

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  /** Exactly one of password and privateKey. */
  password?: string;
  privateKey?: string;
  /** `<type> <base64>` recorded at the first connection; a different key is refused. */
  knownHostKey?: string;
  /** TCP connect + SSH handshake + auth (default 10 s). */
  timeoutMs?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `ssh-ed25519 AAAA...` from the key blob the server sent (its first field is the type). */
export function hostKeyLine(blob: Buffer): string {
  const len = blob.readUInt32BE(0);
  return `${blob.subarray(4, 4 + len).toString('latin1')} ${blob.toString('base64')}`;
}

/** A line for an OpenSSH known_hosts file. */
export function knownHostsLine(host: string, port: number, key: string): string {
  return `${port === 22 ? host : `[${host}]:${port}`} ${key}`;
}

function socketError(err: NodeJS.ErrnoException, t: SshTarget): SshError {
  const where = `${t.host}:${t.port}`;
  switch (err.code) {
    case 'ECONNREFUSED':
      return new SshError('port-closed', `SSH port ${t.port} is closed on ${t.host} (connection refused): is sshd running, and is sshPort right?`);
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return new SshError('unreachable', `host ${t.host} is unreachable (${err.code}): check the address and the network`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new SshError('unreachable', `host name ${t.host} does not resolve (${err.code})`);
    case 'ETIMEDOUT':
      return new SshError('unreachable', `no answer from ${where} within the SSH timeout: the host is down or a firewall drops SSH`);
    default:
      return new SshError('unreachable', `cannot reach ${where}: ${err.message}`);
  }
}

/** `sh -c '<script>'` as one command line (optionally through sudo), the script single-quoted. */
export function shCommand(script: string, sudo = false): string {
  return `${sudo ? 'sudo -n ' : ''}sh -c '${script.replace(/'/g, `'"'"'`)}'`;
}

/** One open SSH session. */
export class SshSession {
  private constructor(private readonly client: Client, readonly hostKey: string, readonly localAddress: string, readonly username: string) {}

  /**
   * Connects and authenticates. Refuses a host key that differs from `knownHostKey` before
   * any credential is sent.
   */
  static open(t: SshTarget): Promise<SshSession> {
    const timeoutMs = t.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const client = new Client();
      let seenKey = '';
      let settled = false;
      let sock: Socket | undefined;
      const fail = (e: SshError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.end();
        sock?.destroy();
        reject(e);
      };
      const timer = setTimeout(() => {
        fail(sock?.remoteAddress === undefined || !seenKey
          ? new SshError('unreachable', `no SSH answer from ${t.host}:${t.port} within ${timeoutMs / 1000} s: the host is down, the address is wrong or a firewall drops SSH`)
          : new SshError('timeout', `SSH login to ${t.host}:${t.port} did not finish within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      sock = netConnect({ host: t.host, port: t.port });
      sock.once('error', (err: NodeJS.ErrnoException) => fail(socketError(err, t)));
      sock.once('connect', () => {
        client.connect({
          sock,
          username: t.username,
          password: t.password,
          privateKey: t.privateKey,
          readyTimeout: timeoutMs,
          // No keyboard-interactive prompts or agent: exactly the credential given.
          tryKeyboard: false,
          hostVerifier: (key: Buffer) => {
            seenKey = hostKeyLine(key);
            if (t.knownHostKey && t.knownHostKey !== seenKey) {
              fail(new SshError('host-key-changed',
                `the SSH host key of ${t.host} changed since this host was added (recorded ${t.knownHostKey.slice(0, 40)}..., now ${seenKey.slice(0, 40)}...): ` +
                'if the host was reinstalled, delete it and add it again; otherwise someone may be intercepting the connection'));
              return false;
            }
            return true;
          },
        });
      });
      client.once('ready', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(new SshSession(client, seenKey, plainIPv4(sock!.localAddress), t.username));
      });
      // `on`, not `once`: a second error after the first (or after ready) must not go unhandled.
      client.on('error', (err: Error & { level?: string }) => {
        if (err.level === 'client-authentication') {
          fail(new SshError('auth', t.password !== undefined
            ? `wrong username or password for ${t.username}@${t.host} (or the host refuses password logins for ${t.username}: check PermitRootLogin/PasswordAuthentication in its sshd_config)`
            : `${t.host} refused the controller's SSH key for ${t.username}: the key was removed from ${t.username}'s authorized_keys; delete the host and add it again with its password`));
        } else if (err.level === 'client-timeout') {
          fail(new SshError('timeout', `SSH handshake with ${t.host}:${t.port} timed out: is that port an SSH server?`));
        } else {
          fail(new SshError('unreachable', `SSH to ${t.host}:${t.port} failed: ${err.message}`));
        }
      });
    });
  }

  /** Runs a command; `stdin` is written to it and closed. Resolves with its exit code and output. */
  exec(command: string, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err: Error | undefined, ch: ClientChannel) => {
        if (err) return reject(new SshError('command', `cannot run a command over SSH: ${err.message}`));
        let stdout = '';
        let stderr = '';
        const timer = setTimeout(() => {
          ch.close();
          reject(new SshError('command', `command over SSH did not finish within ${timeoutMs / 1000} s`));
        }, timeoutMs);
        ch.on('data', (d: Buffer) => { stdout += d.toString(); });
        ch.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
        ch.on('close', (code: number | null) => {
          clearTimeout(timer);
          resolve({ code: code ?? -1, stdout, stderr });
        });
        ch.end(opts.stdin ?? '');
      });
    });
  }

  /**
   * Checks the user may act as root: root itself, or passwordless sudo (the password is not
   * kept, so sudo with a password cannot be used later). Returns whether ansible must become.
   */
  async checkRoot(): Promise<{ become: boolean }> {
    const r = await this.exec('id -u && (command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && echo sudo-ok || true)', { timeoutMs: 15_000 });
    const [uid, sudo] = r.stdout.trim().split('\n');
    if (uid === '0') return { become: false };
    if (sudo === 'sudo-ok') return { become: true };
    throw new SshError('no-root', `${this.username} is not root on the host and cannot use sudo without a password: add the host as root, or give ${this.username} passwordless sudo`);
  }

  /**
   * Adds `publicKey` to the user's ~/.ssh/authorized_keys once (700/600 modes, SELinux
   * labels restored where restorecon exists). The key travels on stdin, not in the command.
   */
  async installKey(publicKey: string): Promise<void> {
    const script = [
      'set -e', 'umask 077', 'read -r key', 'd="$HOME/.ssh"', 'f="$d/authorized_keys"',
      'mkdir -p "$d"', 'chmod 700 "$d"', 'touch "$f"', 'chmod 600 "$f"',
      'grep -qxF "$key" "$f" || printf "%s\\n" "$key" >> "$f"',
      'if command -v restorecon >/dev/null 2>&1; then restorecon -R "$d" >/dev/null 2>&1 || true; fi',
    ].join('\n');
    const r = await this.exec(shCommand(script), { stdin: `${publicKey.trim()}\n`, timeoutMs: 15_000 });
    if (r.code !== 0) throw new SshError('command', `installing the controller's SSH key in ~${this.username}/.ssh/authorized_keys failed: ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  }

  close(): void {
    this.client.end();
  }
}
