/**
 * Request body schemas of the admin API (validated once, at the edge: STYLE.md 8). Objects
 * are strict: an unknown field is refused by name rather than silently dropped, so a typo
 * in a script shows up at once.
 */
import { z } from 'zod';
import { invalidArgument } from './errors.ts';
import { API_STATE_EVENTS } from './states.ts';
import { RESOURCE_TYPES } from './tags.ts';
import { isIPv4Address, isResourceName, UUID_RE } from './values.ts';

const name = z.string().min(1, 'must not be empty').max(255, 'must be at most 255 characters').refine(isResourceName, 'must not be blank or contain control characters');
const description = z.string().max(2048, 'must be at most 2048 characters');
const uuid = z.string().regex(UUID_RE, 'must be a uuid of 32 lowercase hex digits');
const tagList = z.array(z.string()).max(100, 'must hold at most 100 tags').optional();
const tagsAndOrigin = { systemTags: tagList, userTags: tagList };
/** Actions take no tags (ZStack's SDK may still send empty lists): a non-empty one is refused. */
const noTags = z.array(z.string()).max(0, 'is not taken by this call: tag the resource with CreateSystemTag/CreateUserTag').optional();
const noTagsAllowed = { systemTags: noTags, userTags: noTags };

export const LoginBody = z.strictObject({
  logInByAccount: z.strictObject({ accountName: z.string().min(1, 'must not be empty'), password: z.string().min(1, 'must not be empty') }),
});

export const CreateZoneBody = z.strictObject({
  params: z.strictObject({ name, description: description.optional(), resourceUuid: uuid.optional() }),
  ...tagsAndOrigin,
});

export const CreateClusterBody = z.strictObject({
  params: z.strictObject({
    zoneUuid: uuid, name, hypervisorType: z.enum(['KVM']), description: description.optional(), resourceUuid: uuid.optional(),
  }),
  ...tagsAndOrigin,
});

export const AddKvmHostBody = z.strictObject({
  params: z.strictObject({
    name,
    managementIp: z.string().min(1, 'must not be empty').max(253),
    clusterUuid: uuid,
    // A POSIX user name: it goes to ssh and into Ansible's inventory, where anything else
    // (spaces, quotes, {{ }}) would be a hazard.
    username: z.string().min(1, 'must not be empty').max(32).regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'must be a user name (letters, digits, _ . -; not starting with a digit, . or -)'),
    password: z.string().min(1, 'must not be empty').max(1024),
    sshPort: z.number().int('must be an integer').min(1, 'must be 1-65535').max(65535, 'must be 1-65535').optional(),
    description: description.optional(),
    resourceUuid: uuid.optional(),
  }),
  ...tagsAndOrigin,
});

/** The tag lists a host action body may carry beside its action. */
export const ActionTags = z.strictObject(noTagsAllowed);

export const HOST_ACTIONS = {
  changeHostState: z.strictObject({ stateEvent: z.enum(API_STATE_EVENTS) }),
  reconnectHost: z.strictObject({}),
  updateHost: z.strictObject({ name: name.optional(), description: description.optional(), managementIp: z.string().min(1).max(253).optional() }),
};

export const UpdateGlobalConfigBody = z.strictObject({
  updateGlobalConfig: z.strictObject({ value: z.string() }),
  ...noTagsAllowed,
});

export const CreateTagBody = z.strictObject({
  params: z.strictObject({ resourceType: z.enum(RESOURCE_TYPES), resourceUuid: uuid, tag: z.string() }),
  ...noTagsAllowed,
});

export const UpdateSystemTagBody = z.strictObject({
  updateSystemTag: z.strictObject({ tag: z.string() }),
  ...noTagsAllowed,
});

export const BootstrapTokenBody = z.strictObject({
  params: z.strictObject({
    clusterUuid: uuid,
    ttlSeconds: z.number().int('must be an integer').min(60, 'must be at least 60').max(30 * 24 * 3600, 'must be at most 30 days').optional(),
    /** Registrations allowed; absent: any number until the token expires. */
    maxUses: z.number().int('must be an integer').min(1, 'must be at least 1').max(100_000, 'must be at most 100000').optional(),
  }),
  ...noTagsAllowed,
});

