/**
 * `GET /zstack/v1/openapi.json`: an OpenAPI 3.1 document of the admin API, generated from the
 * same zod schemas that validate requests (protocol/api.ts, via zod's toJSONSchema) and the
 * query catalogue (protocol/resources.ts), with the ZStack error shape and the async job
 * answer; `GET /zstack/v1/api-reference` is a page of our own that renders it (no CDN).
 *
 * OPERATIONS below is the list of every route under /zstack/v1; test/console/openapi.test.ts
 * walks express's router and fails when a route is missing here or an entry has no route,
 * so the document cannot drift from the API. Limit: refinements that JSON Schema cannot say
 * (a name without control characters, an IPv4 check) appear only in the descriptions the
 * API's errors give.
 */
import type express from 'express';
import { z } from 'zod';
import {
  AddKvmHostBody, BootstrapTokenBody, CreateClusterBody, CreateMaintenanceWindowBody, CreateTagBody, CreateVmBody, CreateZoneBody, HOST_ACTIONS, LoginBody,
  UpdateGlobalConfigBody, UpdateSystemTagBody, VM_ACTIONS,
} from '../../protocol/api.ts';
import { RESOURCES, type ResourceName, type ResourceSpec } from '../../protocol/resources.ts';

type Answer = 'async' | 'query' | 'direct' | 'stream';

export interface Operation {
  method: 'get' | 'put' | 'post' | 'delete';
  /** Express's form (`:uuid`); the document uses `{uuid}`. */
  path: string;
  id: string;
  summary: string;
  tag: string;
  body?: z.ZodType;
  answer: Answer;
  /** For queries: the resource whose inventories come back. */
  resource?: ResourceName;
  /** Query parameters beyond the path's. */
  params?: { name: string; description: string; schema: object }[];
}

/** One of the action bodies: exactly one key, each with its own schema. */
const oneOf = (actions: Record<string, z.ZodType>) => z.union(Object.entries(actions).map(([k, s]) => z.strictObject({ [k]: s, systemTags: z.array(z.string()).max(0).optional(), userTags: z.array(z.string()).max(0).optional() })));
const deleteMode = { name: 'deleteMode', description: 'Permissive refuses when the resource is in use; Enforcing removes it anyway', schema: { type: 'string', enum: ['Permissive', 'Enforcing'], default: 'Permissive' } };

const query = (resource: ResourceName, tag: string, id: string, byUuid = true): Operation[] => {
  const path = `/v1/${RESOURCES[resource].path}`;
  const list: Operation = { method: 'get', path, id, summary: `Query ${RESOURCES[resource].path} with the query language`, tag, answer: 'query', resource };
  return byUuid ? [list, { ...list, path: `${path}/:uuid`, id: `${id}ByUuid`, summary: `One of ${RESOURCES[resource].path} by uuid` }] : [list];
};

