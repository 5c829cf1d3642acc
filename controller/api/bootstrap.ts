/** Bootstrap tokens: an agent started with one registers its host into the token's cluster. */
import { BootstrapTokenBody, parseBody } from '../../protocol/api.ts';
import { formatZStackDate } from '../../protocol/values.ts';
import { createBootstrapToken } from '../services/bootstrap.ts';
import { type Api, h, type Rec } from './common.ts';

export function bootstrapRoutes(api: Api): void {
  const { core, router } = api;
  const { clock, jobs } = core;
  router.post('/v1/hosts/bootstrap-tokens', h(async (req, res) => {
    const b = parseBody(BootstrapTokenBody, req.body);
    const hdr = await api.jobHeaders(req);
    let shown: Rec | undefined;
    // The token is shown once, in this answer; the job keeps the inventory without it.
    await jobs.instant(hdr.id, 'CreateBootstrapToken', async (tx) => {
      const { row, token } = await createBootstrapToken(tx, clock.now(), b.params.clusterUuid, b.params.ttlSeconds);
      const inv = { uuid: row.uuid, clusterUuid: row.clusterUuid, expiredDate: formatZStackDate(row.expiredDate) };
      shown = { inventory: { ...inv, token } };
      return { inventory: { ...inv, token: '(shown once, when created)' } };
    }, hdr.hook);
    res.status(200).json(shown);
  }));

}
