/**
 * The query language (ZStack's APIQueryMessage over REST): `q=<field><op><value>` conditions
 * plus limit/start/count/replyWithCount/sort/fields. Parsing and checking live here so the
 * REST layer, the CLI and any store implementation agree on one meaning; evaluating a
 * QuerySpec is the store's job.
 */
import { invalidArgument } from './errors.ts';
import type { FieldSpec, ResourceSpec } from './resources.ts';
import { parseDate } from './values.ts';

export const OPS = ['=', '!=', '>', '<', '>=', '<=', '?=', '!?=', '~=', '!~=', 'is null', 'not null'] as const;
export type Op = (typeof OPS)[number];

export type Scalar = string | number | boolean;

export interface Condition {
  /** As written, e.g. `vmInstance.vmNics.ip`. */
  field: string;
  /** Set when the field belongs to a joined resource (`zone`, `cluster`, `vmInstance`). */
  nested?: string;
  /** Set when the field sits inside a list of the row (`vmNics`): any element may match. */
  list?: string;
  /** The last name: the key in the row (or nested row, or list element). */
  key: string;
  spec: FieldSpec;
  op: Op;
  /** Coerced to the field's type; an array for `?=`/`!?=`; the raw pattern for likes. */
  value?: Scalar | Scalar[];
}

export interface QuerySpec {
  conditions: Condition[];
  limit: number;
  start: number;
  count: boolean;
  replyWithCount: boolean;
  sort?: { field: string; direction: 'asc' | 'desc' };
  fields?: string[];
}

export const DEFAULT_LIMIT = 1000;

/**
 * What one query may ask for, so that no query can hold the event loop (it is shared with every
 * other call and with the hosts' heartbeats). Each limit is refused with SYS.1007 naming it,
 * at parse time, before anything is evaluated. With these, the worst query on 10,000 hosts with
 * 100,000 VMs takes tens of milliseconds (bench/query-worst.bench.ts):
 * - conditions: each is a pass over the candidates; ZStack's clients send a handful.
 * - conditionLength: a 500-uuid `?=` list fits (Node's own URL limit is 16 KB anyway).
 * - likeConditions: every `~=`/`!~=` may read every character of every candidate value.
 * - likePattern: the longest name is 255 characters; a longer pattern only fits descriptions
 *   and tags, which `%` reaches just as well.
 * - likePercents, likePiece: see compileLike (a %...% piece is scanned with one 32-bit word).
 * - nestedConditions: a condition on `zone.*`, `cluster.*`, `vmInstance.*` reads the joined
 *   table whole (100,000 VMs) unless it is an indexed equality.
 * - inValues: the `?=`/`!?=` list, one index lookup or set entry each.
 * - limit: the rows one answer carries (each is formatted and serialised); page with start.
 * - start: far beyond any table; the scan stops at the table's end anyway.
 * - likeSteps: what the limits above cannot see is the data: four `%x_y%` over 100,000 VM
 *   names of 255 characters read 100 M characters. So the evaluator counts LIKE matcher steps
 *   (~3 ns each) across the whole query and refuses it past this many (~10-25 ms of work:
 *   one full pass over 10,000 names of 255 characters fits),
 *   naming the limit; narrowing it with an indexed equality (uuid, managementIp, clusterUuid,
 *   zoneUuid, state, status) or a pattern anchored at the start brings it under.
 */
export const QUERY_LIMITS = {
  conditions: 16,
  conditionLength: 32_768,
  likeConditions: 4,
  likePattern: 255,
  likePercents: 16,
  likePiece: 32,
  nestedConditions: 2,
  inValues: 500,
  limit: 10_000,
  start: 10_000_000,
  likeSteps: 3_000_000,
} as const;

const COND_RE = /^([A-Za-z_][A-Za-z0-9_.]*)(!\?=|!~=|!=|>=|<=|~=|\?=|=|>|<)(.*)$/s;
const NULL_RE = /^([A-Za-z_][A-Za-z0-9_.]*) (is null|not null)$/;

/** Splits `name~=kvm%` into its parts without checking the field. */
export function splitCondition(text: string): { field: string; op: Op; raw?: string } {
  const nm = NULL_RE.exec(text.trim());
  if (nm) return { field: nm[1]!, op: nm[2] as Op };
  const m = COND_RE.exec(text);
  if (!m) {
    throw invalidArgument(
      `query condition[${text}] is not <field><operator><value>; operators are ${OPS.join(' ')}`,
    );
  }
  return { field: m[1]!, op: m[2] as Op, raw: m[3]! };
}

