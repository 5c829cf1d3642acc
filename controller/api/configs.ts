/** Global configurations: UpdateGlobalConfig (queries are queries.ts). */
import { parseBody, UpdateGlobalConfigBody } from '../../protocol/api.ts';
import { one } from '../../protocol/inventory.ts';
import { RESOURCES } from '../../protocol/resources.ts';
import type { Api } from './common.ts';

export function configRoutes(api: Api): void {
  const { configs } = api.core;
  api.route('put', '/v1/global-configurations/:category/:name/actions', 'UpdateGlobalConfig', async (req, res, hdr) => {
    const b = parseBody(UpdateGlobalConfigBody, req.body);
    const { category, name } = req.params as { category: string; name: string };
    let row: Awaited<ReturnType<typeof configs.prepareUpdate>> | undefined;
    await api.instant(req, res, 'UpdateGlobalConfig', async (tx) => {
      row = await configs.prepareUpdate(tx, category, name, b.updateGlobalConfig.value);
      return one(RESOURCES.config, row);
    }, hdr);
    configs.applied(row!);
  });
}
