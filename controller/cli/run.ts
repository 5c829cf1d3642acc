/**
 * `runCli`: the whole CLI as one function of argv and a small io record, so tests call it
 * in-process against a fake controller. main.ts only wires it to the process.
 *
 * Exit codes: 0 success, 1 the controller said no or could not be reached, 2 a usage
 * mistake (nothing was sent).
 */
import axios, { type AxiosError, type AxiosResponse } from 'axios';
import { backoffDelay } from '../../protocol/backoff.ts';
import { newUuid } from '../../protocol/values.ts';
import { findAction, type ActionDef } from './actions.ts';
import { UsageError, actionHelp, buildRequest, helpText, parseArgs, requestTarget, usageLine, type RestRequest } from './args.ts';
import { ProgressLine, progressOf } from './progress.ts';
import { readSession, removeSession, sessionPath, writeSession, type Env } from './session.ts';

export interface Writable {
  write(s: string): unknown;
}

export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  env: Env;
  /** Show the job progress line on stderr (main.ts: stdout and stderr are both terminals). */
  isTTY: boolean;
  /** Terminal width for the progress line; default 80. */
  columns?: number;
  /**
   * Waits between job polls. Default a real timer; the backoff starts at 50 ms and doubles
   * up to 1 s, or up to `HOSTKEEPER_POLL_MS` when set (0: no waiting, for tests).
   */
  sleep?: (ms: number) => Promise<void>;
  /** Told the job being followed (undefined when done), so main.ts can name it on Ctrl-C. */
  onJob?: (job: { uuid: string; location: string } | undefined) => void;
}

export const DEFAULT_URL = 'http://127.0.0.1:8080';
const LOGIN_HINT = 'run: hostkeeper LogInByAccount accountName=admin password=...';

interface Answer {
  status: number;
  statusText: string;
  text: string;
  /** Parsed JSON, or undefined when the body is not JSON (or empty). */
  json: unknown;
}

/** The controller could not be reached at all (refused, DNS, reset). */
class Unreachable extends Error {}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function pretty(v: unknown): string {
  return `${JSON.stringify(v, null, 2)}\n`;
}

/** Why a request failed, in one line (axios keeps the system error's code). */
function reason(err: unknown): string {
  const e = err as AxiosError & { errors?: { message?: string }[] };
  return e.code === 'ECONNABORTED' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : e.errors?.[0]?.message || e.message || e.code || String(err);
}

/** One request may take this long (a job's work is not waited for: the job is polled). */
const REQUEST_TIMEOUT_MS = 30_000;
/** Reads (job polls, queries) are retried this many times on a network error, with backoff. */
const READ_RETRIES = 3;
const READ_BACKOFF = { initialMs: 200, maxMs: 2_000 };

interface SendInit {
  method: string;
  headers: Record<string, string>;
  body?: string;
}

/**
 * One HTTP call with axios: a timeout, no proxy from the environment (the CLI talks to the
 * controller it was pointed at), every status answered (the caller reads ZStack's error body),
 * and a read retried with backoff when the network drops it. Writes are not retried: a job may
 * have started.
 */
async function send(url: string, init: SendInit, sleep: (ms: number) => Promise<void> = defaultSleep): Promise<Answer> {
  let res: AxiosResponse<string>;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await axios.request<string>({
        url, method: init.method, headers: init.headers, data: init.body, timeout: REQUEST_TIMEOUT_MS, proxy: false,
        responseType: 'text', transformResponse: (x) => x, validateStatus: () => true, maxRedirects: 0,
      });
      break;
    } catch (err) {
      if (init.method !== 'GET' || attempt >= READ_RETRIES) throw new Unreachable(reason(err));
      await sleep(backoffDelay(READ_BACKOFF, attempt));
    }
  }
  const text = typeof res.data === 'string' ? res.data : '';
  let json: unknown;
  if (text.trim() !== '') {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  } else {
    json = {};
  }
  return { status: res.status, statusText: res.statusText ?? '', text, json };
}

function baseUrl(env: Env): string {
  const raw = (env.HOSTKEEPER_URL || DEFAULT_URL).trim();
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`HOSTKEEPER_URL [${raw}] is not a URL like ${DEFAULT_URL}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`HOSTKEEPER_URL [${raw}] must be an http:// or https:// URL`);
  }
  // Accept both `http://host:8080` and `http://host:8080/zstack`.
  return url.href.replace(/\/+$/, '').replace(/\/zstack$/, '');
}

function pollCap(env: Env): number {
  const v = env.HOSTKEEPER_POLL_MS;
  if (v === undefined || v === '') return 1000;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : 1000;
}

function errorLine(a: Answer): string {
  const e = (a.json as { error?: { code?: unknown; description?: unknown; details?: unknown } } | undefined)?.error;
  if (e && typeof e === 'object') {
    const head = [e.code, e.description].filter((x) => x !== undefined && x !== '').join(' ');
    const details = e.details !== undefined && e.details !== '' ? String(e.details) : '';
    return `Error: ${head || `HTTP ${a.status}`}${details ? `: ${details}` : ''}`;
  }
  // Not a ZStack error body (a proxy page, a plain 404): say the status and a cleaned snippet.
  const snippet = a.text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  return `Error: HTTP ${a.status} ${a.statusText}${snippet ? `: ${snippet}` : ''}`.trimEnd();
}