/** Own keys only: `constructor` or `__proto__` are not fields. */
const has = (o: object, k: string) => Object.hasOwn(o, k);

function resolveField(res: ResourceSpec, field: string): Pick<Condition, 'nested' | 'list' | 'key' | 'spec'> {
  const parts = field.split('.');
  const unknown = () =>
    invalidArgument(`field[${field}] is not a queryable field of ${res.path}; fields are ${listFields(res).join(', ')}`);
  const inCatalogue = (
    fields: Record<string, FieldSpec>,
    lists: Record<string, Record<string, FieldSpec>> | undefined,
    rest: string[],
  ) => {
    if (rest.length === 1 && has(fields, rest[0]!)) return { key: rest[0]!, spec: fields[rest[0]!]! };
    if (rest.length === 2 && lists && has(lists, rest[0]!) && has(lists[rest[0]!]!, rest[1]!)) {
      return { list: rest[0]!, key: rest[1]!, spec: lists[rest[0]!]![rest[1]!]! };
    }
    return undefined;
  };
  const self = inCatalogue(res.fields, res.lists, parts);
  if (self) return self;
  const nest = res.nested && has(res.nested, parts[0]!) ? res.nested[parts[0]!] : undefined;
  if (nest) {
    const inner = inCatalogue(nest.fields, nest.lists, parts.slice(1));
    if (inner) return { nested: parts[0]!, ...inner };
  }
  throw unknown();
}

export function listFields(res: ResourceSpec): string[] {
  const out = Object.keys(res.fields);
  for (const [l, f] of Object.entries(res.lists ?? {})) out.push(...Object.keys(f).map((k) => `${l}.${k}`));
  for (const p of Object.keys(res.nested ?? {})) out.push(`${p}.*`);
  return out;
}

function coerce(field: string, spec: FieldSpec, raw: string): Scalar {
  switch (spec.type) {
    case 'number': {
      const v = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(v)) throw invalidArgument(`field[${field}] takes a number, not [${raw}]`);
      return v;
    }
    case 'date': {
      const v = parseDate(raw);
      if (v === undefined) {
        throw invalidArgument(`field[${field}] takes a date like "Jun 1, 2015 6:49:24 PM" or ISO-8601, not [${raw}]`);
      }
      return v;
    }
    case 'boolean':
      if (raw !== 'true' && raw !== 'false') throw invalidArgument(`field[${field}] takes true or false, not [${raw}]`);
      return raw === 'true';
    default:
      if (spec.values && !spec.values.includes(raw)) {
        throw invalidArgument(`field[${field}] takes one of ${spec.values.join(', ')}, not [${raw}]`);
      }
      return raw;
  }
}

export function parseCondition(res: ResourceSpec, text: string): Condition {
  if (text.length > QUERY_LIMITS.conditionLength) {
    throw invalidArgument(`query condition[${text.slice(0, 40)}...] has ${text.length} characters; the limit is ${QUERY_LIMITS.conditionLength}`);
  }
  const { field, op, raw } = splitCondition(text);
  const where = resolveField(res, field);
  const cond: Condition = { field, op, ...where };
  if (op === 'is null' || op === 'not null') return cond;
  const value = raw ?? '';
  if (op === '?=' || op === '!?=') {
    const list = value.split(',');
    if (list.length > QUERY_LIMITS.inValues) {
      throw invalidArgument(`operator[${op}] on field[${field}] has ${list.length} values; the limit is ${QUERY_LIMITS.inValues}`);
    }
    cond.value = list.map((v) => coerce(field, where.spec, v));
  } else if (op === '~=' || op === '!~=') {
    if (where.spec.type !== 'string') throw invalidArgument(`operator[${op}] on field[${field}] needs a text field`);
    checkLikePattern(field, value);
    cond.value = value;
  } else {
    if ((op === '>' || op === '<' || op === '>=' || op === '<=') && where.spec.type === 'boolean') {
      throw invalidArgument(`operator[${op}] does not apply to the true/false field[${field}]`);
    }
    cond.value = coerce(field, where.spec, value);
  }
  return cond;
}

export interface QueryParams {
  q?: string | string[];
  limit?: string;
  start?: string;
  count?: string;
  replyWithCount?: string;
  sort?: string;
  fields?: string;
}

const QUERY_PARAMS = new Set(['q', 'limit', 'start', 'count', 'replyWithCount', 'sort', 'fields']);

function nonNegativeInt(name: string, v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw invalidArgument(`${name}[${v}] must be an integer >= 0`);
  if (Number(v) > max) throw invalidArgument(`${name}[${v}] is over the limit of ${max}`);
  return Number(v);
}

