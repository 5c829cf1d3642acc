/**
 * Evaluates a QuerySpec over the embedded store's in-memory tables.
 *
 * Plan: equality (`=`, `?=`) on an indexed field narrows the candidates through the index;
 * a condition on a joined resource (`zone.*`, `cluster.*`, `vmInstance.*`) is turned into
 * the set of parent keys it allows (like SQL's `uuid IN (SELECT hostUuid FROM vm WHERE ...)`);
 * what is left is checked row by row. Without a sort, rows come in insertion order and the
 * scan stops once `start + limit` rows are found (unless a total is asked for).
 */
import { invalidArgument } from '../../protocol/errors.ts';
import type { Condition, QuerySpec, Scalar } from '../../protocol/query.ts';
import { compileLike, type LikeMatcher, QUERY_LIMITS } from '../../protocol/query.ts';
import type { Kind, ResourceSpec } from '../../protocol/resources.ts';
import type { Table } from './embedded-store.ts';
import type { QueryResult, Row, Where } from './repository.ts';
// How a joined resource links to the queried one: shared with the PostgreSQL compiler.
import { JOINS } from './schema.ts';

type Rec = Record<string, unknown>;

/** Dates are compared at second resolution: that is all the wire format carries. */
function norm(v: unknown, c: Condition): unknown {
  if (c.spec.type === 'date' && typeof v === 'number') return Math.floor(v / 1000);
  return v;
}

/** LIKE matcher steps spent by one query so far (see QUERY_LIMITS.likeSteps). */
export interface Work {
  likeSteps: number;
}

/**
 * Runs one LIKE test and charges its steps to the query; past the budget the query is refused
 * (it reads nothing, so stopping half-way changes nothing). One test costs at most a value's
 * length plus the pattern's, so the overshoot is a few thousand steps at most.
 */
function charged(like: LikeMatcher, work: Work, v: string): boolean {
  const before = like.steps;
  const hit = like.test(v);
  work.likeSteps += like.steps - before;
  if (work.likeSteps > QUERY_LIMITS.likeSteps) {
    throw invalidArgument(
      `query reads more than ${QUERY_LIMITS.likeSteps} characters through ~=/!~= (the limit); narrow it with an equality on an indexed field (uuid, managementIp, clusterUuid, zoneUuid, state, status) or a pattern anchored at the start`,
    );
  }
  return hit;
}

export function makePredicate(c: Condition, work: Work = { likeSteps: 0 }): (value: unknown) => boolean {
  const cv = Array.isArray(c.value) ? c.value.map((x) => norm(x, c)) : norm(c.value, c);
  switch (c.op) {
    case 'is null':
      return (v) => v === null || v === undefined;
    case 'not null':
      return (v) => v !== null && v !== undefined;
    case '=':
      return (v) => norm(v, c) === cv;
    // SQL semantics: a null never satisfies a comparison, `!=` included.
    case '!=':
      return (v) => v !== null && v !== undefined && norm(v, c) !== cv;
    case '>':
      return (v) => v !== null && v !== undefined && (norm(v, c) as Scalar) > (cv as Scalar);
    case '<':
      return (v) => v !== null && v !== undefined && (norm(v, c) as Scalar) < (cv as Scalar);
    case '>=':
      return (v) => v !== null && v !== undefined && (norm(v, c) as Scalar) >= (cv as Scalar);
    case '<=':
      return (v) => v !== null && v !== undefined && (norm(v, c) as Scalar) <= (cv as Scalar);
    case '?=': {
      const set = new Set(cv as unknown[]);
      return (v) => set.has(norm(v, c));
    }
    case '!?=': {
      const set = new Set(cv as unknown[]);
      return (v) => v !== null && v !== undefined && !set.has(norm(v, c));
    }
    // A compiled LIKE costs at most n * ceil(piece/32) steps per value (protocol/query.ts),
    // never backtracking; parseQuery has already bounded the pattern.
    case '~=': {
      const like = compileLike(String(c.value));
      return (v) => typeof v === 'string' && charged(like, work, v);
    }
    case '!~=': {
      const like = compileLike(String(c.value));
      return (v) => typeof v === 'string' && !charged(like, work, v);
    }
  }
}

/** A row-level test for one condition on the row's own fields (list fields: any element). */
function rowTest(c: Condition, work: Work): (row: Rec) => boolean {
  const p = makePredicate(c, work);
  if (c.list) {
    const list = c.list;
    return (row) => ((row[list] as Rec[] | undefined) ?? []).some((el) => p(el[c.key]));
  }
  return (row) => p(row[c.key]);
}

