/**
 * Bootstrap tokens: an agent started with one registers its host into the token's cluster.
 * CreateBootstrapToken (the token shown once, with the CA hash agents pin), QueryBootstrapToken
 * (never the token), DeleteBootstrapToken (revokes it at once; hosts it registered stay).
 */
import { BootstrapTokenBody, parseBody } from '../../protocol/api.ts';
import { many } from '../../protocol/inventory.ts';
import { parseQuery } from '../../protocol/query.ts';
import { RESOURCES, type ResourceSpec } from '../../protocol/resources.ts';
import { formatZStackDate } from '../../protocol/values.ts';
import { createBootstrapToken, revokeBootstrapToken } from '../services/bootstrap.ts';
import { type Api, h, pathUuid, type Rec } from './common.ts';

export function bootstrapRoutes(api: Api): void {
  const { core, router } = api;
  const { clock, jobs, repo } = core;
  const spec = RESOURCES.bootstrapToken as ResourceSpec;

  router.post('/v1/hosts/bootstrap-tokens', h(async (req, res) => {
    const b = parseBody(BootstrapTokenBody, req.body);
    const hdr = await api.jobHeaders(req);
    let shown: Rec | undefined;
    // The token is shown once, in this answer; the job keeps the inventory without it.
    await jobs.instant(hdr.id, 'CreateBootstrapToken', async (tx) => {
      const { row, token } = await createBootstrapToken(tx, clock.now(), b.params.clusterUuid, b.params.ttlSeconds, b.params.maxUses);
      const inv = {
        uuid: row.uuid, clusterUuid: row.clusterUuid, expiredDate: formatZStackDate(row.expiredDate), caCertHash: core.pki.caCertHash,
        ...(row.maxUses !== undefined ? { maxUses: row.maxUses } : {}),
      };
      shown = { inventory: { ...inv, token } };
      return { inventory: { ...inv, token: '(shown once, when created)' } };
    }, hdr.hook);
    res.status(200).json(shown);
  }));

  // The query language like every Query*; caCertHash is the controller's, the same for all.
  router.get('/v1/hosts/bootstrap-tokens', h(async (req, res) => {
    const q = parseQuery(spec, req.query as Rec);
    const r = await repo.query(spec, q);
    if (q.count) {
      res.status(200).json({ total: r.total });
      return;
    }
    const out = many(spec, r.rows, q.fields, q.replyWithCount ? r.total : undefined);
    if (!q.fields) for (const inv of out.inventories as Rec[]) inv.caCertHash = core.pki.caCertHash;
    res.status(200).json(out);
  }));

  api.route('delete', '/v1/hosts/bootstrap-tokens/:uuid', 'DeleteBootstrapToken', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'bootstrap-token');
    await api.instant(req, res, 'DeleteBootstrapToken', async (tx) => {
      await revokeBootstrapToken(tx, uuid);
      return {};
    }, hdr);
  });
}
