/** Queries (ZStack's Query* APIs): GET /v1/<resources>[/<uuid>], answered directly (200 or 400/404). */
import { notFound } from '../../protocol/errors.ts';
import { many } from '../../protocol/inventory.ts';
import { parseQuery } from '../../protocol/query.ts';
import { RESOURCES, type ResourceName, type ResourceSpec } from '../../protocol/resources.ts';
import { isUuid } from '../../protocol/values.ts';
import { type Api, h, type Rec } from './common.ts';

export function queryRoutes({ core, router }: Api): void {
  const { repo } = core;
  function queryRoute(name: ResourceName, scope?: Record<string, string>, byUuid = true) {
    const res = RESOURCES[name] as ResourceSpec;
    const run = h(async (req, out) => {
      const spec = parseQuery(res, req.query as Rec);
      if (req.params.uuid !== undefined) {
        if (!isUuid(req.params.uuid)) throw notFound(`${res.path}[uuid:${req.params.uuid}] does not exist`);
        const row = await repo.get(res.kind, req.params.uuid as string);
        const visible = row && Object.entries(scope ?? {}).every(([k, v]) => (row as unknown as Rec)[k] === v);
        if (!visible) throw notFound(`${res.path}[uuid:${req.params.uuid}] does not exist`);
        out.status(200).json(many(res, [row], spec.fields));
        return;
      }
      const r = await repo.query(res, spec, scope);
      if (spec.count) out.status(200).json({ total: r.total });
      else out.status(200).json(many(res, r.rows, spec.fields, spec.replyWithCount ? r.total : undefined));
    });
    router.get(`/v1/${res.path}`, run);
    if (byUuid) router.get(`/v1/${res.path}/:uuid`, run);
  }
  queryRoute('zone');
  queryRoute('cluster');
  queryRoute('host');
  queryRoute('vm');
  queryRoute('maintenanceWindow');
  queryRoute('systemTag', { type: 'System' });
  queryRoute('userTag', { type: 'User' });
  // Configs are addressed by category/name, not uuid: no /:uuid form.
  queryRoute('config', undefined, false);
}