function bool(name: string, v: string | undefined): boolean {
  if (v === undefined) return false;
  if (v !== 'true' && v !== 'false') throw invalidArgument(`${name}[${v}] must be true or false`);
  return v === 'true';
}

/** Turns REST query-string parameters into a checked QuerySpec; throws SYS.1007 naming the culprit. */
export function parseQuery(res: ResourceSpec, params: Record<string, unknown>): QuerySpec {
  for (const k of Object.keys(params)) {
    if (!QUERY_PARAMS.has(k)) throw invalidArgument(`query parameter[${k}] is unknown; use ${[...QUERY_PARAMS].join(', ')}`);
  }
  const str = (k: string): string | undefined => {
    const v = params[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw invalidArgument(`query parameter[${k}] must be given once`);
    return v;
  };
  const qs = params.q === undefined ? [] : Array.isArray(params.q) ? params.q : [params.q];
  if (qs.length > QUERY_LIMITS.conditions) {
    throw invalidArgument(`query parameter[q] is given ${qs.length} times; the limit is ${QUERY_LIMITS.conditions} conditions`);
  }
  const conditions = qs.map((q) => {
    if (typeof q !== 'string') throw invalidArgument('query parameter[q] must be a string');
    return parseCondition(res, q);
  });
  const likes = conditions.filter((c) => c.op === '~=' || c.op === '!~=').length;
  if (likes > QUERY_LIMITS.likeConditions) {
    throw invalidArgument(`query has ${likes} ~=/!~= conditions; the limit is ${QUERY_LIMITS.likeConditions}`);
  }
  const nested = conditions.filter((c) => c.nested).length;
  if (nested > QUERY_LIMITS.nestedConditions) {
    throw invalidArgument(`query has ${nested} conditions on joined resources (zone.*, cluster.*, vmInstance.*); the limit is ${QUERY_LIMITS.nestedConditions}`);
  }
  const spec: QuerySpec = {
    conditions,
    limit: nonNegativeInt('limit', str('limit'), DEFAULT_LIMIT, QUERY_LIMITS.limit),
    start: nonNegativeInt('start', str('start'), 0, QUERY_LIMITS.start),
    count: bool('count', str('count')),
    replyWithCount: bool('replyWithCount', str('replyWithCount')),
  };
  const sort = str('sort');
  if (sort !== undefined) {
    const m = /^([+-]?)([A-Za-z_][A-Za-z0-9_]*)$/.exec(sort.replace(/^ /, '+'));
    if (!m || !has(res.fields, m[2]!)) {
      throw invalidArgument(`sort[${sort}] must be +field or -field with a field of ${res.path}: ${Object.keys(res.fields).join(', ')}`);
    }
    spec.sort = { field: m[2]!, direction: m[1] === '-' ? 'desc' : 'asc' };
  }
  const fields = str('fields');
  if (fields !== undefined) {
    const list = fields.split(',').map((f) => f.trim()).filter(Boolean);
    for (const f of list) {
      if (!res.inventoryFields.includes(f)) {
        throw invalidArgument(`fields: [${f}] is not an inventory field of ${res.path}; fields are ${res.inventoryFields.join(', ')}`);
      }
    }
    if (list.length === 0) throw invalidArgument('fields must name at least one field');
    spec.fields = list;
  }
  return spec;
}


// ---- LIKE --------------------------------------------------------------------------------------
//
// SQL LIKE (`%` any run, `_` one character, `\` escapes the next character, as in MySQL which
// ZStack runs on; a lone trailing `\` is itself), case-sensitive, on UTF-16 code units: what
// the RegExp this replaces did. That RegExp backtracked: `%x%x%x%x%x%y` against a 255-character
// name took 14 s of the event loop. This matcher never backtracks:
//   - the piece before the first `%` is compared at the start, the piece after the last `%` at
//     the end, each character once;
//   - each piece between two `%` is found at its earliest place after the previous one (the
//     earliest place leaves the most room for the rest, so no other place need be tried) by a
//     bit-parallel scan (Shift-And) that reads each character of the string once, with one
//     32-bit word of state: hence QUERY_LIMITS.likePiece = 32.
// One test of an n-character string therefore costs at most n + (anchored pieces' length)
// steps (`bound(n)`), whatever the pattern; `steps` counts what was actually done, so tests can
// check the work rather than the clock. Measured: ~3 ns a step, 8 ms for 10,000 255-char names.

/** A code unit of a piece that `_` stands for. */
const ANY = -1;

interface Scan {
  /** Set when the piece is found: bit (length - 1). */
  hiBit: number;
  /** The piece's positions each ASCII code unit may stand at; other units use `other`, else `any`. */
  ascii: Int32Array;
  other: Map<number, number>;
  /** The positions of `_`. */
  any: number;
}

function scanOf(piece: number[]): Scan {
  let any = 0;
  piece.forEach((c, i) => {
    if (c === ANY) any |= 1 << i;
  });
  const ascii = new Int32Array(128).fill(any);
  const other = new Map<number, number>();
  piece.forEach((c, i) => {
    if (c === ANY) return;
    if (c < 128) ascii[c]! |= 1 << i;
    else other.set(c, (other.get(c) ?? any) | (1 << i));
  });
  return { hiBit: 1 << (piece.length - 1), ascii, other, any };
}

export interface LikeMatcher {
  test(s: string): boolean;
  /** Steps taken by every test() so far: one per character compared or scanned. */
  steps: number;
  /** The most steps one test() of an `n`-character string may take. */
  bound(n: number): number;
}

/** A pattern split at its unescaped `%`s; `_` is ANY, escapes are resolved. */
function likePieces(pattern: string): number[][] {
  const pieces: number[][] = [[]];
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    const cur = pieces[pieces.length - 1]!;
    if (ch === '\\' && i + 1 < pattern.length) cur.push(pattern.charCodeAt(++i));
    else if (ch === '%') pieces.push([]);
    else if (ch === '_') cur.push(ANY);
    else cur.push(pattern.charCodeAt(i));
  }
  return pieces;
}

