/**
 * The web console's edge: its static files at `/` (Preact + htm served from node_modules, no
 * CDN: it must work on a management network without internet), its cookie session, and the
 * two read models no query answers (`GET /v1/console/overview`, `GET /v1/console/hosts/<uuid>`).
 *
 * Session: the console logs in through `PUT /console/session` with the admin account (the
 * same sessions as the API) and keeps the session uuid in an HttpOnly, SameSite=Strict
 * cookie, so page scripts never hold it and EventSource (which cannot set headers) is
 * authenticated. The API itself keeps `Authorization: OAuth`. The cookie is taken, by
 * `consoleSessionOf`, only where a forged cross-site request can do no harm:
 *   - GET and HEAD (reads; the event stream), or
 *   - any method carrying `X-Hostkeeper-Console: 1`: a header a cross-site form cannot send,
 *     and that a cross-site script cannot send without a CORS preflight we never allow.
 * SameSite=Strict is the first fence (the browser does not send the cookie cross-site);
 * the header rule is the second, for browsers or proxies that get SameSite wrong.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Request, type Response } from 'express';
import { HkError, notFound } from '../../protocol/errors.ts';
import { LoginBody, parseBody } from '../../protocol/api.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { formatZStackDate } from '../../protocol/values.ts';
import { SESSION_TTL_MS } from '../services/auth.ts';
import type { Core } from '../core.ts';
import { hostReservation, latestEvents, overview } from '../console/read-model.ts';
import { streamEvent } from './events.ts';
import { type Api, h, pathUuid } from './common.ts';

export const SESSION_COOKIE = 'hk_session';
export const CONSOLE_HEADER = 'x-hostkeeper-console';

function cookie(req: Request, name: string): string | undefined {
  const raw = req.get('cookie');
  if (!raw) return undefined;
  for (const part of raw.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return decodeURIComponent(part.slice(i + 1).trim());
  }
  return undefined;
}

/** The console's session from its cookie, under the CSRF rule above; undefined otherwise. */
export function consoleSessionOf(req: Request): string | undefined {
  const safe = req.method === 'GET' || req.method === 'HEAD' || req.get(CONSOLE_HEADER) === '1';
  return safe ? cookie(req, SESSION_COOKIE) : undefined;
}

const here = dirname(fileURLToPath(import.meta.url));
const APP_DIR = join(here, '..', 'console', 'app');
const require = createRequire(import.meta.url);
const preactDir = dirname(require.resolve('preact'));
/** Browser builds of the UI library, named as the import map in index.html names them. */
const VENDOR: Record<string, string> = {
  'preact.mjs': join(preactDir, 'preact.module.js'),
  'hooks.mjs': join(preactDir, '..', 'hooks', 'dist', 'hooks.module.js'),
  'htm.mjs': join(dirname(require.resolve('htm')), 'htm.module.js'),
};
const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8', '.svg': 'image/svg+xml',
};

/** Static files are read once and kept (a handful of small files), with an ETag so a reload costs 304s. */
const cache = new Map<string, { body: Buffer; etag: string }>();
async function sendFile(req: Request, res: Response, file: string): Promise<void> {
  let f = cache.get(file);
  if (!f) {
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      throw notFound(`no console file ${file.slice(file.lastIndexOf('/') + 1)}`);
    }
    f = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
    if (process.env.HOSTKEEPER_CONSOLE_DEV !== '1') cache.set(file, f);
  }
  const ext = file.slice(file.lastIndexOf('.'));
  res.set({
    'Content-Type': TYPES[ext] ?? 'application/octet-stream',
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    ETag: f.etag,
  });
  if (req.get('if-none-match') === f.etag) res.status(304).end();
  else res.status(200).send(f.body);
}

/** Security headers for the console's pages: nothing from elsewhere, no framing. */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self' 'sha256-IMPORTMAP'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

