/**
 * What every route file shares: the async-handler wrapper, request helpers (path uuid,
 * deleteMode, job headers) and the two ways a create/action/delete answers 202: instant work
 * committed with its finished job, or long work behind a Running job.
 */
import type { NextFunction, Request, Response, Router } from 'express';
import { HkError, invalidArgument, notFound, toHkError } from '../../protocol/errors.ts';
import type { z } from 'zod';
import { DELETE_MODES, parseBody } from '../../protocol/api.ts';
import { isUuid } from '../../protocol/values.ts';
import type { Core } from '../core.ts';
import type { DeleteMode } from '../services/inventory.ts';
import type { JobHandle } from '../services/jobs.ts';
import { type StoreHealth, StoreUnavailableError, type Tx } from '../store/repository.ts';

export type Rec = Record<string, unknown>;

/**
 * Anything a request threw, as the caller sees it. HkErrors as they are (the store turns its
 * own database failures into StoreUnavailableError, 503). A database error that reached here
 * unwrapped (pg's: a SQLSTATE with a severity, or its "Connection terminated") is 503 too: a
 * database failure is not a bug in the request, so it never answers 500. Socket errnos alone
 * (ECONNREFUSED, ...) are not taken for the database's: an agent or SSH call throws them too.
 * Everything else: toHkError.
 */
export function errorOf(err: unknown): HkError {
  if (err instanceof HkError) return err;
  const e = err as { code?: unknown; severity?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  const msg = typeof e?.message === 'string' ? e.message.split('\n')[0]! : String(err);
  const sqlState = typeof e?.severity === 'string' && /^[0-9A-Z]{5}$/.test(code);
  if ((sqlState && /^(08|57P0)/.test(code)) || /^Connection terminated/.test(msg)) {
    return new StoreUnavailableError('unreachable', `database unreachable: ${msg}`, code || undefined, { cause: err });
  }
  if (sqlState) return new StoreUnavailableError('error', `database error: ${msg} (${code})`, code, { cause: err });
  return toHkError(err);
}

/** What every admin API call answers while the store reports the database down. */
export function storeDown(h: StoreHealth): StoreUnavailableError {
  return new StoreUnavailableError(
    'unreachable',
    `database unreachable since ${new Date(h.since).toISOString()}${h.why ? `: ${h.why}` : ''}; this controller answers again as soon as it is back`,
  );
}

/** Wraps an async handler so its errors reach the error middleware. */
export const h = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) => {
  fn(req, res).catch(next);
};

export function deleteModeOf(req: Request): DeleteMode {
  const extra = Object.keys(req.query).filter((k) => k !== 'deleteMode');
  if (extra.length > 0) throw invalidArgument(`query parameter[${extra[0]}] is unknown; only deleteMode is taken`);
  const m = req.query.deleteMode ?? 'Permissive';
  if (typeof m !== 'string' || !(DELETE_MODES as readonly string[]).includes(m)) {
    throw invalidArgument(`deleteMode[${String(m)}] must be one of ${DELETE_MODES.join(', ')}`);
  }
  return m as DeleteMode;
}

/**
 * The body of a `PUT .../actions` call: exactly one action of `actions` (ZStack's shape,
 * `{"<action>": {...}}`, tags allowed beside it), its parameters checked by the action's schema.
 */
export function parseAction<A extends Record<string, z.ZodType>>(body: unknown, actions: A): { action: keyof A & string; params: Rec; body: Rec } {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalidArgument('body must be an object holding one action');
  const b = body as Rec;
  const given = Object.keys(b).filter((k) => k !== 'systemTags' && k !== 'userTags');
  const known = Object.keys(actions);
  if (given.length !== 1 || !known.includes(given[0]!)) {
    throw invalidArgument(`body must hold exactly one action of ${known.join(', ')}; got ${given.join(', ') || 'none'}`);
  }
  const action = given[0] as keyof A & string;
  return { action, params: parseBody(actions[action]!, b[action], action) as Rec, body: b };
}

/** The API name of an action call, for the job (ZStack names each action's API): `changeHostState` -> ChangeHostState. */
export function actionApiName(actions: Record<string, unknown>, fallback: string) {
  return (req: { body?: unknown }) => {
    const k = Object.keys((req.body as Rec | undefined) ?? {}).find((x) => x in actions);
    return k ? k[0]!.toUpperCase() + k.slice(1) : fallback;
  };
}