/** Largest VM the API takes: 16 TiB of memory, 1,024 CPUs, 16 NICs (bounds, not a capacity check). */
export const VM_LIMITS = { memorySize: 16 * 1024 ** 4, cpuNum: 1024, nics: 16 } as const;

const vmNic = z.strictObject({
  ip: z.string().max(15).refine(isIPv4Address, 'must be an IPv4 address'),
  mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'must be a MAC address like 52:54:00:12:34:56 (lowercase hex)').optional(),
});

export const CreateVmBody = z.strictObject({
  params: z.strictObject({
    name,
    description: description.optional(),
    memorySize: z.number().int('must be an integer (bytes)').min(1024 ** 2, 'must be at least 1 MiB (bytes)').max(VM_LIMITS.memorySize, 'must be at most 16 TiB (bytes)'),
    cpuNum: z.number().int('must be an integer').min(1, 'must be at least 1').max(VM_LIMITS.cpuNum, `must be at most ${VM_LIMITS.cpuNum}`),
    hostUuid: uuid.optional(),
    clusterUuid: uuid.optional(),
    zoneUuid: uuid.optional(),
    strategy: z.enum(['InstantStart', 'CreateStopped']).optional(),
    vmNics: z.array(vmNic).max(VM_LIMITS.nics, `must hold at most ${VM_LIMITS.nics} NICs`).optional(),
    resourceUuid: uuid.optional(),
  }),
  ...noTagsAllowed,
});

export const VM_ACTIONS = {
  startVmInstance: z.strictObject({}),
  stopVmInstance: z.strictObject({ type: z.enum(['grace', 'cold']).optional() }),
  rebootVmInstance: z.strictObject({}),
  migrateVm: z.strictObject({ hostUuid: uuid.optional() }),
};

export const CreateMaintenanceWindowBody = z.strictObject({
  params: z.strictObject({
    name,
    hostUuids: z.array(uuid).min(1, 'must name at least one host').max(1000, 'must name at most 1000 hosts'),
    // Checked by node-cron at the service (protocol/ imports no npm package but zod).
    cron: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
    durationMinutes: z.number().int('must be an integer').min(1, 'must be at least 1').max(7 * 24 * 60, 'must be at most 10080 (a week)'),
    timeZone: z.string().min(1).max(64).optional(),
  }),
  ...noTagsAllowed,
});

export const DELETE_MODES = ['Permissive', 'Enforcing'] as const;

/**
 * A field name as a message shows it: as is when it is a plain name; quoted and escaped when it
 * is empty, blank or holds anything else (`"": unknown field`, not `: unknown field`; a newline
 * in a key must not start a new line in a log); cut at 64 characters (a 40,000-character key
 * is not echoed back).
 */
function fieldName(k: string): string {
  if (/^[\w$-]{1,64}$/.test(k)) return k;
  const cut = [...k].length > 64 ? `${[...k].slice(0, 64).join('')}...` : k;
  return JSON.stringify(cut);
}

/** One readable line from a zod failure, naming the field. */
export function describeIssue(issue: z.core.$ZodIssue, prefix = ''): string {
  const path = [prefix, ...issue.path.map((k) => (typeof k === 'number' ? String(k) : fieldName(String(k))))].filter(Boolean).join('.');
  const where = path || 'body';
  switch (issue.code) {
    case 'unrecognized_keys':
      return `${issue.keys.map((k) => (path ? `${path}.${fieldName(k)}` : fieldName(k))).join(', ')}: unknown field${issue.keys.length > 1 ? 's' : ''}`;
    case 'invalid_type':
      if (/received undefined/.test(issue.message)) return `${where} is required`;
      return `${where} must be ${issue.expected === 'object' ? 'an object' : `a ${issue.expected}`}`;
    case 'invalid_value':
      return `${where} must be one of ${issue.values.map(String).join(', ')}`;
    default:
      return `${where} ${issue.message}`;
  }
}

/** Parses `body` with `schema` or throws SYS.1007 naming the first bad field. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown, prefix = ''): z.infer<T> {
  const r = schema.safeParse(body);
  if (!r.success) throw invalidArgument(describeIssue(r.error.issues[0]!, prefix));
  return r.data;
}
