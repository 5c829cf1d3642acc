/**
 * Bad input to every API, table by table. Each case must be refused with the contract's
 * status (400 bad input, 404 unknown resource in the path, 413 oversize body, 409 state
 * conflict, 401 auth), a body that is exactly `{error:{code, description, details}}`, details
 * that name the culprit (field, parameter, header or resource), no stack trace, never a 5xx,
 * and the store exactly as it was before the request.
 *
 * Paths, bodies, headers and expected details are written with `{name}` placeholders
 * (`{host}`, `{zone}`, ...) because it.each tables are built before beforeAll has created the
 * resources; `fill()` swaps them for the fixture's uuids at run time.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncInherentTags } from '../../controller/services/tags.ts';
import { CONFIG_DEFS } from '../../protocol/configs.ts';
import type { ErrorCode } from '../../protocol/errors.ts';
import type { TagRow } from '../../protocol/resources.ts';
import { newUuid } from '../../protocol/values.ts';
import {
  ADMIN_PASSWORD, call, makeCluster, makeController, makeHost, makeZone, setStatus, storeImage, type TestController,
} from '../helpers.ts';

// ---- fixture ------------------------------------------------------------------------------

type Fixture = Record<string, string>;

interface Env {
  t: TestController;
  fx: Fixture;
}

/**
 * One controller per describe block, with:
 * zone (cluster with host, host2, host3), zone2 (empty), emptyCluster (in zone);
 * host: Enabled/Disconnected, with tags sysTag (reservedMemory::1G), userTag (rack-1),
 *   spareTag, spareTag2 (user tags) and inherentTag (os::distribution::Ubuntu);
 * host2: Maintenance/Connected; host3: Enabled/Connected;
 * usedJob: an X-Job-UUID already taken; unknown: a well-formed uuid of nothing.
 */
