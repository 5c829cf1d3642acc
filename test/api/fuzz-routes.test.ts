/**
 * Seeded fuzzing of every route of the admin API (issue 9: "every route's bodies"). The routes
 * come from the code, not from a list kept here: controller/api/openapi.ts OPERATIONS, which
 * test/console/edges.test.ts holds equal to what express serves. For each case one route is
 * drawn and sent random path parameters (uuids of rows that exist, of nothing, and garbage),
 * query parameters and, where the route takes one, a body: a body the route's own zod schema
 * would accept (via its JSON Schema), then broken (a leaf swapped for a wrong type, a huge or
 * unicode string, a number out of range, a field dropped or added, an array for an object,
 * nesting), or random JSON, or bytes that are not JSON.
 *
 * What must hold for every case (contract, ../shared/CONTRACT.md):
 * - no 5xx, but a job's 503 (the asynchronous routes answer 202 and the job carries the
 *   refusal); never an internal error (SYS.1000), at once or in a job;
 * - an error answer is `{error:{code, description, details}}`, its details name something the
 *   request sent or the resource concerned;
 * - no stack trace or source location in any answer;
 * - a refused request (4xx at once, or a job that failed) changes nothing in the store
 *   (every kind but sessions and jobs, whose own records are the refusal).
 *
 * Seeded: FUZZ_SEED (default below) and FUZZ_ROUTE_CASES (default 1,500: 5-15 s here); a failure
 * prints the seed and the case number with the request, so `FUZZ_SEED=<seed>` reproduces it.
 * `npm run fuzz:long` runs many more.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { prng } from '../../bench/seed.ts';
import { OPERATIONS, type Operation } from '../../controller/api/openapi.ts';
import { KIND_NAMES } from '../../controller/store/schema.ts';
import { type Kind, RESOURCES } from '../../protocol/resources.ts';
import { newUuid } from '../../protocol/values.ts';
import { ADMIN_PASSWORD, call, makeCluster, makeController, makeHost, makeZone, setStatus, type TestController } from '../helpers.ts';

const CASES = Number(process.env.FUZZ_ROUTE_CASES ?? 1500);
const SEED = Number(process.env.FUZZ_SEED ?? 20261128);

type Rnd = () => number;
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const pick = <T>(r: Rnd, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const times = (r: Rnd, max: number) => Math.floor(r() * (max + 1));

/** A stack frame or a source location in an answer means an internal error leaked. */
const LEAK = / {4}at |\bat [^\s]+ \(|\.ts:\d|\.js:\d|node_modules/;

// ---- random values --------------------------------------------------------------------------

const STRINGS = [
  '', ' ', '   ', 'x', 'Enabled', 'KVM', 'HostVO', 'true', 'null', '0', '-1', '1e309', '10.0.0.1', '127.0.0.1', 'localhost',
  '0x7f.0.0.1', '::1', '::ffff:10.0.0.1', '256.1.1.1', '0.0.0.0', 'a\nb', 'a\u0000b', '\u001b[2J', 'é', '\u{1F600}', '\u202e',
  '%', '%x%', '../../etc/passwd', '<script>', "'; DROP TABLE host; --", '{"a":1}', '__proto__', 'constructor',
  '*/5 * * * *', '0 2 * * *', '* * * * * * *', 'reservedMemory::1G', 'host::reservedMemory::2G', '1 G', '5 ', '1\n',
  'os::distribution::x', 'keepHostOnFailure', 'Jun 1, 2015 6:49:24 PM', '2024-01-01T00:00:00Z', 'ABCDEF0123456789ABCDEF0123456789',
  '0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d', 'grace', 'cold', 'maintain', 'enable', 'disable', 'preMaintain', 'Permissive', 'Enforcing',
];
const NUMBERS = [0, -0, 1, -1, 2, 7, 22, 24, 65535, 65536, 2147483647, 2147483648, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1.5, 1e308, -1e308, 5e-324];
const KEYS = ['params', 'name', 'uuid', 'value', 'tag', '__proto__', 'constructor', 'prototype', 'toString', 'systemTags', 'userTags', 'bogus', '', ' ', 'é'];

function randomString(r: Rnd, pool: string[]): string {
  const roll = r();
  if (roll < 0.08) return 'x'.repeat(pick(r, [254, 255, 256, 2048, 2049, 40_000]));
  if (roll < 0.12) return pick(r, ['é', '\u{1F600}', '\u0000', '\n', 'x']).repeat(times(r, 300));
  if (roll < 0.3 && pool.length) return pick(r, pool);
  if (roll < 0.4) return newUuid();
  return pick(r, STRINGS);
}

function randomJson(r: Rnd, pool: string[], depth = 0): Json {
  const roll = r();
  if (depth > 3 || roll < 0.45) {
    const k = r();
    if (k < 0.1) return null;
    if (k < 0.2) return r() < 0.5;
    if (k < 0.45) return pick(r, NUMBERS);
    return randomString(r, pool);
  }
  if (roll < 0.6) return Array.from({ length: times(r, 4) }, () => randomJson(r, pool, depth + 1));
  if (roll < 0.62) return Array.from({ length: 2000 }, () => 1);
  const o: Record<string, Json> = {};
  for (let i = times(r, 4); i > 0; i--) o[pick(r, KEYS)] = randomJson(r, pool, depth + 1);
  return o;
}

/** For failure messages: runs of one character shortened, the whole cut at 600 characters. */
const clip = (s: string) => s.replace(/(.)\1{15,}/gsu, (m, c: string) => `${c}{x${[...m].length}}`).slice(0, 600);

// ---- bodies from the route's own schema --------------------------------------------------------

type Schema = Record<string, any>;

/** A value `s` (JSON Schema from the route's zod schema) would accept, as far as a schema says. */
function fromSchema(r: Rnd, s: Schema, pool: string[], key = ''): Json {
  if (!s || typeof s !== 'object') return null;
  if (s.anyOf || s.oneOf) return fromSchema(r, pick(r, (s.anyOf ?? s.oneOf) as Schema[]), pool, key);
  if (s.allOf) return fromSchema(r, s.allOf[0], pool, key);
  if (s.enum) return pick(r, s.enum as Json[]);
  if (s.const !== undefined) return s.const as Json;
  const type = Array.isArray(s.type) ? pick(r, s.type as string[]) : s.type;
  switch (type) {
    case 'object': {
      const o: Record<string, Json> = {};
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const required = new Set<string>(s.required ?? []);
      for (const [k, sub] of Object.entries(props)) if (required.has(k) || r() < 0.5) o[k] = fromSchema(r, sub, pool, k);
      return o;
    }
    case 'array': {
      const n = Math.min(s.maxItems ?? 3, Math.max(s.minItems ?? 0, times(r, 3)));
      return Array.from({ length: n }, () => fromSchema(r, s.items ?? {}, pool, key));
    }
    case 'integer':
    case 'number': {
      const lo = s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : 0);
      const hi = s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum - 1 : lo + 1000);
      return Math.min(hi, lo + times(r, Math.min(1000, Math.max(0, hi - lo))));
    }
    case 'boolean':
      return r() < 0.5;
    case 'null':
      return null;
    case 'string': {
      if (/uuid/i.test(key) && pool.length) return pick(r, pool);
      if (/ip$/i.test(key)) return `127.0.${200 + times(r, 9)}.${1 + times(r, 250)}`;
      if (key === 'cron') return pick(r, ['0 2 * * *', '*/5 * * * *']);
      return `${key || 's'}-${times(r, 999)}`;
    }
    default:
      return randomJson(r, pool, 2);
  }
}