export const OPERATIONS: Operation[] = [
  { method: 'put', path: '/v1/accounts/login', id: 'LogInByAccount', summary: 'Log in; the session uuid goes in Authorization: OAuth <uuid>', tag: 'Sessions', body: LoginBody, answer: 'direct' },
  { method: 'delete', path: '/v1/accounts/sessions/:uuid', id: 'LogOut', summary: 'Log out (the session in the path is the credential)', tag: 'Sessions', answer: 'direct' },
  { method: 'get', path: '/v1/api-jobs/:uuid', id: 'GetJob', summary: 'Poll a job: 202 running (with progress), 200 result, 503 error, 404 expired', tag: 'Jobs', answer: 'direct' },
  ...query('zone', 'Zones and clusters', 'QueryZone'),
  ...query('cluster', 'Zones and clusters', 'QueryCluster'),
  { method: 'post', path: '/v1/zones', id: 'CreateZone', summary: 'Create a zone', tag: 'Zones and clusters', body: CreateZoneBody, answer: 'async' },
  { method: 'post', path: '/v1/clusters', id: 'CreateCluster', summary: 'Create a cluster', tag: 'Zones and clusters', body: CreateClusterBody, answer: 'async' },
  { method: 'delete', path: '/v1/zones/:uuid', id: 'DeleteZone', summary: 'Delete a zone', tag: 'Zones and clusters', answer: 'async', params: [deleteMode] },
  { method: 'delete', path: '/v1/clusters/:uuid', id: 'DeleteCluster', summary: 'Delete a cluster', tag: 'Zones and clusters', answer: 'async', params: [deleteMode] },
  ...query('host', 'Hosts', 'QueryHost'),
  { method: 'post', path: '/v1/hosts/kvm', id: 'AddKVMHost', summary: 'Add a KVM host over SSH (deploys the agent, then connects)', tag: 'Hosts', body: AddKvmHostBody, answer: 'async' },
  { method: 'put', path: '/v1/hosts/:uuid/actions', id: 'HostAction', summary: 'changeHostState (enable, disable, maintain), reconnectHost, updateHost', tag: 'Hosts', body: oneOf(HOST_ACTIONS), answer: 'async' },
  { method: 'delete', path: '/v1/hosts/:uuid', id: 'DeleteHost', summary: 'Delete a host', tag: 'Hosts', answer: 'async', params: [deleteMode] },
  { method: 'get', path: '/v1/hosts/:uuid/maintenance-plan', id: 'GetHostMaintenancePlan', summary: 'Where each VM would go in maintenance, or why it cannot; changes nothing', tag: 'Hosts', answer: 'direct' },
  { method: 'post', path: '/v1/hosts/bootstrap-tokens', id: 'CreateBootstrapToken', summary: 'A token an agent registers its host with (and the CA hash it pins); answered directly, the token shown once', tag: 'Hosts', body: BootstrapTokenBody, answer: 'direct' },
  ...query('bootstrapToken', 'Hosts', 'QueryBootstrapToken', false),
  { method: 'delete', path: '/v1/hosts/bootstrap-tokens/:uuid', id: 'DeleteBootstrapToken', summary: 'Revoke a bootstrap token', tag: 'Hosts', answer: 'async' },
  ...query('maintenanceWindow', 'Maintenance windows', 'QueryMaintenanceWindow'),
  { method: 'post', path: '/v1/maintenance-windows', id: 'CreateMaintenanceWindow', summary: 'Hosts enter maintenance at each cron firing and are enabled again after durationMinutes', tag: 'Maintenance windows', body: CreateMaintenanceWindowBody, answer: 'async' },
  { method: 'delete', path: '/v1/maintenance-windows/:uuid', id: 'DeleteMaintenanceWindow', summary: 'Delete a maintenance window', tag: 'Maintenance windows', answer: 'async', params: [deleteMode] },
  ...query('vm', 'VMs', 'QueryVmInstance'),
  { method: 'post', path: '/v1/vm-instances', id: 'CreateVmInstance', summary: 'Create a VM (Hostkeeper\'s shape: no images or L3 networks)', tag: 'VMs', body: CreateVmBody, answer: 'async' },
  { method: 'put', path: '/v1/vm-instances/:uuid/actions', id: 'VmAction', summary: 'startVmInstance, stopVmInstance, rebootVmInstance, migrateVm', tag: 'VMs', body: oneOf(VM_ACTIONS), answer: 'async' },
  { method: 'delete', path: '/v1/vm-instances/:uuid', id: 'DestroyVmInstance', summary: 'Destroy a VM', tag: 'VMs', answer: 'async' },
  { method: 'get', path: '/v1/vm-instances/:uuid/migration-target-hosts', id: 'GetVmMigrationCandidateHosts', summary: 'Hosts the VM can migrate to, and why each other host cannot take it', tag: 'VMs', answer: 'direct' },
  ...query('config', 'Global configurations', 'QueryGlobalConfig', false),
  { method: 'put', path: '/v1/global-configurations/:category/:name/actions', id: 'UpdateGlobalConfig', summary: 'Change a global configuration (validated; takes effect without restart)', tag: 'Global configurations', body: UpdateGlobalConfigBody, answer: 'async' },
  ...query('systemTag', 'Tags', 'QuerySystemTag'),
  ...query('userTag', 'Tags', 'QueryUserTag'),
  { method: 'post', path: '/v1/system-tags', id: 'CreateSystemTag', summary: 'Tag a host, cluster or zone (system tag)', tag: 'Tags', body: CreateTagBody, answer: 'async' },
  { method: 'post', path: '/v1/user-tags', id: 'CreateUserTag', summary: 'Tag a host, cluster or zone (user tag)', tag: 'Tags', body: CreateTagBody, answer: 'async' },
  { method: 'put', path: '/v1/system-tags/:uuid/actions', id: 'UpdateSystemTag', summary: 'Change a system tag', tag: 'Tags', body: UpdateSystemTagBody, answer: 'async' },
  { method: 'delete', path: '/v1/tags/:uuid', id: 'DeleteTag', summary: 'Delete a tag', tag: 'Tags', answer: 'async' },
  ...query('event', 'Events', 'QueryEvent'),
  { method: 'get', path: '/v1/event-stream', id: 'StreamEvents', summary: 'Server-sent events: every domain event as it commits (host status/state, VMs, maintenance, jobs)', tag: 'Events', answer: 'stream' },
  { method: 'get', path: '/v1/console/overview', id: 'GetConsoleOverview', summary: 'Hosts by status and state, capacity per cluster, running jobs, latest events', tag: 'Console', answer: 'direct' },
  { method: 'get', path: '/v1/console/hosts/:uuid', id: 'GetConsoleHost', summary: 'A host\'s reserved memory and its source, usage, and latest events', tag: 'Console', answer: 'direct' },
];

const ERROR = {
  type: 'object', required: ['error'],
  properties: {
    error: {
      type: 'object', required: ['code', 'description'],
      properties: {
        code: { type: 'string', examples: ['SYS.1007', 'HOST.1001', 'ID.1001'] },
        description: { type: 'string' },
        details: { type: 'string', description: 'What is wrong, naming the field or the resource' },
      },
    },
  },
};

