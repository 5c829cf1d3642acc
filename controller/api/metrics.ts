/**
 * `GET /metrics` in Prometheus' text format. Access, in this order:
 *   - open, when HOSTKEEPER_METRICS_OPEN=true (a scraper on a trusted management network);
 *   - `Authorization: Bearer <HOSTKEEPER_METRICS_TOKEN>` (what a Prometheus job sends with
 *     `authorization: {credentials: ...}`), compared in constant time;
 *   - an admin session: `Authorization: OAuth <session>` or the console's cookie.
 * Anything else: 401 with the error body. The inventory gauges are recomputed from the store
 * at each scrape (controller/metrics.ts); with a port other than PromMetrics the route says
 * that metrics are off.
 */
import { timingSafeEqual, createHash, X509Certificate } from 'node:crypto';
import express, { type Request } from 'express';
import { HkError } from '../../protocol/errors.ts';
import type { ClusterRow, HostRow } from '../../protocol/resources.ts';
import type { Core } from '../core.ts';
import { PromMetrics } from '../metrics.ts';
import { cpuRatio } from '../services/capacity.ts';
import { h } from './common.ts';

export interface MetricsAccess {
  /** Bearer token a scraper presents (default: HOSTKEEPER_METRICS_TOKEN). */
  token?: string;
  /** No credentials needed (default: HOSTKEEPER_METRICS_OPEN=true). */
  open?: boolean;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function metricsRouter(core: Core, sessionOf: (req: Request) => string | undefined, access: MetricsAccess = {}): express.Router {
  const token = access.token ?? process.env.HOSTKEEPER_METRICS_TOKEN ?? '';
  const open = access.open ?? process.env.HOSTKEEPER_METRICS_OPEN === 'true';
  const r = express.Router();
  r.get('/metrics', h(async (req, res) => {
    if (!open) {
      const bearer = /^Bearer\s+(\S+)$/i.exec(req.get('authorization')?.trim() ?? '')?.[1];
      const tokenOk = token !== '' && bearer !== undefined && timingSafeEqual(digest(bearer), digest(token));
      if (!tokenOk) {
        const s = sessionOf(req);
        if (!s) throw new HkError('ID.1001', 'metrics need Authorization: Bearer <HOSTKEEPER_METRICS_TOKEN> or an admin session');
        await core.auth.check(s);
      }
    }
    const m = core.metrics;
    if (!(m instanceof PromMetrics)) throw new HkError('SYS.1000', 'metrics are turned off in this controller');
    await m.refreshInventory({
      hosts: () => core.repo.all<HostRow>('host'),
      clusters: () => core.repo.all<ClusterRow>('cluster'),
      reserved: () => core.reservations.resolver(),
      cpuRatio: () => cpuRatio(core.configs),
    });
    certificates(core, m);
    res.status(200).set('Content-Type', m.registry.contentType).send(await m.text());
  }));
  return r;
}

/** Expiry of the controller's TLS certificate and of its CA, read from what the PKI serves now. */
const expiryOf = new Map<string, number>();
function certificates(core: Core, m: PromMetrics): void {
  const pki = (core as Partial<Pick<Core, 'pki'>>).pki;
  if (!pki) return;
  const one = (name: string, pem: string | undefined) => {
    if (!pem) return;
    let at = expiryOf.get(pem);
    if (at === undefined) {
      try {
        at = Date.parse(new X509Certificate(pem).validTo) / 1000;
      } catch {
        return;
      }
      if (expiryOf.size > 16) expiryOf.clear();
      expiryOf.set(pem, at);
    }
    m.certificateExpiry(name, at);
  };
  one('controller', pki.cert());
  one('ca', /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(pki.caBundle)?.[0]);
}