/** The console's own routes outside /zstack: pages, scripts, the cookie session. */
export function consoleRouter(core: Core): express.Router {
  const r = express.Router();
  const json = express.json({ limit: '16kb', type: () => true, strict: false });

  // The page, and a CSP that allows its one inline script (the import map) by hash.
  let index: { html: string; csp: string } | undefined;
  const page = h(async (_req, res) => {
    if (!index || process.env.HOSTKEEPER_CONSOLE_DEV === '1') {
      const html = await readFile(join(APP_DIR, 'index.html'), 'utf8');
      const map = /<script type="importmap">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? '';
      const hash = createHash('sha256').update(map).digest('base64');
      index = { html, csp: PAGE_HEADERS['Content-Security-Policy'].replace('sha256-IMPORTMAP', `sha256-${hash}`) };
    }
    res.status(200).set({ ...PAGE_HEADERS, 'Content-Security-Policy': index.csp, 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' }).send(index.html);
  });
  r.get('/', page);
  r.get('/console', page);
  r.get('/console/vendor/:file', h(async (req, res) => {
    const f = VENDOR[req.params.file as string];
    if (!f) throw notFound(`no console library ${req.params.file}`);
    await sendFile(req, res, f);
  }));
  r.get('/console/app/*path', h(async (req, res) => {
    const rel = normalize(([] as string[]).concat(req.params.path as unknown as string[]).join('/'));
    if (rel.startsWith('..') || rel.includes('\0')) throw notFound('no such console file');
    await sendFile(req, res, join(APP_DIR, rel));
  }));

  r.put('/console/session', json, h(async (req, res) => {
    const body = parseBody(LoginBody, req.body);
    const s = await core.auth.login(body.logInByAccount.accountName, body.logInByAccount.password, req.socket.remoteAddress);
    const secure = req.secure ? '; Secure' : '';
    res.set('Set-Cookie', `${SESSION_COOKIE}=${s.uuid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(SESSION_TTL_MS / 1000)}${secure}`);
    res.status(200).json({ accountName: body.logInByAccount.accountName, expiredDate: formatZStackDate(s.expiredDate) });
  }));
  r.get('/console/session', h(async (req, res) => {
    const s = await core.auth.check(cookie(req, SESSION_COOKIE));
    res.status(200).json({ accountName: 'admin', expiredDate: formatZStackDate(s.expiredDate) });
  }));
  r.delete('/console/session', h(async (req, res) => {
    if (req.get(CONSOLE_HEADER) !== '1') throw new HkError('ID.1001', `logging out of the console needs the header ${CONSOLE_HEADER}: 1`);
    const s = cookie(req, SESSION_COOKIE);
    if (s) await core.auth.logout(s);
    res.set('Set-Cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    res.status(200).json({});
  }));
  return r;
}

/** The console's read models, under /zstack/v1 (so the session check guards them like the API). */
export function consoleApiRoutes({ core, router }: Api): void {
  router.get('/v1/console/overview', h(async (_req, res) => {
    const o = await overview(core);
    res.status(200).json({ ...o, events: o.events.map(streamEvent) });
  }));
  router.get('/v1/console/hosts/:uuid', h(async (req, res) => {
    const uuid = pathUuid(req, 'host');
    const host = await core.repo.get<HostRow>('host', uuid);
    if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
    const reserved = await hostReservation(core, host);
    const events = await latestEvents(core, 30, uuid);
    const [cluster, zone] = await Promise.all([core.repo.get<{ uuid: string; name: string }>('cluster', host.clusterUuid), core.repo.get<{ uuid: string; name: string }>('zone', host.zoneUuid)]);
    res.status(200).json({
      clusterName: cluster?.name ?? null, zoneName: zone?.name ?? null,
      reservedMemory: reserved,
      usedMemory: host.usedMemory ?? 0, usedCpu: host.usedCpu ?? 0, vmCount: host.vmCount ?? 0,
      statusReason: host.statusReason ?? '', agentVersion: host.agentVersion ?? null,
      registered: host.sshUser === undefined,
      events: events.map(streamEvent),
    });
  }));
}