function jsonSchema(s: z.ZodType): object {
  const out = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

function queryParameters(): object[] {
  const p = (name: string, description: string, schema: object) => ({ name, in: 'query', required: false, description, schema });
  return [
    p('q', 'A condition: <field><op><value>, op one of = != > < >= <= ?= !?= ~= !~=, or "<field> is null" / "<field> not null"; repeat for AND', { type: 'array', items: { type: 'string' } }),
    p('limit', 'Rows at most', { type: 'integer', minimum: 0 }),
    p('start', 'Rows to skip', { type: 'integer', minimum: 0 }),
    p('count', 'true: only the total', { type: 'boolean' }),
    p('replyWithCount', 'true: the total beside the rows', { type: 'boolean' }),
    p('sort', '+field or -field', { type: 'string' }),
    p('fields', 'Comma list of inventory fields', { type: 'string' }),
  ];
}

function inventorySchema(res: ResourceSpec): object {
  const props: Record<string, object> = {};
  for (const f of res.inventoryFields) {
    const spec = res.fields[f];
    if (!spec) props[f] = {};
    else if (spec.type === 'date') props[f] = { type: 'string', description: 'As ZStack writes dates: "Jun 1, 2015 6:49:24 PM"' };
    else if (spec.values) props[f] = { type: 'string', enum: [...spec.values] };
    else props[f] = { type: spec.type === 'number' ? 'number' : spec.type };
  }
  return { type: 'object', properties: props, 'x-schema-class': res.schemaClass };
}

/** The document (built once per process: the schemas do not change while it runs). */
export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const schemas: Record<string, object> = { Error: ERROR };
  for (const op of OPERATIONS) {
    const path = `/zstack${op.path.replace(/:(\w+)/g, '{$1}')}`;
    const parameters: object[] = [...op.path.matchAll(/:(\w+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (op.answer === 'query') parameters.push(...queryParameters());
    for (const extra of op.params ?? []) parameters.push({ in: 'query', required: false, ...extra });
    const responses: Record<string, unknown> = {};
    const err = (d: string) => ({ description: d, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });
    if (op.answer === 'async') {
      parameters.push({ name: 'X-Job-UUID', in: 'header', required: false, description: '32 hex digits: the job id (a duplicate or malformed one is a 400)', schema: { type: 'string', pattern: '^[0-9a-f]{32}$' } });
      responses['202'] = { description: 'Accepted: poll the location (GET /v1/api-jobs/{uuid}); a refused operation fails its job with 503 and the ZStack error', content: { 'application/json': { schema: { type: 'object', required: ['location'], properties: { location: { type: 'string', format: 'uri' } } } } } };
      responses['400'] = err('Malformed JSON or header');
    } else if (op.answer === 'query') {
      const res = RESOURCES[op.resource!] as ResourceSpec;
      const name = `${op.resource![0]!.toUpperCase()}${op.resource!.slice(1)}Inventory`;
      schemas[name] = inventorySchema(res);
      responses['200'] = { description: 'Inventories', content: { 'application/json': { schema: { type: 'object', properties: { inventories: { type: 'array', items: { $ref: `#/components/schemas/${name}` } }, total: { type: 'integer' }, schema: { type: 'object', additionalProperties: { type: 'string' } } } } } } };
      responses['400'] = err('A bad condition, naming it');
      if (op.path.endsWith(':uuid')) responses['404'] = err('No such resource');
    } else if (op.answer === 'stream') {
      responses['200'] = { description: 'text/event-stream: one `data:` JSON event per line group', content: { 'text/event-stream': { schema: { type: 'string' } } } };
    } else {
      responses['200'] = { description: 'The answer', content: { 'application/json': { schema: { type: 'object' } } } };
      responses['404'] = err('No such resource');
    }
    if (op.id !== 'LogInByAccount' && op.id !== 'LogOut') responses['401'] = err('Missing or invalid session (ID.1001)');
    else if (op.id === 'LogInByAccount') responses['401'] = err('Wrong account name or password (ID.1000)');
    const o: Record<string, unknown> = { operationId: op.id, summary: op.summary, tags: [op.tag], parameters, responses };
    if (op.body) o.requestBody = { required: true, content: { 'application/json': { schema: jsonSchema(op.body) } } };
    if (op.id === 'LogInByAccount' || op.id === 'LogOut') o.security = [];
    (paths[path] ??= {})[op.method] = o;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Hostkeeper admin API', version: '1',
      description: 'ZStack\'s REST API v1 for the host subsystem. Creates, actions and deletes answer 202 with a job location; queries and login answer directly.',
    },
    servers: [{ url: '/' }],
    security: [{ OAuth: [] }],
    paths,
    components: {
      schemas,
      securitySchemes: { OAuth: { type: 'apiKey', in: 'header', name: 'Authorization', description: '"OAuth <session uuid>" from PUT /zstack/v1/accounts/login' } },
    },
  };
}

export function openApiRoutes(app: express.Express): void {
  let doc: string | undefined;
  app.get('/zstack/v1/openapi.json', (_req, res) => {
    doc ??= JSON.stringify(openApiDocument());
    res.status(200).type('application/json').send(doc);
  });
  app.get('/zstack/v1/api-reference', (_req, res) => {
    res.redirect(302, '/#/api');
  });
}