/** Index-backed candidates for `=`/`?=` on an indexed field, else undefined. */
function indexCandidates(t: Table, c: Condition): Set<string> | undefined {
  const field = c.list ? `${c.list}.${c.key}` : c.key;
  if (!t.indexes.has(field) || c.spec.type === 'date') return undefined;
  if (c.op === '=') return t.lookup(field, c.value);
  if (c.op === '?=') {
    // Distinct values only: `state?=Enabled,Enabled,...` (500 times) would otherwise add the
    // same 7,000 uuids 500 times.
    const out = new Set<string>();
    for (const v of new Set(c.value as Scalar[])) for (const u of t.lookup(field, v)!) out.add(u);
    return out;
  }
  return undefined;
}

/** Values of `parentKey` allowed by a condition on a joined resource. */
function joinKeys(tables: (k: Kind) => Table, res: ResourceSpec, c: Condition, work: Work): Set<unknown> {
  const nest = res.nested![c.nested!]!;
  const join = JOINS[c.nested!]!;
  const child = tables(nest.kind);
  const direct = indexCandidates(child, c);
  const test = rowTest(c, work);
  const keys = new Set<unknown>();
  const rows: Iterable<Row> = direct ? [...direct].map((u) => child.rows.get(u)!) : child.rows.values();
  for (const r of rows) {
    const rec = r as unknown as Rec;
    // Index hits for `=`/`?=` are exact; other rows are tested.
    if (direct || test(rec)) keys.add(rec[join.childKey]);
  }
  return keys;
}

export function evaluateQuery(
  tables: (k: Kind) => Table,
  res: ResourceSpec,
  spec: QuerySpec,
  scope: Where = {},
): QueryResult<Row> {
  const t = tables(res.kind);
  // Index hits are kept as a list of sets: intersecting a 7,000-uuid set with another to
  // return 100 rows costs more than testing membership row by row while scanning.
  const hits: Set<string>[] = [];
  const residual: ((row: Rec) => boolean)[] = [];
  const work: Work = { likeSteps: 0 };

  for (const [f, v] of Object.entries(scope)) {
    const hit = t.lookup(f, v);
    if (hit) hits.push(hit);
    else residual.push((row) => (row[f] ?? null) === v);
  }
  for (const c of spec.conditions) {
    if (c.nested) {
      const join = JOINS[c.nested]!;
      const keys = joinKeys(tables, res, c, work);
      if (join.parentKey === 'uuid') {
        const set = new Set<string>();
        for (const k of keys) if (typeof k === 'string' && t.rows.has(k)) set.add(k);
        hits.push(set);
      } else if (t.indexes.has(join.parentKey)) {
        const set = new Set<string>();
        for (const k of keys) for (const u of t.lookup(join.parentKey, k) ?? []) set.add(u);
        hits.push(set);
      } else {
        residual.push((row) => keys.has(row[join.parentKey]));
      }
      continue;
    }
    // Index hits are exact (for list fields: "some element equals"), so nothing is left to test.
    const hit = indexCandidates(t, c);
    if (hit) hits.push(hit);
    else residual.push(rowTest(c, work));
  }

  const wantTotal = spec.count || spec.replyWithCount;
  const stopAt = spec.sort || wantTotal ? Infinity : spec.start + spec.limit;
  const matched: Row[] = [];
  hits.sort((a, b) => a.size - b.size);
  const smallest = hits[0];
  const others = hits.slice(1);
  let source: Iterable<Row>;
  if (smallest && smallest.size * 8 < t.rows.size) {
    // Few candidates: walk them (in insertion order) instead of the whole table.
    source = [...smallest]
      .map((u) => t.rows.get(u)!)
      .sort((a, b) => t.ordinal.get(a.uuid)! - t.ordinal.get(b.uuid)!);
  } else {
    source = t.rows.values();
  }
  const sets = smallest && smallest.size * 8 < t.rows.size ? others : hits;
  for (const row of source) {
    if (!sets.every((set) => set.has(row.uuid))) continue;
    const rec = row as unknown as Rec;
    if (residual.every((test) => test(rec))) {
      matched.push(row);
      if (matched.length >= stopAt) break;
    }
  }
  if (spec.sort) {
    const { field, direction } = spec.sort;
    const sign = direction === 'asc' ? 1 : -1;
    matched.sort((a, b) => {
      // A missing field is null, as everywhere else: comparing null with undefined as
      // different made the comparator inconsistent (each sorted before the other), so rows
      // missing a field and rows holding null came out in an engine-dependent order.
      const x = ((a as unknown as Rec)[field] ?? null) as Scalar | null;
      const y = ((b as unknown as Rec)[field] ?? null) as Scalar | null;
      if (x === y) return 0;
      if (x === null) return -sign;
      if (y === null) return sign;
      return (x < y ? -1 : 1) * sign;
    });
  }
  const out: QueryResult<Row> = { rows: spec.count ? [] : matched.slice(spec.start, spec.start + spec.limit) };
  if (wantTotal) out.total = matched.length;
  return out;
}
