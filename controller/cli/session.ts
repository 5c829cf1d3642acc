/**
 * The CLI's login session: one file holding the session uuid on one line, so scripts can
 * also use it (`curl -H "Authorization: OAuth $(cat ~/.hostkeeper/session)"`).
 * `~/.hostkeeper/session` (dir 0700, file 0600: the uuid is a bearer credential), or
 * `HOSTKEEPER_SESSION_FILE`. `HOME` is read from the given environment, not the process,
 * so tests can point it anywhere.
 */
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export type Env = Record<string, string | undefined>;

export function sessionPath(env: Env): string {
  if (env.HOSTKEEPER_SESSION_FILE) return env.HOSTKEEPER_SESSION_FILE;
  return join(env.HOME || homedir(), '.hostkeeper', 'session');
}

/** The stored session uuid, or undefined when there is none (missing or empty file). */
export async function readSession(env: Env): Promise<string | undefined> {
  try {
    const text = (await readFile(sessionPath(env), 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function writeSession(env: Env, uuid: string): Promise<string> {
  const file = sessionPath(env);
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Only tighten the directory we own; an override may point into a shared directory.
  if (!env.HOSTKEEPER_SESSION_FILE) await chmod(dir, 0o700);
  await writeFile(file, `${uuid}\n`, { mode: 0o600 });
  // `mode` applies only when the file is created: an existing file keeps its old mode.
  await chmod(file, 0o600);
  return file;
}

export async function removeSession(env: Env): Promise<void> {
  await rm(sessionPath(env), { force: true });
}
