/** Maintenance windows: CreateMaintenanceWindow, DeleteMaintenanceWindow (queries are queries.ts). */
import { CreateMaintenanceWindowBody, parseBody } from '../../protocol/api.ts';
import { notFound } from '../../protocol/errors.ts';
import { one } from '../../protocol/inventory.ts';
import { RESOURCES } from '../../protocol/resources.ts';
import { type Api, deleteModeOf, pathUuid } from './common.ts';

export function maintenanceWindowRoutes(api: Api): void {
  const { windows } = api.core;
  api.route('post', '/v1/maintenance-windows', 'CreateMaintenanceWindow', async (req, res, hdr) => {
    const b = parseBody(CreateMaintenanceWindowBody, req.body);
    await api.instant(req, res, 'CreateMaintenanceWindow', async (tx) => one(RESOURCES.maintenanceWindow, await windows.create(tx, b.params)), hdr);
    windows.arm();
  });
  api.route('delete', '/v1/maintenance-windows/:uuid', 'DeleteMaintenanceWindow', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'maintenance window');
    deleteModeOf(req);
    await api.long(req, res, 'DeleteMaintenanceWindow', async () => {
      await windows.delete(uuid);
      return {};
    }, hdr, async (tx) => {
      // Refused (through the job) before anything runs when it does not exist.
      if (!(await tx.get('maintenanceWindow', uuid))) throw notFound(`maintenance window[uuid:${uuid}] does not exist`);
    });
  });
}
