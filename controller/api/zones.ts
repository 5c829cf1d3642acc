/** Zones and clusters: create and delete (queries are queries.ts). */
import { CreateClusterBody, CreateZoneBody, parseBody } from '../../protocol/api.ts';
import { notFound } from '../../protocol/errors.ts';
import { one } from '../../protocol/inventory.ts';
import { type Kind, RESOURCES } from '../../protocol/resources.ts';
import { createCluster, createZone, type DeleteMode, deleteCluster, deleteZone } from '../services/inventory.ts';
import type { Tx } from '../store/repository.ts';
import { type Api, deleteModeOf, h, pathUuid } from './common.ts';

export function zoneRoutes(api: Api): void {
  const { core, router } = api;
  const { repo, clock, log } = core;
  router.post('/v1/zones', h(async (req, res) => {
    const b = parseBody(CreateZoneBody, req.body);
    await api.instant(req, res, 'CreateZone', async (tx) => one(RESOURCES.zone, await createZone(tx, clock.now(), b.params, b)));
  }));
  router.post('/v1/clusters', h(async (req, res) => {
    const b = parseBody(CreateClusterBody, req.body);
    await api.instant(req, res, 'CreateCluster', async (tx) => one(RESOURCES.cluster, await createCluster(tx, clock.now(), b.params, b)));
  }));

  const deleteRoute = (path: string, kind: Kind, what: string, apiName: string, del: (tx: Tx, now: number, uuid: string, mode: DeleteMode) => Promise<unknown>) => {
    router.delete(`/v1/${path}/:uuid`, h(async (req, res) => {
      const uuid = pathUuid(req, what);
      const mode = deleteModeOf(req);
      if (!(await repo.get(kind, uuid))) throw notFound(`${what}[uuid:${uuid}] does not exist`);
      await api.instant(req, res, apiName, async (tx) => {
        await del(tx, clock.now(), uuid, mode);
        log.info({ [kind]: uuid, deleteMode: mode }, `${what} deleted`);
        return {};
      });
    }));
  };
  deleteRoute('zones', 'zone', 'zone', 'DeleteZone', deleteZone);
  deleteRoute('clusters', 'cluster', 'cluster', 'DeleteCluster', deleteCluster);
}
