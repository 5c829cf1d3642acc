/**
 * Running host tools (virsh, qemu-img, libvirtd) with execFile: never a shell, always a
 * timeout, `LC_ALL=C` so the output we parse is not translated. Injected as a
 * CommandRunner so tests can play a host with tools missing or broken.
 */
import { execFile } from 'node:child_process';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export type CommandRunner = (file: string, args: string[], opts?: { timeoutMs?: number }) => Promise<CommandResult>;

/** Why a command failed; `code` is 'ENOENT' when the tool is not installed. */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly args: string[],
    readonly code: string | number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

export const execRunner: CommandRunner = (file, args, opts = {}) =>
  new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        maxBuffer: 32 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C' },
        windowsHide: true,
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: string | number | null };
        const why = e.code === 'ENOENT' ? 'not installed' : e.killed ? 'timed out' : (stderr.trim().split('\n').pop() ?? e.message);
        reject(new CommandError(`${file} ${args.join(' ')}: ${why}`, file, args, e.code ?? null, stdout, stderr));
      },
    );
  });
