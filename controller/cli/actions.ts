/**
 * The CLI's action table: every `hostkeeper <Action>` is one entry here, in zstack-cli's
 * names, mapped onto the REST API v1 calls of /work/shared/CONTRACT.md. Parsing, help and
 * request building (args.ts) read only this table, so adding an action is adding a row.
 */

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** A parsed argument value: text, an integer, or a comma list (for systemTags/userTags). */
export type Value = string | number | string[];
export type Values = Record<string, Value>;

export interface KeyDef {
  name: string;
  required?: boolean;
  /** `int`: sent as a JSON number; `list`: comma-separated, sent as a JSON array. Default text. */
  type?: 'string' | 'int' | 'list';
  /** Checked before any request is sent (a usage error, exit 2). */
  values?: readonly string[];
  /** Shown in help, not checked (the server is the judge, e.g. resource types). */
  hint?: string;
  /** Used when the key is not given. */
  default?: string;
  /**
   * Where the value travels: `path` (read by the path builder only), `query` (query string),
   * `top` (a top-level body field next to the envelope, like `systemTags`), `body` (inside
   * the envelope; the default).
   */
  in?: 'path' | 'query' | 'top' | 'body';
}

export interface PathContext {
  /** The stored session uuid, when there is one. */
  session?: string;
}

export interface ActionDef {
  name: string;
  method: Method;
  path: (v: Values, ctx: PathContext) => string;
  keys: readonly KeyDef[];
  /**
   * The body is `{ [envelope]: {<body keys>} , <top keys> }`: `params` for creates, the
   * uncapitalised action name for `PUT .../actions` (ZStack's convention). No envelope: no body.
   */
  envelope?: string;
  /** A query action: any other argument is a condition (`cpuNum>=4`), see args.ts. */
  query?: boolean;
  /** Default true: send `Authorization: OAuth <session>`. */
  auth?: boolean;
  /** Default true: follow a 202 `location` until the job ends. GetJob shows one look. */
  poll?: boolean;
  /** Session bookkeeping after the call. */
  session?: 'save' | 'drop';
}

const enc = encodeURIComponent;

const req = (name: string, extra: Omit<KeyDef, 'name' | 'required'> = {}): KeyDef => ({ name, required: true, ...extra });
const opt = (name: string, extra: Omit<KeyDef, 'name' | 'required'> = {}): KeyDef => ({ name, ...extra });
const uuidInPath = req('uuid', { in: 'path' });
/** ZStack's create APIs take tags beside `params`; zstack-cli writes them as comma lists. */
const tagKeys: KeyDef[] = [opt('systemTags', { type: 'list', in: 'top' }), opt('userTags', { type: 'list', in: 'top' })];
const deleteMode = opt('deleteMode', { values: ['Permissive', 'Enforcing'], in: 'query' });

/** Reserved query keys (not conditions). sortBy/sortDirection become REST `sort=+f|-f`. */
export const QUERY_KEYS: readonly KeyDef[] = [
  opt('limit', { type: 'int', in: 'query' }),
  opt('start', { type: 'int', in: 'query' }),
  opt('count', { values: ['true', 'false'], in: 'query' }),
  opt('replyWithCount', { values: ['true', 'false'], in: 'query' }),
  opt('sortBy', { in: 'query' }),
  opt('sortDirection', { values: ['asc', 'desc'], in: 'query' }),
  opt('fields', { hint: 'a,b', in: 'query' }),
];

function queryAction(name: string, resource: string): ActionDef {
  return { name, method: 'GET', path: () => `/v1/${resource}`, keys: QUERY_KEYS, query: true };
}

function deleteAction(name: string, resource: string): ActionDef {
  return { name, method: 'DELETE', path: (v) => `/v1/${resource}/${enc(String(v.uuid))}`, keys: [uuidInPath, deleteMode] };
}

function hostAction(name: string, envelope: string, keys: KeyDef[]): ActionDef {
  return {
    name,
    method: 'PUT',
    path: (v) => `/v1/hosts/${enc(String(v.uuid))}/actions`,
    keys: [uuidInPath, ...keys],
    envelope,
  };
}

function vmAction(name: string, envelope: string, keys: KeyDef[]): ActionDef {
  return { name, method: 'PUT', path: (v) => `/v1/vm-instances/${enc(String(v.uuid))}/actions`, keys: [uuidInPath, ...keys], envelope };
}