function reportError(io: CliIo, a: Answer, firstLine?: string): void {
  io.stderr.write(`${firstLine ?? errorLine(a)}\n`);
  if (a.json !== undefined && !(typeof a.json === 'object' && a.json !== null && Object.keys(a.json).length === 0)) {
    io.stderr.write(pretty(a.json));
  }
  if (a.status === 401) io.stderr.write(`${LOGIN_HINT}\n`);
}

function printBody(io: CliIo, a: Answer): void {
  io.stdout.write(a.json !== undefined ? pretty(a.json) : a.text.endsWith('\n') ? a.text : `${a.text}\n`);
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    return await run(argv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`Error: ${err.message}\n`);
      return 2;
    }
    // Never a stack trace: one line is what a CLI user can act on.
    io.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

async function run(argv: string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === 'help' || first === '--help' || first === '-h') {
    if (rest[0] === undefined) {
      io.stdout.write(helpText());
      return 0;
    }
    const def = findAction(rest[0]);
    if (!def) return unknownAction(io, rest[0]);
    io.stdout.write(actionHelp(def));
    return 0;
  }
  const def = findAction(first);
  if (!def) return unknownAction(io, first);
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(actionHelp(def));
    return 0;
  }

  let parsed;
  try {
    parsed = parseArgs(def, rest);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`Error: ${err.message}\n`);
    io.stderr.write(`Usage: hostkeeper ${usageLine(def)}\n`);
    return 2;
  }
  const base = baseUrl(io.env);
  const session = def.auth === false ? undefined : await readSession(io.env);
  if (def.session === 'drop' && session === undefined) {
    io.stderr.write(`not logged in (no session in ${sessionPath(io.env)})\n`);
    return 0;
  }
  const request = buildRequest(def, parsed, { session });

  try {
    return await call(def, request, base, session, io);
  } catch (err) {
    if (!(err instanceof Unreachable)) throw err;
    io.stderr.write(`Error: cannot reach the controller at ${base}: ${err.message}\n`);
    return 1;
  }
}

function unknownAction(io: CliIo, name: string): number {
  io.stderr.write(`Error: unknown action [${name}]; run: hostkeeper help\n`);
  return 2;
}

async function call(def: ActionDef, request: RestRequest, base: string, session: string | undefined, io: CliIo): Promise<number> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (session !== undefined) headers.Authorization = `OAuth ${session}`;
  // The client-chosen job id (ZStack's X-Job-UUID): on everything that may start a job.
  if (request.method !== 'GET') headers['X-Job-UUID'] = newUuid();
  let body: string | undefined;
  if (request.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(request.body);
  }

  let answer = await send(`${base}${requestTarget(request)}`, { method: request.method, headers, body });

  const location = (answer.json as { location?: unknown } | undefined)?.location;
  if (answer.status === 202 && def.poll !== false && typeof location === 'string') {
    // Only the job's path is taken from the answer: the CLI polls the controller it was
    // pointed at, never a host an answer names (a forged location could send it, and its
    // session, elsewhere).
    const jobUrl = `${base}${new URL(location, `${base}/zstack/`).pathname}`;
    const jobUuid = new URL(jobUrl).pathname.split('/').filter(Boolean).pop() ?? '';
    try {
      answer = await follow(jobUrl, jobUuid, answer, session, io);
    } catch (err) {
      if (err instanceof Unreachable) {
        io.stderr.write(`Error: cannot reach the controller at ${base}: ${err.message}\n`);
        io.stderr.write(`the job may go on; look later: hostkeeper GetJob uuid=${jobUuid}\n`);
        return 1;
      }
      throw err;
    }
    if (answer.status === 404) {
      reportError(io, answer, `Error: job[${jobUuid}] is unknown or has expired (HTTP 404)`);
      return 1;
    }
  }

  // Logging out drops the local session whatever the controller answered: a 401/404 means
  // it is gone there too. An unreachable controller keeps it (we threw above), to retry.
  if (def.session === 'drop') await removeSession(io.env);

  if (answer.status < 200 || answer.status >= 300) {
    reportError(io, answer);
    return 1;
  }
  if (def.session === 'save') {
    const uuid = (answer.json as { inventory?: { uuid?: unknown } } | undefined)?.inventory?.uuid;
    if (typeof uuid !== 'string' || uuid === '') {
      io.stderr.write('Error: the login answer carried no inventory.uuid; no session stored\n');
      printBody(io, answer);
      return 1;
    }
    await writeSession(io.env, uuid);
  }
  printBody(io, answer);
  return 0;
}

/** GETs the job location until it is no longer 202, with a doubling backoff. */
async function follow(jobUrl: string, jobUuid: string, first: Answer, session: string | undefined, io: CliIo): Promise<Answer> {
  const sleep = io.sleep ?? defaultSleep;
  const cap = pollCap(io.env);
  const poll = { initialMs: Math.min(50, cap), maxMs: cap };
  const line = io.isTTY ? new ProgressLine(io.stderr, io.columns ?? 80) : undefined;
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (session !== undefined) headers.Authorization = `OAuth ${session}`;
  io.onJob?.({ uuid: jobUuid, location: jobUrl });
  let answer = first;
  try {
    for (let attempt = 0; answer.status === 202; attempt++) {
      line?.draw(progressOf(answer.json));
      const delay = backoffDelay(poll, attempt);
      if (delay > 0) await sleep(delay);
      answer = await send(jobUrl, { method: 'GET', headers }, sleep);
    }
  } finally {
    line?.clear();
    io.onJob?.(undefined);
  }
  return answer;
}