export function pathUuid(req: Request, what: string): string {
  const u = req.params.uuid as string;
  if (!isUuid(u)) throw notFound(`${what}[uuid:${u}] does not exist: not a 32-hex-digit uuid`);
  return u;
}

/** The job id (X-Job-UUID or a new one) and web hook of a request, checked. */
export interface JobHeaders {
  id: string;
  hook?: string;
}

function webHookOf(req: Request): string | undefined {
  const w = req.get('x-web-hook');
  if (w === undefined) return undefined;
  try {
    const u = new URL(w);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
  } catch {
    throw invalidArgument(`header X-Web-Hook[${w}] must be an http(s) URL`);
  }
  return w;
}

/** Splits an IPv6 address for a URL and drops the IPv4-mapped prefix. */
function urlAddress(a: string | undefined): string {
  const plain = (a ?? '127.0.0.1').replace(/^::ffff:(?=\d+\.)/, '');
  return plain.includes(':') ? `[${plain}]` : plain;
}

export interface Api {
  core: Core;
  router: Router;
  jobHeaders(req: Request): Promise<JobHeaders>;
  /** Store-only work: the change and the finished job commit together, then 202. */
  instant(req: Request, res: Response, apiName: string, work: (tx: Tx) => Promise<unknown>, hdr?: JobHeaders): Promise<void>;
  /** Work that talks to agents: a Running job is stored, then 202; the work goes on. */
  long(req: Request, res: Response, apiName: string, work: (job: JobHandle) => Promise<unknown>, hdr: JobHeaders, prepare?: (tx: Tx) => Promise<void>): Promise<void>;
  /** 202 with the job's absolute location. */
  accepted(req: Request, res: Response, id: string): void;
  /**
   * An asynchronous API (create, action, delete), as ZStack answers it: the job headers are
   * checked first (a malformed one is refused at once, like malformed JSON or a missing
   * session), then anything the handler refuses (bad value, unknown resource, wrong state)
   * becomes the job's failure: 202, and the job answers 503 with the ZStack code, which is
   * where ZStack's SDK reads codes from.
   */
  route(method: 'post' | 'put' | 'delete', path: string, apiName: string | ((req: Request) => string), fn: (req: Request, res: Response, hdr: JobHeaders) => Promise<void>): void;
}

/**
 * The job location is absolute (ZStack's SDK follows it) and built from the controller's
 * configured API URL, else from the address the client actually connected to: never from
 * the Host header, which a client (or anyone in between) can set to send the CLI elsewhere.
 */
export function makeApi(core: Core, router: Router, apiUrl?: string): Api {
  const scheme = (req: Request) => ((req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http');
  const base = (req: Request) => apiUrl ?? `${scheme(req)}://${urlAddress(req.socket.localAddress)}:${req.socket.localPort}`;
  const accepted = (req: Request, res: Response, id: string) => {
    res.status(202).json({ location: `${base(req)}/zstack/v1/api-jobs/${id}` });
  };
  const jobHeaders = async (req: Request): Promise<JobHeaders> => {
    const hook = webHookOf(req);
    return { id: await core.jobs.newId(req.get('x-job-uuid')), hook };
  };
  return {
    core, router, jobHeaders, accepted,
    route(method, path, apiName, fn) {
      router[method](path, h(async (req, res) => {
        const hdr = await jobHeaders(req);
        try {
          await fn(req, res, hdr);
        } catch (err) {
          // Internal errors stay 500s: they are bugs, not answers. A store that cannot answer
          // cannot record the failed job either: that is answered at once (503).
          if (res.headersSent || !(err instanceof HkError) || err.code === 'SYS.1000' || err instanceof StoreUnavailableError) throw err;
          await core.jobs.failed(hdr.id, typeof apiName === 'string' ? apiName : apiName(req), err, hdr.hook);
          accepted(req, res, hdr.id);
        }
      }));
    },
    async instant(req, res, apiName, work, hdr) {
      const { id, hook } = hdr ?? (await jobHeaders(req));
      await core.jobs.instant(id, apiName, work, hook);
      accepted(req, res, id);
    },
    async long(req, res, apiName, work, hdr, prepare) {
      await core.jobs.long(hdr.id, apiName, work, hdr.hook, prepare);
      accepted(req, res, hdr.id);
    },
  };
}
