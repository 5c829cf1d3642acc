/**
 * The query language (protocol/query.ts) and the repository's equality `find`, compiled to
 * SQL over `hk_row` (migrations/001_rows.sql) with exactly the embedded store's meaning
 * (controller/store/memory-query.ts). Each rule below names the embedded behaviour it copies:
 *
 * - Nulls: a missing field and a JSON null are both SQL NULL here (`->>`, or `nullif(.., 'null')`
 *   for JSON-typed comparisons), and SQL's "NULL satisfies no comparison" is the embedded
 *   store's rule too, `!=` and `!?=` included.
 * - Strings compare as text COLLATE "C": code point order, as JavaScript's `<` on strings up
 *   to one difference: JavaScript orders by UTF-16 code unit, so characters above U+FFFF sort
 *   before U+E000-U+FFFF there and after them here. Equality is exact either way.
 * - Numbers and booleans compare as jsonb values (numeric, exact; false < true), as `===`/`<`.
 * - Dates (epoch milliseconds) compare at second resolution, floor(ms / 1000) on both sides;
 *   sorting uses the full value, as the embedded sort does.
 * - LIKE: the pattern is rewritten for PostgreSQL (`\` escapes the next character; a lone
 *   trailing `\` is itself, which PostgreSQL would refuse), case-sensitive, under COLLATE "C".
 *   Limit: `_` is one code point here and one UTF-16 code unit in the embedded matcher, so the
 *   two differ on characters above U+FFFF (emoji).
 * - Lists (`vmNics.ip`): any element; `=` and `?=` as jsonb containment, which the GIN index
 *   answers; other operators test each element.
 * - Nested prefixes: `parentKey = ANY(ARRAY(SELECT childKey FROM hk_row WHERE kind = <joined> AND ...))`,
 *   the embedded store's join-key sets (schema.ts JOINS).
 * - Order: unsorted rows in insertion order (`ord`); sorted ascending with nulls first,
 *   descending with nulls last, ties in insertion order (the embedded sort is stable).
 *
 * Field names and kinds are written into the SQL as literals (they come from the field
 * catalogue and schema.ts, never from the request's free text) so that the partial expression
 * indexes match; every value is a bound parameter.
 */
import type { Condition, QuerySpec, Scalar } from '../../../protocol/query.ts';
import type { FieldType, Kind, ResourceSpec } from '../../../protocol/resources.ts';
import type { Where } from '../repository.ts';
import { JOINS, KINDS } from '../schema.ts';

/** Collects bound parameters; `add` returns its placeholder. */
export class Params {
  readonly values: unknown[] = [];
  add(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
}

/** A SQL string literal. Only for catalogue names and kinds; values are parameters. */
export function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** A kind as a literal, refusing anything schema.ts does not list. */
export function kindLit(kind: Kind): string {
  if (!Object.hasOwn(KINDS, kind)) throw new Error(`unknown kind[${kind}]`);
  return lit(kind);
}

/** The value of `key` inside the jsonb `src`, typed for comparison. */
function fieldExpr(src: string, key: string, type: FieldType): string {
  const k = lit(key);
  switch (type) {
    case 'string':
      return `(${src} ->> ${k})`;
    case 'date':
      return `(CASE WHEN jsonb_typeof(${src} -> ${k}) = 'number' THEN floor((${src} ->> ${k})::numeric / 1000) END)`;
    default:
      return `nullif(${src} -> ${k}, 'null'::jsonb)`;
  }
}

/** A condition value as the field's expression is compared with. */
function valueOf(v: Scalar, type: FieldType, P: Params): string {
  switch (type) {
    case 'string':
      return `${P.add(String(v))}::text`;
    case 'date':
      return `${P.add(Math.floor(Number(v) / 1000))}::numeric`;
    default:
      return `${P.add(JSON.stringify(v))}::jsonb`;
  }
}

function arrayOf(vs: Scalar[], type: FieldType, P: Params): string {
  switch (type) {
    case 'string':
      return `${P.add(vs.map(String))}::text[]`;
    case 'date':
      return `${P.add(vs.map((v) => Math.floor(Number(v) / 1000)))}::numeric[]`;
    default:
      return `${P.add(vs.map((v) => JSON.stringify(v)))}::jsonb[]`;
  }
}

/**
 * The embedded LIKE (protocol/query.ts likePieces) in PostgreSQL's syntax with `\` as the
 * escape: an escaped character stays escaped (PostgreSQL takes any escaped character
 * literally), a lone trailing `\` becomes an escaped one.
 */
export function pgLike(pattern: string): string {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '\\') out += i + 1 < pattern.length ? `\\${pattern[++i]}` : '\\\\';
    else out += ch;
  }
  return out;
}

const CMP: Partial<Record<Condition['op'], string>> = { '=': '=', '!=': '<>', '>': '>', '<': '<', '>=': '>=', '<=': '<=' };