/** Every path to a leaf (or sub-object) of `v`. */
function paths(v: Json, at: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

/** `v` with one to three breakages: a wrong value, a field dropped or added, a wrapping. */
function mutate(r: Rnd, v: Json, pool: string[]): Json {
  let out = structuredClone(v);
  for (let n = 1 + times(r, 2); n > 0; n--) {
    const all = paths(out);
    const p = pick(r, all);
    const roll = r();
    if (p.length === 0) {
      if (roll < 0.3) out = [out];
      else if (roll < 0.5) out = { wrapped: out };
      else out = randomJson(r, pool);
      continue;
    }
    const parent = p.slice(0, -1).reduce<any>((o, k) => o[k], out);
    const last = p[p.length - 1]!;
    if (roll < 0.55) parent[last] = randomJson(r, pool);
    else if (roll < 0.7 && !Array.isArray(parent)) delete parent[last];
    else if (roll < 0.85 && parent && typeof parent === 'object' && !Array.isArray(parent)) parent[pick(r, KEYS)] = randomJson(r, pool);
    else parent[last] = [parent[last]];
  }
  return out;
}

const RAW = ['{bad json', '{"params":', '[', '"', 'null', '42', '[]', '{"a":1}}', '\u0000', '{"params":{"name":"x"},}', '\u00ff\u00fe'];

// ---- the store, before and after -------------------------------------------------------------

/**
 * Every kind but sessions and jobs, and every event but those of jobs (a refused asynchronous
 * call's own record is its job and the job's JobStarted/JobFailed events).
 */
const IMAGE_KINDS = KIND_NAMES.filter((k) => k !== 'session' && k !== 'job');
async function image(t: TestController): Promise<string> {
  const out: Record<string, unknown> = {};
  for (const k of IMAGE_KINDS) {
    const rows = await t.core.repo.all<{ uuid: string; resourceType?: string }>(k);
    out[k] = k === 'event' ? rows.filter((e) => e.resourceType !== 'ApiJob') : rows;
  }
  return JSON.stringify(out);
}

/** Which kinds differ between two images, with the first differing row of each. */
function changed(before: string, after: string): string {
  const a = JSON.parse(before) as Record<string, unknown[]>;
  const b = JSON.parse(after) as Record<string, unknown[]>;
  return Object.keys(b).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).map((k) => {
    const was = new Set((a[k] ?? []).map((x) => JSON.stringify(x)));
    const now = new Set((b[k] ?? []).map((x) => JSON.stringify(x)));
    return `${k}: -${[...was].filter((x) => !now.has(x)).slice(0, 1)} +${[...now].filter((x) => !was.has(x)).slice(0, 1)}`;
  }).join('; ');
}

