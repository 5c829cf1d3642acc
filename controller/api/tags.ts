/** System and user tags: create, update (system), delete (queries are queries.ts). */
import { CreateTagBody, parseBody, UpdateSystemTagBody } from '../../protocol/api.ts';
import { notFound } from '../../protocol/errors.ts';
import { one } from '../../protocol/inventory.ts';
import { RESOURCES, type TagRow } from '../../protocol/resources.ts';
import { createTag, deleteTag, updateSystemTag } from '../services/tags.ts';
import { type Api, deleteModeOf, pathUuid } from './common.ts';

export function tagRoutes(api: Api): void {
  const { core } = api;
  const { repo, clock } = core;
  for (const type of ['System', 'User'] as const) {
    const res = type === 'System' ? RESOURCES.systemTag : RESOURCES.userTag;
    const apiName = type === 'System' ? 'CreateSystemTag' : 'CreateUserTag';
    api.route('post', `/v1/${res.path}`, apiName, async (req, out, hdr) => {
      const b = parseBody(CreateTagBody, req.body);
      await api.instant(req, out, apiName, async (tx) => one(res, await createTag(tx, { ...b.params, type }, clock.now())), hdr);
    });
  }
  api.route('put', '/v1/system-tags/:uuid/actions', 'UpdateSystemTag', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'system tag');
    const b = parseBody(UpdateSystemTagBody, req.body);
    if (!(await repo.get('tag', uuid))) throw notFound(`system tag[uuid:${uuid}] does not exist`);
    await api.instant(req, res, 'UpdateSystemTag', async (tx) => one(RESOURCES.systemTag, await updateSystemTag(tx, uuid, b.updateSystemTag.tag, clock.now())), hdr);
  });
  api.route('delete', '/v1/tags/:uuid', 'DeleteTag', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'tag');
    deleteModeOf(req);
    const tag = await repo.get<TagRow>('tag', uuid);
    if (!tag) throw notFound(`tag[uuid:${uuid}] does not exist`);
    await api.instant(req, res, 'DeleteTag', async (tx) => {
      await deleteTag(tx, uuid);
      return {};
    }, hdr);
  });
}