function useController(): Env {
  const env = {} as Env;
  beforeAll(async () => {
    const t = await makeController();
    const zone = await makeZone(t, 'zone1');
    const zone2 = await makeZone(t, 'zone2');
    const cluster = await makeCluster(t, zone.uuid, 'cluster1');
    const emptyCluster = await makeCluster(t, zone.uuid, 'empty');
    const host = await makeHost(t, cluster.uuid);
    const host2 = await makeHost(t, cluster.uuid);
    const host3 = await makeHost(t, cluster.uuid);

    await setStatus(t, host2.uuid, 'Connected');
    const m = await call(t, 'put', `/hosts/${host2.uuid}/actions`, { changeHostState: { stateEvent: 'maintain' } });
    if (m.status !== 200 || m.body.inventory.state !== 'Maintenance') throw new Error(`maintain: ${m.status} ${JSON.stringify(m.body)}`);
    await setStatus(t, host3.uuid, 'Connected');

    const tag = async (kind: 'system-tags' | 'user-tags', tagText: string) => {
      const r = await call(t, 'post', `/${kind}`, { params: { resourceType: 'HostVO', resourceUuid: host.uuid, tag: tagText } });
      if (r.status !== 200) throw new Error(`tag: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.inventory.uuid as string;
    };
    const sysTag = await tag('system-tags', 'reservedMemory::1G');
    const userTag = await tag('user-tags', 'rack-1');
    const spareTag = await tag('user-tags', 'spare-1');
    const spareTag2 = await tag('user-tags', 'spare-2');
    await t.core.repo.transaction((tx) => syncInherentTags(tx, host.uuid, ['os::distribution::Ubuntu', 'hvm::vmx'], t.clock.now()));
    const inherent = (await t.core.repo.find<TagRow>('tag', { resourceUuid: host.uuid, type: 'System' })).find(
      (r) => r.inherent && r.tag.startsWith('os::distribution::'),
    )!;

    const usedJob = newUuid();
    const j = await request(t.app).post('/zstack/v1/zones').set(t.auth).set('X-Job-UUID', usedJob).send({ params: { name: 'zone-job' } });
    if (j.status !== 202) throw new Error(`job: ${j.status} ${JSON.stringify(j.body)}`);

    const accountUuid = (await t.core.repo.all<{ uuid: string }>('account'))[0]!.uuid;
    const expiredSession = newUuid();
    await t.core.repo.transaction((tx) =>
      tx.insert('session', { uuid: expiredSession, accountUuid, expiredDate: t.clock.now() - 1, createDate: t.clock.now() - 7_200_001 }),
    );
    const out = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
    const loggedOut = out.body.inventory.uuid as string;
    await request(t.app).delete(`/zstack/v1/accounts/sessions/${loggedOut}`).set({ Authorization: `OAuth ${loggedOut}` });

    env.t = t;
    env.fx = {
      zone: zone.uuid, zone2: zone2.uuid, cluster: cluster.uuid, emptyCluster: emptyCluster.uuid,
      host: host.uuid, host2: host2.uuid, host3: host3.uuid, hostIp: host.managementIp, host2Ip: host2.managementIp,
      sysTag, userTag, spareTag, spareTag2, inherentTag: inherent.uuid, usedJob, unknown: newUuid(),
      hostUpper: host.uuid.toUpperCase(),
      hostDashed: `${host.uuid.slice(0, 8)}-${host.uuid.slice(8, 12)}-${host.uuid.slice(12, 16)}-${host.uuid.slice(16, 20)}-${host.uuid.slice(20)}`,
      host31: host.uuid.slice(0, 31),
      session: t.session, expiredSession, loggedOut,
    };
  });
  afterAll(async () => {
    await env.t?.close();
  });
  return env;
}

function fill<T>(v: T, fx: Fixture): T {
  if (typeof v === 'string') return v.replace(/\{(\w+)\}/g, (m, k: string) => fx[k] ?? m) as T;
  if (Array.isArray(v)) return v.map((x) => fill(x, fx)) as T;
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x, fx)])) as T;
  }
  return v;
}

// ---- one case -----------------------------------------------------------------------------

type Method = 'get' | 'post' | 'put' | 'delete';
type Pattern = string | RegExp;

interface Case {
  name: string;
  method: Method;
  /** After `/zstack/v1`, query string included. */
  path: string;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as is, with `contentType` (default application/json). */
  raw?: string;
  contentType?: string;
  headers?: Record<string, string>;
  /** The Authorization header instead of the admin session's; null sends none. */
  authorization?: string | null;
  status?: number;
  code?: ErrorCode;
  /** Substrings (with placeholders) or patterns the details must hold. */
  details: Pattern | Pattern[];
}

/** A stack frame or a source location in a response means an internal error leaked. */
const LEAK = / {4}at |\bat [^\s]+ \(|\.ts:\d|\.js:\d|node_modules/;

function send(env: Env, c: Case) {
  const { t, fx } = env;
  let req = request(t.app)[c.method](`/zstack/v1${fill(c.path, fx)}`);
  const auth = c.authorization === undefined ? t.auth.Authorization : c.authorization === null ? undefined : fill(c.authorization, fx);
  if (auth !== undefined) req = req.set('Authorization', auth);
  for (const [k, v] of Object.entries(c.headers ?? {})) req = req.set(k, fill(v, fx));
  if (c.raw !== undefined) return req.set('Content-Type', c.contentType ?? 'application/json').send(fill(c.raw, fx));
  if (c.body !== undefined) return req.send(fill(c.body, fx) as object);
  return req;
}

/**
 * Where a refusal must arrive (contract, "Where the error goes"): malformed JSON, an oversize
 * or unreadable body, a malformed job header, a missing session and an unknown API are refused
 * at once; queries, login and the bootstrap-token call answer directly; every other create,
 * action or delete answers 202 and its job fails with 503 and the error (ZStack's SDK reads
 * codes only from jobs).
 */
function refusedAtOnce(c: Case): boolean {
  if (c.method === 'get' || c.path.startsWith('/accounts/') || c.path.startsWith('/hosts/bootstrap-tokens')) return true;
  if (c.status === 401 || c.status === 413) return true;
  return [c.details].flat().some((p) => /JSON|header|X-Job-UUID|X-Web-Hook|unreadable|no API at/.test(String(p)));
}

async function expectRefused(env: Env, c: Case): Promise<void> {
  const { t, fx } = env;
  const before = await storeImage(t);
  let res = await send(env, c);
  // A request wrongly accepted may have started a background job: let it land before comparing.
  await t.core.jobs.drain();
  const atOnce = refusedAtOnce(c);
  if (!atOnce) {
    // Accepted, then the job carries the refusal.
    expect.soft(res.status, `202 first: ${res.text}`).toBe(202);
    if (res.status === 202) res = await request(t.app).get(new URL(res.body.location).pathname).set(t.auth);
  }
  const after = await storeImage(t);

  // Soft expectations: a wrongly accepted request shows its status, body and store change at once.
  expect.soft(res.status, `no 5xx but the job's 503: ${res.text}`).toBeLessThan(atOnce ? 500 : 504);
  expect.soft(res.status, res.text).toBe(atOnce ? c.status ?? 400 : 503);
  expect.soft(res.headers['content-type'] ?? '').toMatch(/application\/json/);
  expect.soft(res.text, 'no stack trace or source location').not.toMatch(LEAK);
  expect.soft(Object.keys(res.body ?? {}), res.text).toEqual(['error']);
  const e = (res.body?.error ?? {}) as Record<string, unknown>;
  expect.soft(Object.keys(e).sort(), res.text).toEqual(['code', 'description', 'details']);
  expect.soft(e.code, res.text).toBe(c.code ?? 'SYS.1007');
  expect.soft(typeof e.description === 'string' && e.description.length > 0, 'description is text').toBe(true);
  const details = typeof e.details === 'string' ? e.details : '';
  for (const p of [c.details].flat()) {
    if (typeof p === 'string') expect.soft(details, 'details name the culprit').toContain(fill(p, fx));
    else expect.soft(details, 'details name the culprit').toMatch(p);
  }
  // The failed job's own record aside (storeImage leaves jobs out), nothing changed.
  expect.soft(after, 'the store is unchanged').toBe(before);
}

// ---- shared values ------------------------------------------------------------------------

const long = (n: number) => 'x'.repeat(n);
const Q = (cond: string) => `q=${encodeURIComponent(cond)}`;
const UPPER = 'ABCDEF0123456789ABCDEF0123456789';
const DASHED = '0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d';
const SHORT = '0123456789abcdef0123456789abcde';

const HOST_PARAMS = { name: 'h-new', managementIp: '10.9.9.9', clusterUuid: '{cluster}', username: 'root', password: 'pw' };

/** Every API that takes a body, with a body it would accept and the field an empty body lacks. */
const BODY_APIS: { api: string; method: Method; path: string; valid: Record<string, unknown>; inner: string; missing: Pattern }[] = [
  { api: 'CreateZone', method: 'post', path: '/zones', valid: { params: { name: 'z-new' } }, inner: 'params', missing: 'params is required' },
  {
    api: 'CreateCluster', method: 'post', path: '/clusters', valid: { params: { zoneUuid: '{zone}', name: 'c-new', hypervisorType: 'KVM' } },
    inner: 'params', missing: 'params is required',
  },
  { api: 'AddKVMHost', method: 'post', path: '/hosts/kvm', valid: { params: HOST_PARAMS }, inner: 'params', missing: 'params is required' },
  {
    api: 'host action', method: 'put', path: '/hosts/{host}/actions', valid: { updateHost: { description: 'd' } },
    inner: 'updateHost', missing: /action/,
  },
  {
    api: 'CreateSystemTag', method: 'post', path: '/system-tags', valid: { params: { resourceType: 'HostVO', resourceUuid: '{host3}', tag: 'reservedMemory::2G' } },
    inner: 'params', missing: 'params is required',
  },
  {
    api: 'CreateUserTag', method: 'post', path: '/user-tags', valid: { params: { resourceType: 'HostVO', resourceUuid: '{host}', tag: 'u-new' } },
    inner: 'params', missing: 'params is required',
  },
  {
    api: 'UpdateSystemTag', method: 'put', path: '/system-tags/{sysTag}/actions', valid: { updateSystemTag: { tag: 'reservedMemory::3G' } },
    inner: 'updateSystemTag', missing: 'updateSystemTag is required',
  },
  {
    api: 'UpdateGlobalConfig', method: 'put', path: '/global-configurations/host/ping.interval/actions', valid: { updateGlobalConfig: { value: '30' } },
    inner: 'updateGlobalConfig', missing: 'updateGlobalConfig is required',
  },
  {
    api: 'LogInByAccount', method: 'put', path: '/accounts/login', valid: { logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } },
    inner: 'logInByAccount', missing: 'logInByAccount is required',
  },
];

const BAD_JSON = ['{bad json', '{"params":', "{'params':{}}", '{"params":{"name":"x"},}', '{"params":{"name":"x"}}}'];
const NOT_OBJECTS = ['[]', '[{"params":{"name":"x"}}]', '"text"', '42', 'true', 'null'];

// ---- bodies of every API ------------------------------------------------------------------

describe('request bodies of every API', () => {
  const env = useController();
  const cases: Case[] = [];
  for (const a of BODY_APIS) {
    const base = { method: a.method, path: a.path };
    for (const raw of BAD_JSON) cases.push({ ...base, name: `${a.api}: malformed JSON ${raw}`, raw, details: /body is not valid JSON/ });
    cases.push({ ...base, name: `${a.api}: form-encoded body`, raw: 'params[name]=x', contentType: 'application/x-www-form-urlencoded', details: /body is not valid JSON/ });
    cases.push({
      ...base, name: `${a.api}: JSON sent as text/plain is still checked`, raw: JSON.stringify({ ...a.valid, nope: 1 }), contentType: 'text/plain', details: /nope/,
    });
    for (const raw of NOT_OBJECTS) cases.push({ ...base, name: `${a.api}: body ${raw}`, raw, details: 'body must be an object' });
    cases.push({ ...base, name: `${a.api}: empty body`, raw: '', details: a.missing });
    cases.push({ ...base, name: `${a.api}: {}`, body: {}, details: a.missing });
    cases.push({ ...base, name: `${a.api}: unknown top-level field`, body: { ...a.valid, bogus: 1 }, details: 'bogus' });
    cases.push({
      ...base, name: `${a.api}: unknown field inside ${a.inner}`,
      body: { ...a.valid, [a.inner]: { ...(a.valid[a.inner] as object), bogus: 1 } }, details: `${a.inner}.bogus`,
    });
    cases.push({ ...base, name: `${a.api}: ${a.inner} is an array`, body: { ...a.valid, [a.inner]: [] }, details: a.inner });
    cases.push({ ...base, name: `${a.api}: ${a.inner} is a string`, body: { ...a.valid, [a.inner]: 'x' }, details: a.inner });
    cases.push({ ...base, name: `${a.api}: ${a.inner} is null`, body: { ...a.valid, [a.inner]: null }, details: a.inner });
    cases.push({ ...base, name: `${a.api}: systemTags is a string`, body: { ...a.valid, systemTags: 'x' }, details: 'systemTags' });
    cases.push({ ...base, name: `${a.api}: userTags holds a number`, body: { ...a.valid, userTags: [1] }, details: 'userTags' });
  }
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- zones and clusters -------------------------------------------------------------------

describe('CreateZone and CreateCluster', () => {
  const env = useController();
  const zone = (params: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ params: { name: 'z-new', ...params }, ...extra });
  const cluster = (params: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    params: { zoneUuid: '{zone}', name: 'c-new', hypervisorType: 'KVM', ...params }, ...extra,
  });
  const Z = (name: string, body: unknown, details: Pattern | Pattern[]): Case => ({ name: `zone: ${name}`, method: 'post', path: '/zones', body, details });
  const C = (name: string, body: unknown, details: Pattern | Pattern[]): Case => ({ name: `cluster: ${name}`, method: 'post', path: '/clusters', body, details });
  const noName = { params: {} };
  const cases: Case[] = [
    Z('name missing', noName, 'params.name is required'),
    Z('name empty', zone({ name: '' }), 'params.name'),
    Z('name 256 characters', zone({ name: long(256) }), /params\.name.*255/),
    Z('name is a number', zone({ name: 42 }), 'params.name'),
    Z('name is a boolean', zone({ name: true }), 'params.name'),
    Z('name is null', zone({ name: null }), 'params.name'),
    Z('name is an object', zone({ name: { a: 1 } }), 'params.name'),
    Z('description 2049 characters', zone({ description: long(2049) }), /params\.description.*2048/),
    Z('description is a number', zone({ description: 7 }), 'params.description'),
    Z('resourceUuid uppercase', zone({ resourceUuid: UPPER }), 'params.resourceUuid'),
    Z('resourceUuid with dashes', zone({ resourceUuid: DASHED }), 'params.resourceUuid'),
    Z('resourceUuid 31 characters', zone({ resourceUuid: SHORT }), 'params.resourceUuid'),
    Z('resourceUuid empty', zone({ resourceUuid: '' }), 'params.resourceUuid'),
    Z('resourceUuid is a number', zone({ resourceUuid: 1 }), 'params.resourceUuid'),
    Z('resourceUuid of an existing zone', zone({ resourceUuid: '{zone}' }), ['params.resourceUuid', '{zone}']),
    // ZStack keeps one uuid space for all resources (ResourceVO): a uuid is never reused across kinds.
    Z('resourceUuid of an existing host', zone({ resourceUuid: '{host}' }), ['params.resourceUuid', '{host}']),
    Z('unknown field in params', zone({ state: 'Disabled' }), 'params.state'),
    Z('uuid in params', zone({ uuid: '{unknown}' }), 'params.uuid'),
    Z('reservedMemory::1G (a HostVO tag) on a zone', zone({}, { systemTags: ['reservedMemory::1G'] }), [/systemTags\[0\]/, /HostVO/]),
    Z('host::reservedMemory::12Q', zone({}, { systemTags: ['host::reservedMemory::12Q'] }), [/systemTags\[0\]/, '12Q']),
    Z('host::reservedMemory::-1G', zone({}, { systemTags: ['host::reservedMemory::-1G'] }), [/systemTags\[0\]/, '-1G']),
    Z('host::reservedMemory:: (no size)', zone({}, { systemTags: ['host::reservedMemory::'] }), /systemTags\[0\]/),
    Z('os::distribution::Ubuntu (inherent)', zone({}, { systemTags: ['os::distribution::Ubuntu'] }), /systemTags\[0\].*controller/),
    Z('unknown system tag', zone({}, { systemTags: ['bogus::tag'] }), [/systemTags\[0\]/, /not a known system tag/]),
    Z('empty system tag', zone({}, { systemTags: [''] }), /systemTags\[0\]/),
    Z('a bad system tag after a good one', zone({}, { systemTags: ['host::reservedMemory::1G', 'nope'] }), /systemTags\[1\]/),
    Z('101 system tags', zone({}, { systemTags: Array.from({ length: 101 }, (_, i) => `t${i}`) }), /systemTags.*100/),
    Z('systemTags is an object', zone({}, { systemTags: { a: 1 } }), 'systemTags'),
    Z('userTags is a string', zone({}, { userTags: 'x' }), 'userTags'),
    Z('empty user tag', zone({}, { userTags: [''] }), 'userTags'),
    Z('user tag of 2049 characters', zone({}, { userTags: [long(2049)] }), 'userTags'),

    C('zoneUuid missing', { params: { name: 'c', hypervisorType: 'KVM' } }, 'params.zoneUuid is required'),
    C('zoneUuid uppercase', cluster({ zoneUuid: UPPER }), 'params.zoneUuid'),
    C('zoneUuid with dashes', cluster({ zoneUuid: DASHED }), 'params.zoneUuid'),
    C('zoneUuid 31 characters', cluster({ zoneUuid: SHORT }), 'params.zoneUuid'),
    C('zoneUuid empty', cluster({ zoneUuid: '' }), 'params.zoneUuid'),
    C('zoneUuid is a number', cluster({ zoneUuid: 5 }), 'params.zoneUuid'),
    C('zoneUuid of no zone', cluster({ zoneUuid: '{unknown}' }), ['params.zoneUuid', 'zone[uuid:{unknown}']),
    C('zoneUuid of a cluster', cluster({ zoneUuid: '{cluster}' }), ['params.zoneUuid', '{cluster}']),
    C('hypervisorType XEN', cluster({ hypervisorType: 'XEN' }), 'params.hypervisorType'),
    C('hypervisorType kvm (lower case)', cluster({ hypervisorType: 'kvm' }), 'params.hypervisorType'),
    C('hypervisorType empty', cluster({ hypervisorType: '' }), 'params.hypervisorType'),
    C('hypervisorType missing', { params: { zoneUuid: '{zone}', name: 'c' } }, 'params.hypervisorType'),
    C('hypervisorType is a number', cluster({ hypervisorType: 1 }), 'params.hypervisorType'),
    C('name missing', { params: { zoneUuid: '{zone}', hypervisorType: 'KVM' } }, 'params.name is required'),
    C('name empty', cluster({ name: '' }), 'params.name'),
    C('name 256 characters', cluster({ name: long(256) }), /params\.name.*255/),
    C('description 2049 characters', cluster({ description: long(2049) }), /params\.description.*2048/),
    C('resourceUuid of an existing cluster', cluster({ resourceUuid: '{cluster}' }), 'params.resourceUuid'),
    C('resourceUuid uppercase', cluster({ resourceUuid: UPPER }), 'params.resourceUuid'),
    C('unknown field in params', cluster({ type: 'zstack' }), 'params.type'),
    C('reservedMemory::1G (a HostVO tag) on a cluster', cluster({}, { systemTags: ['reservedMemory::1G'] }), [/systemTags\[0\]/, /HostVO/]),
    C('host::reservedMemory::12Q', cluster({}, { systemTags: ['host::reservedMemory::12Q'] }), /systemTags\[0\]/),
    C('hvm::vmx (inherent)', cluster({}, { systemTags: ['hvm::vmx'] }), /systemTags\[0\].*controller/),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- AddKVMHost ---------------------------------------------------------------------------

describe('AddKVMHost', () => {
  const env = useController();
  const H = (name: string, params: Record<string, unknown>, details: Pattern | Pattern[], extra: Record<string, unknown> = {}): Case => ({
    name, method: 'post', path: '/hosts/kvm', body: { params: { ...HOST_PARAMS, ...params }, ...extra }, details,
  });
  const without = (k: string): Case => {
    const params: Record<string, unknown> = { ...HOST_PARAMS };
    delete params[k];
    return { name: `${k} missing`, method: 'post', path: '/hosts/kvm', body: { params }, details: `params.${k} is required` };
  };
  const cases: Case[] = [
    ...['name', 'managementIp', 'clusterUuid', 'username', 'password'].map(without),
    ...['10.0.0.300', '1.2.3', '256.1.1.1', '10.0.0.1.', '-bad-.com', 'bad-.com', 'a b', ' 10.0.0.1', 'a_b.com', 'x..y', long(64) + '.com'].map(
      (ip) => H(`managementIp ${JSON.stringify(ip.length > 40 ? `${ip.slice(0, 10)}...` : ip)}`, { managementIp: ip }, 'params.managementIp'),
    ),
    H('managementIp empty', { managementIp: '' }, 'params.managementIp'),
    H('managementIp of 254 characters', { managementIp: `${'a.'.repeat(126)}ab` }, 'params.managementIp'),
    H('managementIp is a number', { managementIp: 10 }, 'params.managementIp'),
    H('managementIp is null', { managementIp: null }, 'params.managementIp'),
    H('managementIp is an array', { managementIp: ['10.0.0.1'] }, 'params.managementIp'),
    H('managementIp of an existing host', { managementIp: '{hostIp}' }, ['params.managementIp', '{hostIp}', 'host[uuid:{host}']),
    H('clusterUuid of no cluster', { clusterUuid: '{unknown}' }, ['params.clusterUuid', 'cluster[uuid:{unknown}']),
    H('clusterUuid of a zone', { clusterUuid: '{zone}' }, ['params.clusterUuid', '{zone}']),
    H('clusterUuid uppercase', { clusterUuid: UPPER }, 'params.clusterUuid'),
    H('clusterUuid with dashes', { clusterUuid: DASHED }, 'params.clusterUuid'),
    H('clusterUuid 31 characters', { clusterUuid: SHORT }, 'params.clusterUuid'),
    H('clusterUuid empty', { clusterUuid: '' }, 'params.clusterUuid'),
    H('sshPort "22" (string)', { sshPort: '22' }, 'params.sshPort'),
    H('sshPort true', { sshPort: true }, 'params.sshPort'),
    H('sshPort null', { sshPort: null }, 'params.sshPort'),
    H('sshPort 0', { sshPort: 0 }, 'params.sshPort'),
    H('sshPort -1', { sshPort: -1 }, 'params.sshPort'),
    H('sshPort 65536', { sshPort: 65536 }, 'params.sshPort'),
    H('sshPort 22.5', { sshPort: 22.5 }, 'params.sshPort'),
    H('name empty', { name: '' }, 'params.name'),
    H('name 256 characters', { name: long(256) }, /params\.name.*255/),
    H('name is a number', { name: 1 }, 'params.name'),
    H('description 2049 characters', { description: long(2049) }, /params\.description.*2048/),
    H('username empty', { username: '' }, 'params.username'),
    H('username is a number', { username: 0 }, 'params.username'),
    H('username 65 characters', { username: long(65) }, 'params.username'),
    H('password empty', { password: '' }, 'params.password'),
    H('password is a number', { password: 1234 }, 'params.password'),
    H('password is a boolean', { password: false }, 'params.password'),
    H('resourceUuid uppercase', { resourceUuid: UPPER }, 'params.resourceUuid'),
    H('resourceUuid of an existing host', { resourceUuid: '{host}' }, 'params.resourceUuid'),
    H('hypervisorType in params (unknown field)', { hypervisorType: 'KVM' }, 'params.hypervisorType'),
    H('zoneUuid in params (unknown field)', { zoneUuid: '{zone}' }, 'params.zoneUuid'),
    H('host::reservedMemory::1G (a zone/cluster tag) on a host', {}, [/systemTags\[0\]/, /ZoneVO|ClusterVO/], { systemTags: ['host::reservedMemory::1G'] }),
    H('reservedMemory::12Q', {}, [/systemTags\[0\]/, '12Q'], { systemTags: ['reservedMemory::12Q'] }),
    H('reservedMemory::-1G', {}, [/systemTags\[0\]/, '-1G'], { systemTags: ['reservedMemory::-1G'] }),
    H('reservedMemory:: (no size)', {}, /systemTags\[0\]/, { systemTags: ['reservedMemory::'] }),
    H('reservedMemory::1.5G', {}, /systemTags\[0\]/, { systemTags: ['reservedMemory::1.5G'] }),
    H('os::distribution::Ubuntu (inherent)', {}, /systemTags\[0\].*controller/, { systemTags: ['os::distribution::Ubuntu'] }),
    H('hvm::vmx (inherent)', {}, /systemTags\[0\].*controller/, { systemTags: ['hvm::vmx'] }),
    H('capability:liveSnapshot (inherent)', {}, /systemTags\[0\].*controller/, { systemTags: ['capability:liveSnapshot'] }),
    H('unknown system tag', {}, [/systemTags\[0\]/, /not a known system tag/], { systemTags: ['cpu::pinning::on'] }),
    H('two reservedMemory tags', {}, /reservedMemory/, { systemTags: ['reservedMemory::1G', 'reservedMemory::2G'] }),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- host actions -------------------------------------------------------------------------

describe('host actions (PUT /hosts/{uuid}/actions)', () => {
  const env = useController();
  const A = (name: string, body: unknown, details: Pattern | Pattern[], path = '/hosts/{host}/actions', status = 400): Case => ({
    name, method: 'put', path, body, details, status,
  });
  const cases: Case[] = [
    A('stateEvent reboot', { changeHostState: { stateEvent: 'reboot' } }, 'changeHostState.stateEvent'),
    A('stateEvent Enable (wrong case)', { changeHostState: { stateEvent: 'Enable' } }, 'changeHostState.stateEvent'),
    A('stateEvent empty', { changeHostState: { stateEvent: '' } }, 'changeHostState.stateEvent'),
    A('stateEvent is a number', { changeHostState: { stateEvent: 1 } }, 'changeHostState.stateEvent'),
    A('stateEvent is an array', { changeHostState: { stateEvent: ['enable'] } }, 'changeHostState.stateEvent'),
    A('stateEvent missing', { changeHostState: {} }, 'changeHostState.stateEvent'),
    A('changeHostState is a string', { changeHostState: 'enable' }, 'changeHostState'),
    A('changeHostState is null', { changeHostState: null }, 'changeHostState'),
    A('unknown field in changeHostState', { changeHostState: { stateEvent: 'enable', force: true } }, 'changeHostState.force'),
    A('two actions', { changeHostState: { stateEvent: 'enable' }, updateHost: { name: 'n' } }, 'got changeHostState, updateHost'),
    A('unknown action', { rebootHost: {} }, 'rebootHost'),
    A('action name in the wrong case', { ChangeHostState: { stateEvent: 'enable' } }, 'ChangeHostState'),
    A('reconnectHost with a field', { reconnectHost: { force: true } }, 'reconnectHost.force'),
    A('reconnectHost is a boolean', { reconnectHost: true }, 'reconnectHost'),
    A('updateHost name empty', { updateHost: { name: '' } }, 'updateHost.name'),
    A('updateHost name 256 characters', { updateHost: { name: long(256) } }, /updateHost\.name.*255/),
    A('updateHost name is a number', { updateHost: { name: 3 } }, 'updateHost.name'),
    A('updateHost description 2049 characters', { updateHost: { description: long(2049) } }, /updateHost\.description.*2048/),
    ...['10.0.0.300', '1.2.3', '-bad-.com', 'a b', ''].map((ip) =>
      A(`updateHost managementIp ${JSON.stringify(ip)}`, { updateHost: { managementIp: ip } }, 'updateHost.managementIp')),
    A('updateHost managementIp is a number', { updateHost: { managementIp: 10 } }, 'updateHost.managementIp'),
    A('updateHost managementIp of another host', { updateHost: { managementIp: '{host2Ip}' } }, ['updateHost.managementIp', '{host2Ip}', 'host[uuid:{host2}']),
    A('updateHost uuid (unknown field)', { updateHost: { uuid: '{unknown}' } }, 'updateHost.uuid'),
    A('updateHost username (unknown field)', { updateHost: { username: 'root' } }, 'updateHost.username'),
    A('updateHost clusterUuid (unknown field)', { updateHost: { clusterUuid: '{emptyCluster}' } }, 'updateHost.clusterUuid'),
    A('updateHost state (unknown field)', { updateHost: { state: 'Disabled' } }, 'updateHost.state'),
    // systemTags/userTags travel with every API message: when present they must be checked, not dropped.
    A('systemTags is a number', { updateHost: { description: 'd' }, systemTags: 5 }, 'systemTags'),
    A('systemTags with a bad size', { changeHostState: { stateEvent: 'disable' }, systemTags: ['reservedMemory::12Q'] }, 'systemTags'),
    A('userTags is an object', { updateHost: { description: 'd' }, userTags: { a: 1 } }, 'userTags'),
    A('host uuid uppercase', { changeHostState: { stateEvent: 'disable' } }, 'host[uuid:{hostUpper}', '/hosts/{hostUpper}/actions', 404),
    A('host uuid with dashes', { changeHostState: { stateEvent: 'disable' } }, 'host[uuid:{hostDashed}', '/hosts/{hostDashed}/actions', 404),
    A('host uuid 31 characters', { changeHostState: { stateEvent: 'disable' } }, 'host[uuid:{host31}', '/hosts/{host31}/actions', 404),
    A('unknown host', { changeHostState: { stateEvent: 'disable' } }, 'host[uuid:{unknown}', '/hosts/{unknown}/actions', 404),
    A('a zone uuid as host', { updateHost: { name: 'n' } }, 'host[uuid:{zone}', '/hosts/{zone}/actions', 404),
    A('oversize body', { updateHost: { description: long(300 * 1024) } }, /body.*256/, '/hosts/{host}/actions', 413),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- tags ---------------------------------------------------------------------------------

describe('system and user tags', () => {
  const env = useController();
  const S = (name: string, params: Record<string, unknown>, details: Pattern | Pattern[]): Case => ({
    name: `system tag: ${name}`, method: 'post', path: '/system-tags',
    body: { params: { resourceType: 'HostVO', resourceUuid: '{host3}', tag: 'reservedMemory::2G', ...params } }, details,
  });
  const U = (name: string, params: Record<string, unknown>, details: Pattern | Pattern[]): Case => ({
    name: `user tag: ${name}`, method: 'post', path: '/user-tags',
    body: { params: { resourceType: 'HostVO', resourceUuid: '{host3}', tag: 'u-new', ...params } }, details,
  });
  const P = (name: string, path: string, body: unknown, details: Pattern | Pattern[], status = 400, code: ErrorCode = 'SYS.1007'): Case => ({
    name: `update system tag: ${name}`, method: 'put', path, body, details, status, code,
  });
  const D = (name: string, path: string, details: Pattern | Pattern[], status = 400, code: ErrorCode = 'SYS.1007'): Case => ({
    name: `delete tag: ${name}`, method: 'delete', path, details, status, code,
  });
  const sysPath = '/system-tags/{sysTag}/actions';
  const cases: Case[] = [
    S('resourceType VmInstanceVO', { resourceType: 'VmInstanceVO' }, 'params.resourceType'),
    S('resourceType hostvo (wrong case)', { resourceType: 'hostvo' }, 'params.resourceType'),
    S('resourceType missing', { resourceType: undefined }, 'params.resourceType'),
    S('resourceType is a number', { resourceType: 1 }, 'params.resourceType'),
    S('resourceUuid of no host', { resourceUuid: '{unknown}' }, ['resourceUuid', 'HostVO[uuid:{unknown}']),
    S('resourceUuid of a zone with resourceType HostVO', { resourceUuid: '{zone}' }, ['resourceUuid', '{zone}']),
    S('resourceUuid uppercase', { resourceUuid: UPPER }, 'params.resourceUuid'),
    S('resourceUuid with dashes', { resourceUuid: DASHED }, 'params.resourceUuid'),
    S('resourceUuid 31 characters', { resourceUuid: SHORT }, 'params.resourceUuid'),
    S('resourceUuid missing', { resourceUuid: undefined }, 'params.resourceUuid is required'),
    S('tag missing', { tag: undefined }, 'params.tag is required'),
    S('tag empty', { tag: '' }, /tag/),
    S('tag is a number', { tag: 42 }, 'params.tag'),
    S('tag of 2049 characters', { tag: `reservedMemory::${'1'.repeat(2033)}` }, [/tag/, /2048/]),
    S('reservedMemory::1G on a ZoneVO', { resourceType: 'ZoneVO', resourceUuid: '{zone}', tag: 'reservedMemory::1G' }, [/tag\[reservedMemory::1G\]/, /HostVO/, /ZoneVO/]),
    S('reservedMemory::1G on a ClusterVO', { resourceType: 'ClusterVO', resourceUuid: '{cluster}', tag: 'reservedMemory::1G' }, [/tag\[/, /ClusterVO/]),
    S('host::reservedMemory::1G on a HostVO', { tag: 'host::reservedMemory::1G' }, [/tag\[host::reservedMemory::1G\]/, /HostVO/]),
    S('reservedMemory::12Q', { tag: 'reservedMemory::12Q' }, [/tag\[reservedMemory::12Q\]/, '12Q']),
    S('reservedMemory::-1G', { tag: 'reservedMemory::-1G' }, [/tag\[reservedMemory::-1G\]/]),
    S('reservedMemory:: (no size)', { tag: 'reservedMemory::' }, [/tag\[reservedMemory::\]/]),
    S('reservedMemory::1 G B', { tag: 'reservedMemory::1 G B' }, [/tag\[/]),
    S('host::reservedMemory::12Q on a zone', { resourceType: 'ZoneVO', resourceUuid: '{zone}', tag: 'host::reservedMemory::12Q' }, [/tag\[/, '12Q']),
    S('os::distribution::Ubuntu (inherent)', { tag: 'os::distribution::Ubuntu' }, [/tag\[os::distribution::Ubuntu\]/, /controller/]),
    S('os::release::22.04 (inherent)', { tag: 'os::release::22.04' }, [/tag\[/, /controller/]),
    S('libvirt::version::8.0.0 (inherent)', { tag: 'libvirt::version::8.0.0' }, [/tag\[/, /controller/]),
    S('qemu-img::version::6.2 (inherent)', { tag: 'qemu-img::version::6.2' }, [/tag\[/, /controller/]),
    S('hvm::vmx (inherent)', { tag: 'hvm::vmx' }, [/tag\[hvm::vmx\]/, /controller/]),
    S('capability:liveSnapshot (inherent)', { tag: 'capability:liveSnapshot' }, [/tag\[/, /controller/]),
    S('hvm::xyz (unknown)', { tag: 'hvm::xyz' }, [/tag\[hvm::xyz\]/, /not a known system tag/]),
    S('unknown system tag', { tag: 'bogus::tag' }, [/tag\[bogus::tag\]/, /not a known system tag/]),
    S('a second reservedMemory tag on a host', { resourceUuid: '{host}', tag: 'reservedMemory::2G' }, [/already has tag\[reservedMemory::1G\]/, '{host}']),
    S('unknown field in params', { type: 'System' }, 'params.type'),
    S('inherent in params', { inherent: true }, 'params.inherent'),

    U('resourceType VmInstanceVO', { resourceType: 'VmInstanceVO' }, 'params.resourceType'),
    U('resourceUuid of no host', { resourceUuid: '{unknown}' }, ['resourceUuid', '{unknown}']),
    U('resourceUuid of a cluster with resourceType ZoneVO', { resourceType: 'ZoneVO', resourceUuid: '{cluster}' }, ['resourceUuid', '{cluster}']),
    U('resourceUuid uppercase', { resourceUuid: UPPER }, 'params.resourceUuid'),
    U('tag empty', { tag: '' }, /tag/),
    U('tag of 2049 characters', { tag: long(2049) }, [/tag/, /2048/]),
    U('tag is null', { tag: null }, 'params.tag'),
    U('a user tag the resource already has', { resourceUuid: '{host}', tag: 'rack-1' }, [/rack-1/, '{host}']),

    P('reservedMemory::12Q', sysPath, { updateSystemTag: { tag: 'reservedMemory::12Q' } }, [/tag\[reservedMemory::12Q\]/]),
    P('reservedMemory::-1G', sysPath, { updateSystemTag: { tag: 'reservedMemory::-1G' } }, [/tag\[reservedMemory::-1G\]/]),
    P('host::reservedMemory::1G on a HostVO', sysPath, { updateSystemTag: { tag: 'host::reservedMemory::1G' } }, [/tag\[host::reservedMemory::1G\]/, /HostVO/]),
    P('os::distribution::Debian (inherent)', sysPath, { updateSystemTag: { tag: 'os::distribution::Debian' } }, [/tag\[os::distribution::Debian\]/, /controller/]),
    P('unknown system tag', sysPath, { updateSystemTag: { tag: 'bogus' } }, [/tag\[bogus\]/]),
    P('tag empty', sysPath, { updateSystemTag: { tag: '' } }, /tag/),
    P('tag is a number', sysPath, { updateSystemTag: { tag: 1 } }, 'updateSystemTag.tag'),
    P('tag missing', sysPath, { updateSystemTag: {} }, 'updateSystemTag.tag is required'),
    P('unknown system tag uuid', '/system-tags/{unknown}/actions', { updateSystemTag: { tag: 'reservedMemory::2G' } }, 'tag[uuid:{unknown}', 404),
    P('a user tag uuid', '/system-tags/{userTag}/actions', { updateSystemTag: { tag: 'reservedMemory::2G' } }, 'tag[uuid:{userTag}', 404),
    P('tag uuid uppercase', '/system-tags/ABCDEF0123456789ABCDEF0123456789/actions', { updateSystemTag: { tag: 'reservedMemory::2G' } }, 'tag[uuid:ABCDEF', 404),
    P('an inherent tag', '/system-tags/{inherentTag}/actions', { updateSystemTag: { tag: 'os::distribution::Debian' } }, 'tag[uuid:{inherentTag}', 409, 'SYS.1006'),

    D('deleteMode Soft', '/tags/{spareTag}?deleteMode=Soft', 'deleteMode'),
    D('unknown query parameter', '/tags/{spareTag2}?foo=1', 'foo'),
    D('unknown tag uuid', '/tags/{unknown}', 'tag[uuid:{unknown}', 404),
    D('tag uuid with dashes', `/tags/${DASHED}`, `tag[uuid:${DASHED}`, 404),
    D('tag uuid 31 characters', `/tags/${SHORT}`, `tag[uuid:${SHORT}`, 404),
    D('an inherent tag', '/tags/{inherentTag}', ['tag[uuid:{inherentTag}', 'os::distribution::Ubuntu'], 409, 'SYS.1006'),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- global configurations ----------------------------------------------------------------

/** Out-of-range values for each of the fifteen configs. */
const BAD_CONFIG_VALUES: Record<string, string[]> = {
  'host/load.all': ['yes', 'TRUE', '1', '', ' true'],
  'host/load.parallelismDegree': ['0', '-1', '1.5', 'abc', ''],
  'host/ping.interval': ['0', '-1', '1.5', 'abc', '', '1e3', '30s', '99999999999999999999'],
  'host/ping.timeout': ['0', '-5', 'abc', '0x10'],
  'host/ping.parallelismDegree': ['0', 'ten', '2.0'],
  'host/connection.autoReconnectOnError': ['yes', 'no', 'False'],
  'host/maintenanceMode.ignoreError': ['on', '0'],
  'hostAllocator/reservedCapacity.zoneLevel': ['yes', 'null'],
  'hostAllocator/reservedCapacity.clusterLevel': ['False', ''],
  'hostAllocator/reservedCapacity.hostLevel': ['1', 'TRUE'],
  'kvm/vm.migrationQuantity': ['0', '-1', '2.5', 'two'],
  'kvm/reservedMemory': ['1X', '-1', '-1G', '', 'G', '1.5G', '12Q', '1GB', '1 G B'],
  'kvm/dataVolume.maxNum': ['25', '-1', '1.5', 'abc', '100'],
  'kvm/host.syncLevel': ['2', '1', '0', '-3', 'abc', '2.5'],
  'host/cpu.overProvisioning.ratio': ['0', '1001', '1.5', 'x'],
};

describe('UpdateGlobalConfig', () => {
  const env = useController();
  it('covers every one of the fifteen configs', () => {
    expect(Object.keys(BAD_CONFIG_VALUES).sort()).toEqual(CONFIG_DEFS.map((d) => `${d.category}/${d.name}`).sort());
    expect(CONFIG_DEFS).toHaveLength(15);
  });
  const put = (key: string) => `/global-configurations/${key}/actions`;
  const cases: Case[] = [];
  for (const [key, values] of Object.entries(BAD_CONFIG_VALUES)) {
    const def = CONFIG_DEFS.find((d) => `${d.category}/${d.name}` === key)!;
    for (const v of values) {
      cases.push({
        name: `${key} = ${JSON.stringify(v)}`, method: 'put', path: put(key), body: { updateGlobalConfig: { value: v } },
        // Names the value, the config and the rule it breaks.
        details: [`value[${v}]`, key, def.rule],
      });
    }
  }
  const P = (name: string, path: string, body: unknown, details: Pattern | Pattern[], status = 400): Case => ({ name, method: 'put', path, body, details, status });
  cases.push(
    P('value is a number', put('host/ping.interval'), { updateGlobalConfig: { value: 30 } }, 'updateGlobalConfig.value'),
    P('value is a boolean', put('host/load.all'), { updateGlobalConfig: { value: true } }, 'updateGlobalConfig.value'),
    P('value is null', put('kvm/reservedMemory'), { updateGlobalConfig: { value: null } }, 'updateGlobalConfig.value'),
    P('value missing', put('host/ping.interval'), { updateGlobalConfig: {} }, 'updateGlobalConfig.value is required'),
    P('unknown field next to value', put('host/ping.interval'), { updateGlobalConfig: { value: '30', name: 'ping.interval' } }, 'updateGlobalConfig.name'),
    P('unknown category', put('bogus/ping.interval'), { updateGlobalConfig: { value: '30' } }, ['category:bogus', 'ping.interval'], 404),
    P('unknown name', put('host/ping.bogus'), { updateGlobalConfig: { value: '30' } }, ['host', 'name:ping.bogus'], 404),
    P('name under the wrong category', put('kvm/ping.interval'), { updateGlobalConfig: { value: '30' } }, ['category:kvm', 'ping.interval'], 404),
    P('category in the wrong case', put('Host/ping.interval'), { updateGlobalConfig: { value: '30' } }, 'category:Host', 404),
    P('oversize body', put('host/ping.interval'), { updateGlobalConfig: { value: '1'.repeat(300 * 1024) } }, /body.*256/, 413),
  );
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- queries ------------------------------------------------------------------------------

const QUERY_PATHS = ['zones', 'clusters', 'hosts', 'vm-instances', 'system-tags', 'user-tags', 'global-configurations'];

describe('queries', () => {
  const env = useController();
  const G = (name: string, path: string, details: Pattern | Pattern[], status = 400): Case => ({ name, method: 'get', path, details, status });
  const cases: Case[] = [];
  for (const p of QUERY_PATHS) {
    cases.push(
      G(`${p}: unknown field`, `/${p}?${Q('bogus=1')}`, 'field[bogus]'),
      G(`${p}: unknown field with is null`, `/${p}?${Q('bogus is null')}`, 'field[bogus]'),
      G(`${p}: condition without an operator`, `/${p}?q=name`, 'condition[name]'),
      G(`${p}: empty condition`, `/${p}?q=`, 'condition[]'),
      G(`${p}: limit=-1`, `/${p}?limit=-1`, 'limit[-1]'),
      G(`${p}: limit=abc`, `/${p}?limit=abc`, 'limit[abc]'),
      G(`${p}: limit=1.5`, `/${p}?limit=1.5`, 'limit[1.5]'),
      G(`${p}: limit too large for an integer`, `/${p}?limit=99999999999999999999`, 'limit['),
      G(`${p}: limit given twice`, `/${p}?limit=1&limit=2`, 'limit'),
      G(`${p}: start=-1`, `/${p}?start=-1`, 'start[-1]'),
      G(`${p}: count=yes`, `/${p}?count=yes`, 'count[yes]'),
      G(`${p}: replyWithCount=1`, `/${p}?replyWithCount=1`, 'replyWithCount[1]'),
      G(`${p}: sort=+nope`, `/${p}?sort=+nope`, [/sort\[/, /nope/]),
      G(`${p}: sort=-nope`, `/${p}?sort=-nope`, 'sort[-nope]'),
      G(`${p}: sort=%2Bnope`, `/${p}?sort=%2Bnope`, 'sort[+nope]'),
      G(`${p}: sort on two fields`, `/${p}?sort=${encodeURIComponent('+name,-uuid')}`, 'sort['),
      G(`${p}: fields=nope`, `/${p}?fields=nope`, [/fields/, /\[nope\]/]),
      G(`${p}: fields=<good>,nope`, `/${p}?fields=${p === 'global-configurations' ? 'name' : 'uuid'},nope`, [/fields/, /\[nope\]/]),
      G(`${p}: fields=,`, `/${p}?fields=,`, 'fields'),
      G(`${p}: unknown query parameter`, `/${p}?foo=1`, 'query parameter[foo]'),
      G(`${p}: q[] (bracket syntax)`, `/${p}?${encodeURIComponent('q[]')}=name%3Dx`, 'query parameter[q[]]'),
      // Field names are looked up in the catalogue only: Object.prototype's names are not fields.
      G(`${p}: field constructor`, `/${p}?${Q('constructor=1')}`, 'field[constructor]'),
      G(`${p}: field __proto__`, `/${p}?${Q('__proto__=1')}`, 'field[__proto__]'),
      G(`${p}: field toString`, `/${p}?${Q('toString=x')}`, 'field[toString]'),
      G(`${p}: sort=constructor`, `/${p}?sort=constructor`, 'sort[constructor]'),
    );
  }
  cases.push(
    G('hosts: unknown nested field', `/hosts?${Q('vmInstance.bogus=1')}`, 'field[vmInstance.bogus]'),
    G('hosts: unknown zone field', `/hosts?${Q('zone.bogus=1')}`, 'field[zone.bogus]'),
    G('hosts: unknown nested list field', `/hosts?${Q('vmInstance.vmNics.bogus=1')}`, 'field[vmInstance.vmNics.bogus]'),
    G('hosts: nested list under zone', `/hosts?${Q('zone.vmNics.ip=1')}`, 'field[zone.vmNics.ip]'),
    G('hosts: unknown prefix', `/hosts?${Q('vm.name=x')}`, 'field[vm.name]'),
    G('hosts: nested constructor', `/hosts?${Q('constructor.name=x')}`, 'field[constructor.name]'),
    G('hosts: nested field constructor', `/hosts?${Q('zone.constructor=x')}`, 'field[zone.constructor]'),
    G('hosts: number field with text', `/hosts?${Q('cpuNum>abc')}`, ['field[cpuNum]', 'abc']),
    G('hosts: number field with empty value', `/hosts?${Q('cpuNum=')}`, 'field[cpuNum]'),
    G('hosts: number list with text', `/hosts?${Q('cpuNum?=1,two')}`, ['field[cpuNum]', 'two']),
    G('hosts: bad date', `/hosts?${Q('createDate>yesterday')}`, ['field[createDate]', 'yesterday']),
    G('hosts: date with a bad month', `/hosts?${Q('createDate>2026-13-01')}`, 'field[createDate]'),
    G('hosts: ZStack date with a bad hour', `/hosts?${Q('lastOpDate<Jun 1, 2015 13:49:24 PM')}`, 'field[lastOpDate]'),
    G('hosts: unknown state', `/hosts?${Q('state=Bogus')}`, ['field[state]', 'Bogus']),
    G('hosts: unknown status in a list', `/hosts?${Q('status?=Connected,Gone')}`, ['field[status]', 'Gone']),
    G('hosts: hypervisorType XEN', `/hosts?${Q('hypervisorType=XEN')}`, ['field[hypervisorType]', 'XEN']),
    G('hosts: like on a number field', `/hosts?${Q('cpuNum~=1%')}`, ['operator[~=]', 'cpuNum']),
    G('hosts: fields with a nested field', `/hosts?fields=zone.name`, /zone\.name/),
    G('hosts: unknown field on a uuid', `/hosts/{host}?${Q('bogus=1')}`, 'field[bogus]'),
    G('vm-instances: number field with a size', `/vm-instances?${Q('memorySize>1G')}`, ['field[memorySize]', '1G']),
    G('vm-instances: unknown NIC field', `/vm-instances?${Q('vmNics.bogus=1')}`, 'field[vmNics.bogus]'),
    G('vm-instances: NIC field constructor', `/vm-instances?${Q('vmNics.constructor=1')}`, 'field[vmNics.constructor]'),
    G('vm-instances: unknown state', `/vm-instances?${Q('state=Sleeping')}`, ['field[state]', 'Sleeping']),
    G('system-tags: comparison on a boolean', `/system-tags?${Q('inherent>true')}`, ['operator[>]', 'inherent']),
    G('system-tags: boolean with yes', `/system-tags?${Q('inherent=yes')}`, ['field[inherent]', 'yes']),
    G('system-tags: resourceType VmInstanceVO', `/system-tags?${Q('resourceType=VmInstanceVO')}`, ['field[resourceType]', 'VmInstanceVO']),
    G('user-tags: type Bogus', `/user-tags?${Q('type=Bogus')}`, ['field[type]', 'Bogus']),
    G('zones: state Bogus', `/zones?${Q('state=Bogus')}`, ['field[state]', 'Bogus']),
  );
  // Unknown or malformed uuids in the path of a single-resource GET.
  for (const p of QUERY_PATHS.filter((x) => x !== 'global-configurations')) {
    cases.push(
      G(`${p}/<unknown uuid>`, `/${p}/{unknown}`, `${p}[uuid:{unknown}`, 404),
      G(`${p}/<uppercase uuid>`, `/${p}/{hostUpper}`, `${p}[uuid:{hostUpper}`, 404),
      G(`${p}/<dashed uuid>`, `/${p}/{hostDashed}`, `${p}[uuid:{hostDashed}`, 404),
    );
  }
  cases.push(
    G('hosts/<zone uuid>', '/hosts/{zone}', 'hosts[uuid:{zone}', 404),
    G('zones/<host uuid>', '/zones/{host}', 'zones[uuid:{host}', 404),
    G('system-tags/<user tag uuid>', '/system-tags/{userTag}', 'system-tags[uuid:{userTag}', 404),
    G('user-tags/<system tag uuid>', '/user-tags/{sysTag}', 'user-tags[uuid:{sysTag}', 404),
    G('api-jobs/<unknown>', '/api-jobs/{unknown}', 'job[uuid:{unknown}', 404),
    G('api-jobs/<malformed>', '/api-jobs/not-a-job', 'job[uuid:not-a-job', 404),
    G('unknown API', '/hosts-and-more', /no API at GET/, 404),
  );
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- headers ------------------------------------------------------------------------------

/** Async calls that would succeed with good headers (checked by the last describe block). */
const ASYNC_CALLS: { api: string; method: Method; path: string; body?: unknown }[] = [
  { api: 'CreateZone', method: 'post', path: '/zones', body: { params: { name: 'hz' } } },
  { api: 'CreateCluster', method: 'post', path: '/clusters', body: { params: { zoneUuid: '{zone}', name: 'hc', hypervisorType: 'KVM' } } },
  { api: 'AddKVMHost', method: 'post', path: '/hosts/kvm', body: { params: { ...HOST_PARAMS, managementIp: '10.8.8.8' } } },
  { api: 'ChangeHostState disable', method: 'put', path: '/hosts/{host}/actions', body: { changeHostState: { stateEvent: 'disable' } } },
  { api: 'ChangeHostState maintain', method: 'put', path: '/hosts/{host3}/actions', body: { changeHostState: { stateEvent: 'maintain' } } },
  { api: 'UpdateHost', method: 'put', path: '/hosts/{host}/actions', body: { updateHost: { description: 'd' } } },
  { api: 'UpdateGlobalConfig', method: 'put', path: '/global-configurations/host/ping.interval/actions', body: { updateGlobalConfig: { value: '30' } } },
  { api: 'CreateSystemTag', method: 'post', path: '/system-tags', body: { params: { resourceType: 'HostVO', resourceUuid: '{host3}', tag: 'reservedMemory::2G' } } },
  { api: 'CreateUserTag', method: 'post', path: '/user-tags', body: { params: { resourceType: 'HostVO', resourceUuid: '{host3}', tag: 'hu' } } },
  { api: 'UpdateSystemTag', method: 'put', path: '/system-tags/{sysTag}/actions', body: { updateSystemTag: { tag: 'reservedMemory::3G' } } },
  { api: 'DeleteTag', method: 'delete', path: '/tags/{spareTag}' },
  { api: 'DeleteHost', method: 'delete', path: '/hosts/{host}' },
  { api: 'DeleteCluster', method: 'delete', path: '/clusters/{emptyCluster}' },
  { api: 'DeleteZone', method: 'delete', path: '/zones/{zone2}' },
];

const BAD_HEADERS: { what: string; headers: Record<string, string>; details: Pattern | Pattern[] }[] = [
  { what: 'X-Job-UUID not a uuid', headers: { 'X-Job-UUID': 'not-a-uuid' }, details: 'X-Job-UUID[not-a-uuid]' },
  { what: 'X-Job-UUID uppercase', headers: { 'X-Job-UUID': UPPER }, details: `X-Job-UUID[${UPPER}]` },
  { what: 'X-Job-UUID with dashes', headers: { 'X-Job-UUID': DASHED }, details: `X-Job-UUID[${DASHED}]` },
  { what: 'X-Job-UUID 31 characters', headers: { 'X-Job-UUID': SHORT }, details: `X-Job-UUID[${SHORT}]` },
  { what: 'X-Job-UUID empty', headers: { 'X-Job-UUID': '' }, details: 'X-Job-UUID' },
  { what: 'X-Job-UUID already used', headers: { 'X-Job-UUID': '{usedJob}' }, details: ['X-Job-UUID[{usedJob}]', /already/] },
  { what: 'X-Web-Hook not a URL', headers: { 'X-Web-Hook': 'not a url' }, details: 'X-Web-Hook[not a url]' },
  { what: 'X-Web-Hook ftp URL', headers: { 'X-Web-Hook': 'ftp://example.com/hook' }, details: 'X-Web-Hook[ftp://example.com/hook]' },
  { what: 'X-Web-Hook without a scheme', headers: { 'X-Web-Hook': 'example.com/hook' }, details: 'X-Web-Hook[example.com/hook]' },
];

describe('X-Job-UUID and X-Web-Hook', () => {
  const env = useController();
  const cases: Case[] = [];
  const calls = [
    ...ASYNC_CALLS,
    // reconnectHost is refused by design for now (no agent channel), but a bad header is bad input first.
    { api: 'ReconnectHost', method: 'put' as const, path: '/hosts/{host3}/actions', body: { reconnectHost: {} } },
  ];
  for (const a of calls) {
    for (const h of BAD_HEADERS) {
      cases.push({ name: `${a.api}: ${h.what}`, method: a.method, path: a.path, body: a.body, headers: h.headers, details: h.details });
    }
  }
  it.each(cases)('$name', async (c) => expectRefused(env, c));

  it('queries ignore a malformed X-Job-UUID', async () => {
    const r = await request(env.t.app).get('/zstack/v1/zones').set(env.t.auth).set('X-Job-UUID', 'not-a-uuid');
    expect(r.status).toBe(200);
  });
});

// ---- unknown resources, delete modes, oversize bodies -------------------------------------

describe('unknown resources, delete modes and oversize bodies', () => {
  const env = useController();
  const D = (name: string, path: string, details: Pattern | Pattern[], status = 400): Case => ({ name, method: 'delete', path, details, status });
  const cases: Case[] = [];
  for (const [p, what] of [['zones', 'zone'], ['clusters', 'cluster'], ['hosts', 'host']] as const) {
    cases.push(
      D(`DELETE ${p}/<unknown uuid>`, `/${p}/{unknown}`, `${what}[uuid:{unknown}`, 404),
      D(`DELETE ${p}/<uppercase uuid>`, `/${p}/{hostUpper}`, `${what}[uuid:{hostUpper}`, 404),
      D(`DELETE ${p}/<dashed uuid>`, `/${p}/{hostDashed}`, `${what}[uuid:{hostDashed}`, 404),
      D(`DELETE ${p}/<31-digit uuid>`, `/${p}/{host31}`, `${what}[uuid:{host31}`, 404),
    );
  }
  cases.push(
    D('DELETE hosts/<zone uuid>', '/hosts/{zone}', 'host[uuid:{zone}', 404),
    D('DELETE zones/<cluster uuid>', '/zones/{cluster}', 'zone[uuid:{cluster}', 404),
    D('DELETE host deleteMode=Soft', '/hosts/{host}?deleteMode=Soft', 'deleteMode[Soft]'),
    D('DELETE host deleteMode=permissive (wrong case)', '/hosts/{host}?deleteMode=permissive', 'deleteMode[permissive]'),
    D('DELETE host deleteMode empty', '/hosts/{host}?deleteMode=', 'deleteMode[]'),
    D('DELETE host deleteMode twice', '/hosts/{host}?deleteMode=Enforcing&deleteMode=Permissive', 'deleteMode'),
    D('DELETE zone deleteMode=Soft', '/zones/{zone2}?deleteMode=Soft', 'deleteMode[Soft]'),
    D('DELETE cluster deleteMode=Hard', '/clusters/{emptyCluster}?deleteMode=Hard', 'deleteMode[Hard]'),
    D('DELETE host unknown query parameter', '/hosts/{host}?force=true', 'query parameter[force]'),
    D('DELETE zone unknown query parameter', '/zones/{zone2}?foo=1', 'query parameter[foo]'),
    { name: 'unknown API', method: 'post', path: '/bogus', body: {}, details: /no API at POST/, status: 404 },
    { name: 'PUT on a zone (no such action)', method: 'put', path: '/zones/{zone}/actions', body: { changeZoneState: { stateEvent: 'disable' } }, details: /no API at PUT/, status: 404 },
  );
  // Oversize bodies (> 256 kb): 413 before anything else, also without a session.
  const big = long(300 * 1024);
  cases.push(
    { name: 'oversize CreateZone', method: 'post', path: '/zones', body: { params: { name: 'z', description: big } }, details: /body.*256kb/, status: 413 },
    { name: 'oversize AddKVMHost', method: 'post', path: '/hosts/kvm', body: { params: { ...HOST_PARAMS, description: big } }, details: /body.*256kb/, status: 413 },
    { name: 'oversize CreateSystemTag', method: 'post', path: '/system-tags', body: { params: { resourceType: 'HostVO', resourceUuid: '{host}', tag: big } }, details: /body.*256kb/, status: 413 },
    { name: 'oversize login', method: 'put', path: '/accounts/login', body: { logInByAccount: { accountName: 'admin', password: big } }, details: /body.*256kb/, status: 413, authorization: null },
    { name: 'oversize malformed JSON', method: 'post', path: '/zones', raw: `{${big}`, details: /body.*256kb/, status: 413 },
    // Just under the limit it is an ordinary too-long field.
    { name: 'description of 200 kb (under the body limit)', method: 'post', path: '/zones', body: { params: { name: 'z', description: long(200 * 1024) } }, details: /params\.description.*2048/ },
  );
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- state conflicts ----------------------------------------------------------------------

describe('operations not allowed in the current state (409)', () => {
  const env = useController();
  const S = (name: string, method: Method, path: string, code: ErrorCode, details: Pattern[], body?: unknown): Case => ({
    name, method, path, body, code, details, status: 409,
  });
  const cases: Case[] = [
    S('delete a zone with hosts (default Permissive)', 'delete', '/zones/{zone}', 'SYS.1004', ['zone[uuid:{zone}', /host/]),
    S('delete a zone with hosts, Permissive', 'delete', '/zones/{zone}?deleteMode=Permissive', 'SYS.1004', ['zone[uuid:{zone}']),
    S('delete a cluster with hosts (default Permissive)', 'delete', '/clusters/{cluster}', 'SYS.1004', ['cluster[uuid:{cluster}', /host/]),
    S('delete a cluster with hosts, Permissive', 'delete', '/clusters/{cluster}?deleteMode=Permissive', 'SYS.1004', ['cluster[uuid:{cluster}']),
    S('maintain a Disconnected host', 'put', '/hosts/{host}/actions', 'SYS.1006', ['host[uuid:{host}', /not Connected|status:Disconnected/], { changeHostState: { stateEvent: 'maintain' } }),
    S('preMaintain a Disconnected host', 'put', '/hosts/{host}/actions', 'SYS.1006', ['host[uuid:{host}', /not Connected|status:Disconnected/], { changeHostState: { stateEvent: 'preMaintain' } }),
    S('maintain a host in Maintenance', 'put', '/hosts/{host2}/actions', 'SYS.1005', ['host[uuid:{host2}', 'state:Maintenance', /event\[(pre)?[mM]aintain\]/], { changeHostState: { stateEvent: 'maintain' } }),
    S('preMaintain a host in Maintenance', 'put', '/hosts/{host2}/actions', 'SYS.1005', ['host[uuid:{host2}', 'state:Maintenance', /event\[preMaintain\]/], { changeHostState: { stateEvent: 'preMaintain' } }),
    S('delete an inherent tag', 'delete', '/tags/{inherentTag}', 'SYS.1006', ['tag[uuid:{inherentTag}']),
    S('update an inherent tag', 'put', '/system-tags/{inherentTag}/actions', 'SYS.1006', ['tag[uuid:{inherentTag}'], { updateSystemTag: { tag: 'os::distribution::Debian' } }),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- sessions -----------------------------------------------------------------------------

describe('sessions and login', () => {
  const env = useController();
  const N = (name: string, method: Method, path: string, authorization: string | null, details: Pattern | Pattern[], body?: unknown): Case => ({
    name, method, path, body, authorization, details, status: 401, code: 'ID.1001',
  });
  const L = (name: string, body: unknown, details: Pattern | Pattern[], status = 400, code: ErrorCode = 'SYS.1007'): Case => ({
    name: `login: ${name}`, method: 'put', path: '/accounts/login', body, details, status, code, authorization: null,
  });
  const login = (over: Record<string, unknown>) => ({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD, ...over } });
  const cases: Case[] = [
    N('query without a session', 'get', '/zones', null, 'Authorization'),
    N('create without a session', 'post', '/zones', null, 'Authorization', { params: { name: 'z' } }),
    N('delete without a session', 'delete', '/zones/{zone2}', null, 'Authorization'),
    N('action without a session', 'put', '/hosts/{host}/actions', null, 'Authorization', { changeHostState: { stateEvent: 'disable' } }),
    N('config update without a session', 'put', '/global-configurations/host/ping.interval/actions', null, 'Authorization', { updateGlobalConfig: { value: '30' } }),
    N('job without a session', 'get', '/api-jobs/{usedJob}', null, 'Authorization'),
    N('unknown session', 'get', '/zones', 'OAuth {unknown}', 'session[uuid:{unknown}'),
    N('malformed session', 'get', '/hosts', 'OAuth not-a-session', 'session[uuid:not-a-session'),
    N('expired session', 'post', '/zones', 'OAuth {expiredSession}', 'session[uuid:{expiredSession}', { params: { name: 'z' } }),
    N('logged-out session', 'delete', '/zones/{zone2}', 'OAuth {loggedOut}', 'session[uuid:{loggedOut}'),
    N('Bearer instead of OAuth', 'get', '/zones', 'Bearer {session}', 'Authorization'),
    N('OAuth without a session', 'get', '/zones', 'OAuth', 'Authorization'),
    N('session without a scheme', 'get', '/zones', '{session}', 'Authorization'),
    L('wrong password', login({ password: 'wrong' }), 'password', 401, 'ID.1000'),
    L('SHA-512 digest of a wrong password', login({ password: 'f'.repeat(128) }), 'password', 401, 'ID.1000'),
    L('unknown account', login({ accountName: 'root' }), /account/, 401, 'ID.1000'),
    L('account name in the wrong case', login({ accountName: 'Admin' }), /account/, 401, 'ID.1000'),
    L('password empty', login({ password: '' }), 'logInByAccount.password'),
    L('password is a number', login({ password: 1234 }), 'logInByAccount.password'),
    L('password missing', { logInByAccount: { accountName: 'admin' } }, 'logInByAccount.password is required'),
    L('accountName missing', { logInByAccount: { password: ADMIN_PASSWORD } }, 'logInByAccount.accountName is required'),
    L('accountName empty', login({ accountName: '' }), 'logInByAccount.accountName'),
    L('unknown field', login({ domain: 'x' }), 'logInByAccount.domain'),
    L('ZStack v2 shape (logInByUser)', { logInByUser: { userName: 'admin', password: ADMIN_PASSWORD } }, 'logInByAccount'),
  ];
  it.each(cases)('$name', async (c) => expectRefused(env, c));
});

// ---- the header cases' calls are good without the bad header -----------------------------

describe('the calls used with bad headers succeed with good ones', () => {
  const env = useController();
  it('every async call above is accepted with a fresh X-Job-UUID and a good web hook', async () => {
    // The hook target is never reached in tests (delivery is best effort); only its form is checked.
    for (const a of ASYNC_CALLS) {
      let req = request(env.t.app)[a.method](`/zstack/v1${fill(a.path, env.fx)}`).set(env.t.auth).set('X-Job-UUID', newUuid())
        .set('X-Web-Hook', 'http://127.0.0.1:9/hook');
      if (a.body !== undefined) req = req.send(fill(a.body, env.fx) as object);
      const r = await req;
      expect(r.status, `${a.api}: ${r.text}`).toBe(202);
      await env.t.core.jobs.drain();
      const final = await request(env.t.app).get(new URL(r.body.location).pathname).set(env.t.auth);
      // AddKVMHost is accepted, then its deployment fails at the SSH login: the test
      // controller's SSH is a fake that refuses (no test reaches for a real host).
      if (a.api === 'AddKVMHost') expect(final.body.error?.details, final.text).toMatch(/step ssh-login failed/);
      else expect(final.status, `${a.api}: ${final.text}`).toBe(200);
    }
  });
});