export const ACTIONS: readonly ActionDef[] = [
  {
    name: 'LogInByAccount',
    method: 'PUT',
    path: () => '/v1/accounts/login',
    keys: [req('accountName'), req('password')],
    envelope: 'logInByAccount',
    auth: false,
    session: 'save',
  },
  {
    name: 'LogOut',
    method: 'DELETE',
    path: (_v, ctx) => `/v1/accounts/sessions/${enc(ctx.session ?? '')}`,
    keys: [],
    session: 'drop',
  },
  {
    name: 'CreateZone',
    method: 'POST',
    path: () => '/v1/zones',
    keys: [req('name'), opt('description'), opt('resourceUuid'), ...tagKeys],
    envelope: 'params',
  },
  {
    name: 'CreateCluster',
    method: 'POST',
    path: () => '/v1/clusters',
    keys: [req('zoneUuid'), req('name'), opt('hypervisorType', { default: 'KVM', hint: 'KVM' }), opt('description'), opt('resourceUuid'), ...tagKeys],
    envelope: 'params',
  },
  {
    name: 'AddKVMHost',
    method: 'POST',
    path: () => '/v1/hosts/kvm',
    keys: [
      req('clusterUuid'),
      req('managementIp'),
      req('name'),
      req('username'),
      req('password'),
      opt('sshPort', { type: 'int' }),
      opt('description'),
      opt('resourceUuid'),
      ...tagKeys,
    ],
    envelope: 'params',
  },
  hostAction('ChangeHostState', 'changeHostState', [req('stateEvent', { values: ['enable', 'disable', 'maintain', 'preMaintain'] })]),
  hostAction('ReconnectHost', 'reconnectHost', []),
  hostAction('UpdateHost', 'updateHost', [opt('name'), opt('description'), opt('managementIp')]),
  deleteAction('DeleteHost', 'hosts'),
  deleteAction('DeleteCluster', 'clusters'),
  deleteAction('DeleteZone', 'zones'),
  queryAction('QueryZone', 'zones'),
  queryAction('QueryCluster', 'clusters'),
  queryAction('QueryHost', 'hosts'),
  queryAction('QueryVmInstance', 'vm-instances'),
  queryAction('QueryGlobalConfig', 'global-configurations'),
  queryAction('QuerySystemTag', 'system-tags'),
  queryAction('QueryUserTag', 'user-tags'),
  {
    name: 'UpdateGlobalConfig',
    method: 'PUT',
    path: (v) => `/v1/global-configurations/${enc(String(v.category))}/${enc(String(v.name))}/actions`,
    keys: [req('category', { in: 'path' }), req('name', { in: 'path' }), req('value')],
    envelope: 'updateGlobalConfig',
  },
  {
    name: 'CreateSystemTag',
    method: 'POST',
    path: () => '/v1/system-tags',
    keys: [req('resourceType', { hint: 'HostVO|ClusterVO|ZoneVO' }), req('resourceUuid'), req('tag')],
    envelope: 'params',
  },
  {
    name: 'CreateUserTag',
    method: 'POST',
    path: () => '/v1/user-tags',
    keys: [req('resourceType', { hint: 'HostVO|ClusterVO|ZoneVO' }), req('resourceUuid'), req('tag')],
    envelope: 'params',
  },
  {
    name: 'UpdateSystemTag',
    method: 'PUT',
    path: (v) => `/v1/system-tags/${enc(String(v.uuid))}/actions`,
    keys: [uuidInPath, req('tag')],
    envelope: 'updateSystemTag',
  },
  {
    name: 'DeleteTag',
    method: 'DELETE',
    path: (v) => `/v1/tags/${enc(String(v.uuid))}`,
    keys: [uuidInPath],
  },
  {
    name: 'CreateBootstrapToken',
    method: 'POST',
    path: () => '/v1/hosts/bootstrap-tokens',
    keys: [req('clusterUuid'), opt('ttlSeconds', { type: 'int' }), opt('maxUses', { type: 'int' })],
    envelope: 'params',
  },
  queryAction('QueryBootstrapToken', 'hosts/bootstrap-tokens'),
  {
    name: 'DeleteBootstrapToken',
    method: 'DELETE',
    path: (v) => `/v1/hosts/bootstrap-tokens/${enc(String(v.uuid))}`,
    keys: [uuidInPath],
  },
  {
    name: 'GetHostMaintenancePlan',
    method: 'GET',
    path: (v) => `/v1/hosts/${enc(String(v.uuid))}/maintenance-plan`,
    keys: [uuidInPath],
  },
  {
    name: 'CreateVmInstance',
    method: 'POST',
    path: () => '/v1/vm-instances',
    keys: [
      req('name'), req('memorySize', { type: 'int', hint: 'bytes' }), req('cpuNum', { type: 'int' }),
      opt('hostUuid'), opt('clusterUuid'), opt('zoneUuid'), opt('strategy', { values: ['InstantStart', 'CreateStopped'] }),
      opt('description'), opt('resourceUuid'),
    ],
    envelope: 'params',
  },
  vmAction('StartVmInstance', 'startVmInstance', []),
  vmAction('StopVmInstance', 'stopVmInstance', [opt('type', { values: ['grace', 'cold'] })]),
  vmAction('RebootVmInstance', 'rebootVmInstance', []),
  vmAction('MigrateVm', 'migrateVm', [opt('hostUuid')]),
  deleteAction('DestroyVmInstance', 'vm-instances'),
  {
    name: 'GetVmMigrationCandidateHosts',
    method: 'GET',
    path: (v) => `/v1/vm-instances/${enc(String(v.vmInstanceUuid ?? v.uuid))}/migration-target-hosts`,
    keys: [req('vmInstanceUuid', { in: 'path' })],
  },
  {
    name: 'CreateMaintenanceWindow',
    method: 'POST',
    path: () => '/v1/maintenance-windows',
    keys: [
      req('name'), req('hostUuids', { type: 'list' }), req('cron', { hint: '"m h dom mon dow"' }),
      req('durationMinutes', { type: 'int' }), opt('timeZone', { hint: 'e.g. Europe/Berlin' }),
    ],
    envelope: 'params',
  },
  queryAction('QueryMaintenanceWindow', 'maintenance-windows'),
  deleteAction('DeleteMaintenanceWindow', 'maintenance-windows'),
  {
    name: 'GetJob',
    method: 'GET',
    path: (v) => `/v1/api-jobs/${enc(String(v.uuid))}`,
    keys: [uuidInPath],
    poll: false,
  },
];

/** Exact name first; a case-insensitive match as a courtesy (`queryhost`). */
export function findAction(name: string): ActionDef | undefined {
  return ACTIONS.find((a) => a.name === name) ?? ACTIONS.find((a) => a.name.toLowerCase() === name.toLowerCase());
}