/** Checks a LIKE pattern against QUERY_LIMITS; throws SYS.1007 naming the field and the limit. */
export function checkLikePattern(field: string, pattern: string): number[][] {
  const L = QUERY_LIMITS;
  if (pattern.length > L.likePattern) {
    throw invalidArgument(`the pattern for field[${field}] has ${pattern.length} characters; the limit is ${L.likePattern}`);
  }
  const pieces = likePieces(pattern);
  if (pieces.length - 1 > L.likePercents) {
    throw invalidArgument(`the pattern for field[${field}] has ${pieces.length - 1} %; the limit is ${L.likePercents}`);
  }
  const long = pieces.slice(1, -1).find((p) => p.length > L.likePiece);
  if (long) {
    throw invalidArgument(
      `the pattern for field[${field}] has a %...% piece of ${long.length} characters; the limit is ${L.likePiece} (patterns anchored at the start or end may be longer)`,
    );
  }
  return pieces;
}

/** Compiles a LIKE pattern (checked against QUERY_LIMITS: see checkLikePattern). */
export function compileLike(pattern: string): LikeMatcher {
  const pieces = checkLikePattern('pattern', pattern);
  const head = pieces[0]!;
  const tail = pieces.length > 1 ? pieces[pieces.length - 1]! : [];
  const middles = pieces.slice(1, -1).filter((p) => p.length > 0).map(scanOf);

  const m: LikeMatcher = {
    steps: 0,
    bound: (n) => head.length + tail.length + n,
    test(s) {
      if (pieces.length === 1) return s.length === head.length && at(s, 0, head);
      const end = s.length - tail.length;
      if (end < head.length || !at(s, 0, head) || !at(s, end, tail)) return false;
      let pos = head.length;
      for (const scan of middles) {
        pos = find(scan, s, pos, end);
        if (pos < 0) return false;
      }
      return true;
    },
  };

  /** Whether `piece` matches `s` at `from`. */
  function at(s: string, from: number, piece: number[]): boolean {
    for (let i = 0; i < piece.length; i++) {
      m.steps++;
      const c = piece[i]!;
      if (c !== ANY && c !== s.charCodeAt(from + i)) return false;
    }
    return true;
  }

  /**
   * Shift-And over s[from, end): bit i of `d` is set when the piece's first i + 1 units match
   * the text ending here. Returns where the earliest match ends (exclusive), or -1. The scans of
   * successive pieces cover disjoint stretches of `s`, so together they read it at most once.
   */
  function find(scan: Scan, s: string, from: number, end: number): number {
    const { hiBit, ascii, other, any } = scan;
    let d = 0;
    for (let i = from; i < end; i++) {
      const c = s.charCodeAt(i);
      d = ((d << 1) | 1) & (c < 128 ? ascii[c]! : (other.get(c) ?? any));
      if (d & hiBit) {
        m.steps += i + 1 - from;
        return i + 1;
      }
    }
    m.steps += end - from;
    return -1;
  }
  return m;
}