/** Resource kind behind a path like /v1/hosts/:uuid (from RESOURCES' paths), for real uuids. */
function kindOfPath(path: string): Kind | undefined {
  const rest = path.replace(/^\/v1\//, '');
  let best: { kind: Kind; len: number } | undefined;
  for (const res of Object.values(RESOURCES)) {
    if (rest.startsWith(`${res.path}/`) && (!best || res.path.length > best.len)) best = { kind: res.kind, len: res.path.length };
  }
  if (!best && rest.startsWith('tags/')) return 'tag';
  if (!best && rest.startsWith('api-jobs/')) return 'job';
  return best?.kind;
}

// ---- the run ----------------------------------------------------------------------------------

describe('fuzzed routes', () => {
  let t: TestController;
  const ops = OPERATIONS.filter((o) => o.answer !== 'stream');
  const skipped = OPERATIONS.filter((o) => o.answer === 'stream').map((o) => `${o.method.toUpperCase()} ${o.path}`);

  beforeAll(async () => {
    t = await makeController();
    const zone = await makeZone(t, 'zone1');
    await makeZone(t, 'zone2');
    const cluster = await makeCluster(t, zone.uuid, 'cluster1');
    // Loopback addresses nobody listens on: anything that tries to reach them fails at once.
    const hosts = [];
    for (let i = 0; i < 3; i++) hosts.push(await makeHost(t, cluster.uuid, { managementIp: `127.0.213.${10 + i}` }));
    await setStatus(t, hosts[1].uuid, 'Connected');
    for (const tag of ['reservedMemory::1G']) await call(t, 'post', '/system-tags', { params: { resourceType: 'HostVO', resourceUuid: hosts[0].uuid, tag } });
    await call(t, 'post', '/user-tags', { params: { resourceType: 'ClusterVO', resourceUuid: cluster.uuid, tag: 'rack-1' } });
    await call(t, 'post', '/vm-instances', { params: { name: 'vm1', memorySize: 1024 ** 3, cpuNum: 1, clusterUuid: cluster.uuid, strategy: 'CreateStopped' } });
    await call(t, 'post', '/maintenance-windows', { params: { name: 'w1', hostUuids: [hosts[0].uuid], cron: '0 2 * * *', durationMinutes: 60 } });
    await request(t.app).post('/zstack/v1/hosts/bootstrap-tokens').set(t.auth).send({ params: { clusterUuid: cluster.uuid, maxUses: 2 } });
  }, 60_000);
  afterAll(() => t?.close());

  it(`${CASES} seeded random requests over every route: no 5xx but a job's 503, no stack trace, nothing changed when refused`, async () => {
    const r = prng(SEED);
    let refusedAtOnce = 0;
    let refusedInJob = 0;
    let accepted = 0;
    const perRoute = new Map<string, number>();
    const failures: string[] = [];

    for (let n = 0; n < CASES && failures.length < 5; n++) {
      const op: Operation = pick(r, ops);
      // Uuids of every row there is now (but our own session: a LogOut of it would end the run).
      const rows = (await Promise.all(KIND_NAMES.map(async (k) => (await t.core.repo.all<{ uuid: string }>(k)).map((x) => ({ k, uuid: x.uuid })))))
        .flat().filter((x) => x.uuid !== t.session);
      const pool = rows.map((x) => x.uuid);
      const kind = kindOfPath(op.path);
      const ofKind = rows.filter((x) => x.k === kind).map((x) => x.uuid);

      // Path parameters.
      const path = op.path.replace(/:(\w+)/g, (_m, name: string) => {
        const roll = r();
        let v: string;
        if (name === 'category' || name === 'name') v = roll < 0.6 ? pick(r, ['host', 'kvm', 'hostAllocator', 'ping.interval', 'reservedMemory', 'vm.migrationQuantity']) : randomString(r, pool);
        else if (roll < 0.55 && ofKind.length) v = pick(r, ofKind);
        else if (roll < 0.75) v = pick(r, pool.length ? pool : [newUuid()]);
        else if (roll < 0.85) v = newUuid();
        else v = randomString(r, pool);
        return encodeURIComponent(v);
      });

      // Query parameters: the route's own and random ones.
      const query: Record<string, string | string[]> = {};
      const qn = op.answer === 'query' ? times(r, 4) : r() < 0.3 ? times(r, 2) : 0;
      for (let i = 0; i < qn; i++) {
        const k = pick(r, [...(op.params ?? []).map((p) => p.name), 'q', 'q', 'limit', 'start', 'count', 'replyWithCount', 'sort', 'fields', 'deleteMode', 'bogus']);
        const v = k === 'q'
          ? `${pick(r, ['name', 'uuid', 'state', 'cpuNum', 'zone.name', 'vmInstance.vmNics.ip', 'bogus', '__proto__'])}${pick(r, ['=', '!=', '>', '?=', '~=', '!~=', '=='])}${randomString(r, pool)}`
          : randomString(r, pool);
        const was = query[k];
        query[k] = was === undefined ? v : [was, v].flat();
      }

      // The body.
      let body: Json | undefined;
      let raw: string | undefined;
      if (op.method === 'post' || op.method === 'put') {
        const roll = r();
        if (op.body && roll < 0.75) {
          const valid = fromSchema(r, z.toJSONSchema(op.body, { io: 'input', unrepresentable: 'any' }) as Schema, pool);
          body = roll < 0.1 ? valid : mutate(r, valid, pool);
        } else if (roll < 0.9) body = randomJson(r, pool);
        else raw = pick(r, RAW);
      } else if (r() < 0.1) body = randomJson(r, pool);

      const headers: Record<string, string> = {};
      if (r() < 0.05) headers['X-Job-UUID'] = pick(r, [newUuid(), 'nope', pool[0] ?? newUuid(), '']);

      const label = clip(`case ${n} (FUZZ_SEED=${SEED}): ${op.method.toUpperCase()} ${path}?${new URLSearchParams(query as Record<string, string>)} ${raw ?? JSON.stringify(body)}`);
      const before = await image(t);
      let req = request(t.app)[op.method](`/zstack${path}`).query(query).set(t.auth).set(headers);
      if (raw !== undefined) req = req.set('Content-Type', 'application/json').send(raw);
      else if (body !== undefined) req = req.set('Content-Type', 'application/json').send(JSON.stringify(body));
      const first = await req;
      perRoute.set(`${op.method} ${op.path}`, (perRoute.get(`${op.method} ${op.path}`) ?? 0) + 1);

      const check = (what: string, ok: boolean, res: request.Response) => {
        if (!ok) failures.push(`${what}\n  ${label}\n  -> ${res.status} ${clip(res.text)}`);
      };
      const checkAnswer = (res: request.Response) => {
        check('no stack trace or source location', !LEAK.test(res.text), res);
        // Node's HTTP server refuses a request line or headers past 16 KB itself (431), before any route.
        if (res.status >= 400 && res.status !== 431) {
          const e = res.body?.error;
          check('an error is {error:{code, description, details}}', !!e && typeof e.code === 'string' && typeof e.description === 'string' && typeof e.details === 'string', res);
          check('never an internal error', e?.code !== 'SYS.1000', res);
          // A job's answer (GetJob) is about the call that made the job, not about this one.
          if (op.id !== 'GetJob') check('the refusal names what is wrong', typeof e?.details === 'string' && namesSomething(e.details, op, path, query, body, raw), res);
        }
      };
      checkAnswer(first);
      let final = first;
      if (first.status === 202 && first.body?.location) {
        await t.core.jobs.drain();
        final = await request(t.app).get(new URL(first.body.location).pathname).set(t.auth);
        check('a finished job answers 200 or 503', final.status === 200 || final.status === 503, final);
        checkAnswer(final);
      }
      // GetJob is the job transport itself: it answers a failed job's 503.
      const jobTransport = op.id === 'GetJob' && first.status === 503;
      check('no 5xx but the job\'s 503', (first.status < 500 || jobTransport) && (final === first || final.status !== 500), final);
      const refused = final.status >= 400 && !jobTransport;
      if (refused) {
        if (final === first) refusedAtOnce++;
        else refusedInJob++;
        const after = await image(t);
        if (after !== before) failures.push(`a refused request changed the store (${changed(before, after)})\n  ${label}\n  -> ${final.status} ${clip(final.text)}`);
      } else accepted++;
      // Keep the fixture alive: an accepted DeleteZone may take everything with it.
      if ((await t.core.repo.all('zone')).length === 0) {
        const z1 = await makeZone(t, `zone-${n}`);
        const c1 = await makeCluster(t, z1.uuid, `cluster-${n}`);
        await makeHost(t, c1.uuid, { managementIp: `127.0.214.${(n % 250) + 1}` }).catch(() => undefined);
      }
      // Relog if a random LogOut or throttle got in the way (the admin session is never in a path).
      if ((await request(t.app).get('/zstack/v1/zones?limit=0').set(t.auth)).status === 401) {
        const s = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
        t.session = s.body.inventory.uuid;
        t.auth = { Authorization: `OAuth ${t.session}` };
      }
    }

    const ran = refusedAtOnce + refusedInJob + accepted;
    process.stdout.write(
      `fuzz-routes (FUZZ_SEED=${SEED}): ${ran} cases over ${perRoute.size} of ${ops.length} routes; ${refusedAtOnce} refused at once, `
      + `${refusedInJob} refused in their job, ${accepted} accepted; not fuzzed (streams): ${skipped.join(', ') || 'none'}\n`,
    );
    expect(failures, failures.join('\n\n')).toEqual([]);
    expect(ran).toBe(CASES);
    // Every route was drawn (the list is the code's: a new route is fuzzed without an edit here).
    if (CASES >= 20 * ops.length) expect(perRoute.size).toBe(ops.length);
  }, Math.max(600_000, CASES * 100));
});

describe('what the route fuzz found', () => {
  let t: TestController;
  beforeAll(async () => {
    t = await makeController();
  });
  afterAll(() => t?.close());

  // An unknown field whose name is empty or blank was named as nothing (`: unknown field`), and
  // a 40,000-character one was echoed back whole (protocol/api.ts describeIssue).
  it.each([
    ['an empty field name', { '': 1 }, '"": unknown field'],
    ['a blank field name', { ' ': 1 }, '" ": unknown field'],
    ['a field name with a newline', { 'a\nb': 1 }, '"a\\nb": unknown field'],
    ['a 40,000-character field name', { ['k'.repeat(40_000)]: 1 }, `"${'k'.repeat(64)}...": unknown field`],
  ])('names %s readably, and briefly', async (_what, extra, details) => {
    const r = await request(t.app).post('/zstack/v1/hosts/bootstrap-tokens').set(t.auth).send({ params: { clusterUuid: newUuid() }, ...extra });
    expect(r.status).toBe(400);
    expect(r.body.error.details).toBe(details);
  });
});

/**
 * Whether `details` names something: a field or key the request sent or its schema knows, a
 * path or query parameter, the request body or header, or a resource (`kind[uuid:...]`).
 */
function namesSomething(details: string, op: Operation, path: string, query: Record<string, unknown>, body: Json | undefined, raw: string | undefined): boolean {
  if (/\w+\[(uuid|category|name):/.test(details) || /body|header|X-Job-UUID|session|query|condition|no API at/i.test(details)) return true;
  const words = new Set<string>(['uuid', 'deleteMode', ...Object.keys(query)]);
  for (const v of Object.values(query).flat()) for (const w of String(v).split(/[^\w.]+/)) words.add(w);
  for (const seg of decodeURIComponent(path).split('/')) if (seg) words.add(seg);
  if (body !== undefined) for (const p of paths(body)) for (const k of p) if (typeof k === 'string') words.add(k);
  if (op.body) for (const m of JSON.stringify(z.toJSONSchema(op.body, { io: 'input', unrepresentable: 'any' })).matchAll(/"(\w+)":\{/g)) words.add(m[1]!);
  if (raw !== undefined) return true;
  // Odd field names are quoted in messages (protocol/api.ts describeIssue), long ones cut.
  const quoted = (w: string) => [JSON.stringify(w), JSON.stringify(`${[...w].slice(0, 64).join('')}...`)];
  return [...words].some((w) => (w.length > 1 && details.includes(w)) || quoted(w).some((q) => details.includes(q)));
}
