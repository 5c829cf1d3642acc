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
  const { field, op, raw } = splitCondition(text);
  const where = resolveField(res, field);
  const cond: Condition = { field, op, ...where };
  if (op === 'is null' || op === 'not null') return cond;
  const value = raw ?? '';
  if (op === '?=' || op === '!?=') {
    cond.value = value.split(',').map((v) => coerce(field, where.spec, v));
  } else if (op === '~=' || op === '!~=') {
    if (where.spec.type !== 'string') throw invalidArgument(`operator[${op}] on field[${field}] needs a text field`);
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

function nonNegativeInt(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw invalidArgument(`${name}[${v}] must be an integer >= 0`);
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
  const conditions = qs.map((q) => {
    if (typeof q !== 'string') throw invalidArgument('query parameter[q] must be a string');
    return parseCondition(res, q);
  });
  const spec: QuerySpec = {
    conditions,
    limit: nonNegativeInt('limit', str('limit'), DEFAULT_LIMIT),
    start: nonNegativeInt('start', str('start'), 0),
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

/**
 * SQL LIKE (`%` any run, `_` one character, `\` escapes the next character, as in MySQL
 * which ZStack runs on) as a whole-string RegExp.
 */
export function likeToRegExp(pattern: string): RegExp {
  let re = '';
  const lit = (ch: string) => ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '\\' && i + 1 < pattern.length) re += lit(pattern[++i]!);
    else if (ch === '%') re += '.*';
    else if (ch === '_') re += '.';
    else re += lit(ch);
  }
  return new RegExp(`^${re}$`, 's');
}
