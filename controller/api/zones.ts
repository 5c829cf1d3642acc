/** Zones and clusters: create and delete (queries are queries.ts). */
import { CreateClusterBody, CreateZoneBody, parseBody } from '../../protocol/api.ts';
import { notFound } from '../../protocol/errors.ts';
import { one } from '../../protocol/inventory.ts';
import { type Kind, RESOURCES } from '../../protocol/resources.ts';
import { createCluster, createZone, type DeleteMode, deleteCluster, deleteZone } from '../services/inventory.ts';
import type { Tx } from '../store/repository.ts';
import { type Api, deleteModeOf, pathUuid } from './common.ts';

export function zoneRoutes(api: Api): void {
  const { core } = api;
  const { repo, clock, log } = core;
  api.route('post', '/v1/zones', 'CreateZone', async (req, res, hdr) => {
    const b = parseBody(CreateZoneBody, req.body);
    await api.instant(req, res, 'CreateZone', async (tx) => one(RESOURCES.zone, await createZone(tx, clock.now(), b.params, b)), hdr);
  });
  api.route('post', '/v1/clusters', 'CreateCluster', async (req, res, hdr) => {
    const b = parseBody(CreateClusterBody, req.body);
    await api.instant(req, res, 'CreateCluster', async (tx) => one(RESOURCES.cluster, await createCluster(tx, clock.now(), b.params, b)), hdr);
  });

  const deleteRoute = (path: string, kind: Kind, what: string, apiName: string, del: (tx: Tx, now: number, uuid: string, mode: DeleteMode) => Promise<unknown>) => {
    api.route('delete', `/v1/${path}/:uuid`, apiName, async (req, res, hdr) => {
      const uuid = pathUuid(req, what);
      const mode = deleteModeOf(req);
      if (!(await repo.get(kind, uuid))) throw notFound(`${what}[uuid:${uuid}] does not exist`);
      await api.instant(req, res, apiName, async (tx) => {
        await del(tx, clock.now(), uuid, mode);
        log.info({ [kind]: uuid, deleteMode: mode }, `${what} deleted`);
        return {};
      }, hdr);
    });
  };
  deleteRoute('zones', 'zone', 'zone', 'DeleteZone', deleteZone);
  deleteRoute('clusters', 'cluster', 'cluster', 'DeleteCluster', deleteCluster);
}