/** One condition on a scalar expression `x` of the given type. */
function scalarPred(x: string, c: Condition, type: FieldType, P: Params): string {
  const cmp = CMP[c.op];
  if (cmp) {
    // Equality needs no collation (it is exact under any deterministic one, and the
    // indexes are on the default collation); order does.
    const lhs = type === 'string' && cmp !== '=' && cmp !== '<>' ? `${x} COLLATE "C"` : x;
    return `${lhs} ${cmp} ${valueOf(c.value as Scalar, type, P)}`;
  }
  switch (c.op) {
    case 'is null':
      return `${x} IS NULL`;
    case 'not null':
      return `${x} IS NOT NULL`;
    case '?=':
      return `${x} = ANY(${arrayOf(c.value as Scalar[], type, P)})`;
    case '!?=':
      return `${x} <> ALL(${arrayOf(c.value as Scalar[], type, P)})`;
    case '~=':
      return `${x} COLLATE "C" LIKE ${P.add(pgLike(String(c.value)))} ESCAPE E'\\\\'`;
    case '!~=':
      return `${x} COLLATE "C" NOT LIKE ${P.add(pgLike(String(c.value)))} ESCAPE E'\\\\'`;
    default:
      throw new Error(`operator ${c.op} has no SQL form`);
  }
}

/** A condition on the row `src` (jsonb) itself: a plain field or a list field. */
function rowPred(src: string, c: Condition, P: Params): string {
  const type = c.spec.type;
  if (!c.list) return scalarPred(fieldExpr(src, c.key, type), c, type, P);
  const arr = `(${src} -> ${lit(c.list)})`;
  if (type === 'string' && (c.op === '=' || c.op === '?=')) {
    const vs = c.op === '=' ? [c.value as Scalar] : [...new Set(c.value as Scalar[])];
    return `(${vs.map((v) => `${arr} @> ${P.add(JSON.stringify([{ [c.key]: String(v) }]))}::jsonb`).join(' OR ')})`;
  }
  const elems = `jsonb_array_elements(CASE WHEN jsonb_typeof(${arr}) = 'array' THEN ${arr} ELSE '[]'::jsonb END)`;
  return `EXISTS (SELECT 1 FROM ${elems} AS el(v) WHERE ${scalarPred(fieldExpr('el.v', c.key, type), c, type, P)})`;
}

/**
 * Equality on top-level fields (`find`, and a query's scope) with the embedded store's
 * meaning: strict equality, a missing field equals null, and an indexed list field
 * (`vmNics.ip`) matches when any element does.
 */
export function whereSql(kind: Kind, where: Where, alias: string, P: Params): string {
  const src = `${alias}.data`;
  const parts = [`${alias}.kind = ${kindLit(kind)}`];
  const indexes = KINDS[kind].indexes ?? {};
  for (const [f, v] of Object.entries(where)) {
    const list = Object.hasOwn(indexes, f) ? indexes[f]!.list : undefined;
    if (list) parts.push(`(${src} -> ${lit(list.name)}) @> ${P.add(JSON.stringify([{ [list.key]: v }]))}::jsonb`);
    else if (f === 'uuid' && typeof v === 'string') parts.push(`${alias}.uuid = ${P.add(v)}`);
    // `->>` (which the indexes are on) turns the number 1 into '1': the type test keeps `===`.
    else if (typeof v === 'string') parts.push(`(${src} ->> ${lit(f)}) = ${P.add(v)}::text AND jsonb_typeof(${src} -> ${lit(f)}) = 'string'`);
    else if (v === null || v === undefined) parts.push(`nullif(${src} -> ${lit(f)}, 'null'::jsonb) IS NULL`);
    else parts.push(`(${src} -> ${lit(f)}) = ${P.add(JSON.stringify(v))}::jsonb`);
  }
  return parts.join(' AND ');
}

export interface CompiledQuery {
  /** `FROM hk_row a WHERE ...`: shared by the rows and the count. */
  from: string;
  order: string;
  params: Params;
}

export function compileQuery(res: ResourceSpec, spec: QuerySpec, scope: Where = {}): CompiledQuery {
  const P = new Params();
  const parts = [whereSql(res.kind, scope, 'a', P)];
  spec.conditions.forEach((c, i) => {
    if (!c.nested) {
      parts.push(rowPred('a.data', c, P));
      return;
    }
    const join = JOINS[c.nested]!;
    const nest = res.nested![c.nested]!;
    const n = `n${i}`;
    const parent = join.parentKey === 'uuid' ? 'a.uuid' : `(a.data ->> ${lit(join.parentKey)})`;
    const child = join.childKey === 'uuid' ? `${n}.uuid` : `(${n}.data ->> ${lit(join.childKey)})`;
    // `= ANY(ARRAY(subquery))`, not `IN (subquery)`: the join keys are computed once and looked
    // up through the parent's index (the primary key, or zoneUuid/clusterUuid), as the
    // embedded store does with its key sets. With IN the planner, which cannot estimate a
    // jsonb containment, hash-joined all 10,000 hosts to find the one holding a NIC.
    parts.push(`${parent} = ANY(ARRAY(SELECT ${child} FROM hk_row ${n} WHERE ${n}.kind = ${kindLit(nest.kind)} AND ${rowPred(`${n}.data`, c, P)}))`);
  });
  let order = 'a.ord';
  if (spec.sort) {
    const type = res.fields[spec.sort.field]?.type ?? 'string';
    const k = lit(spec.sort.field);
    // Dates sort by their full value; strings by code point (see the header).
    const x = type === 'string' ? `(a.data ->> ${k}) COLLATE "C"` : `nullif(a.data -> ${k}, 'null'::jsonb)`;
    order = spec.sort.direction === 'asc' ? `${x} ASC NULLS FIRST, a.ord` : `${x} DESC NULLS LAST, a.ord`;
  }
  return { from: `FROM hk_row a WHERE ${parts.join(' AND ')}`, order, params: P };
}
