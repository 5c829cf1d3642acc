/**
 * The event log over the API: `GET /v1/events` (the query language, like every resource; the
 * route is in queries.ts's shape, kept here with the stream) and the live stream
 * `GET /v1/event-stream` (server-sent events, one `data:` line per committed event, fed by
 * core.events: nothing is polled). The console keeps its hosts table live with it.
 *
 * A slow reader is cut off rather than buffered without bound: a browser's EventSource
 * reconnects by itself and the console reloads its page of rows when it does.
 */
import type { Request, Response } from 'express';
import { notFound } from '../../protocol/errors.ts';
import { many, toInventory } from '../../protocol/inventory.ts';
import { parseQuery } from '../../protocol/query.ts';
import { type EventRow, RESOURCES, type ResourceSpec } from '../../protocol/resources.ts';
import { isUuid } from '../../protocol/values.ts';
import { type Api, h, type Rec } from './common.ts';

/** Bytes a stream may have waiting in its socket before it is closed. */
const MAX_BUFFERED = 4 * 1024 * 1024;
/** A comment line this often keeps proxies from closing an idle stream; the session is re-checked then. */
const KEEPALIVE_MS = 15_000;

/** One event as the stream and the console see it: the inventory plus `ts` (epoch ms) for sorting. */
export const streamEvent = (row: EventRow): Rec => ({ ...toInventory(RESOURCES.event as ResourceSpec, row), ts: row.createDate });

export function eventRoutes({ core, router }: Api, sessionOf: (req: Request) => string | undefined): void {
  const res = RESOURCES.event as ResourceSpec;

  router.get('/v1/event-stream', (req: Request, out: Response) => {
    out.status(200).set({
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      'X-Accel-Buffering': 'no',
    });
    out.flushHeaders();
    out.write('retry: 2000\n\n');
    let closed = false;
    let cancelTimer: (() => void) | undefined;
    const close = () => {
      if (closed) return;
      closed = true;
      off();
      cancelTimer?.();
      out.end();
    };
    const off = core.events.on((rows) => {
      if (closed) return;
      let chunk = '';
      for (const r of rows) chunk += `id: ${r.uuid}\ndata: ${JSON.stringify(streamEvent(r))}\n\n`;
      out.write(chunk);
      if (out.writableLength > MAX_BUFFERED) {
        core.log.warn({ buffered: out.writableLength }, 'event stream reader too slow; closing its stream');
        close();
      }
    });
    const keepalive = () => {
      cancelTimer = core.clock.setTimer(KEEPALIVE_MS, () => {
        if (closed) return;
        core.auth.check(sessionOf(req)).then(() => {
          out.write(': keepalive\n\n');
          keepalive();
        }, close);
      });
    };
    keepalive();
    req.on('close', close);
  });

  const run = h(async (req, out) => {
    const spec = parseQuery(res, req.query as Rec);
    if (req.params.uuid !== undefined) {
      const row = isUuid(req.params.uuid) ? await core.repo.get(res.kind, req.params.uuid as string) : undefined;
      if (!row) throw notFound(`events[uuid:${req.params.uuid}] does not exist`);
      out.status(200).json(many(res, [row], spec.fields));
      return;
    }
    const r = await core.repo.query(res, spec);
    if (spec.count) out.status(200).json({ total: r.total });
    else out.status(200).json(many(res, r.rows, spec.fields, spec.replyWithCount ? r.total : undefined));
  });
  router.get('/v1/events', run);
  router.get('/v1/events/:uuid', run);
}
