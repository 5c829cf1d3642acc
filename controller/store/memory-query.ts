/**
 * Evaluates a QuerySpec over the embedded store's in-memory tables.
 *
 * Plan: equality (`=`, `?=`) on an indexed field narrows the candidates through the index;
 * a condition on a joined resource (`zone.*`, `cluster.*`, `vmInstance.*`) keeps SQL's
 * meaning `uuid IN (SELECT hostUuid FROM vm WHERE ...)` and is evaluated one of two ways:
 * - as the set of parent keys it allows, built by one scan of the child table (or from its
 *   index hits: `vmInstance.vmNics.ip=...`), when that is cheap: the child is what the parent
 *   points at (`zone.*`, `cluster.*`: few rows), or the condition holds for few children (a
 *   sample of the first 256 says so), so the scan adds few keys;
 * - as a probe per candidate row (a semi-join: `EXISTS (SELECT 1 FROM vm WHERE vm.hostUuid =
 *   host.uuid AND ...)`) over the rows the child table keeps by its link field (Table.linked),
 *   stopping at the first child that matches, when the child points at the parent
 *   (`vmInstance.*`) and the condition is broad or a LIKE. A probe runs only for rows that
 *   passed every cheaper test, reads each child at most once and only children of surviving
 *   rows: the bench's two joins over 100,000 VMs no longer test and collect all 200,000.
 * What is left is checked row by row, cheapest first: comparisons, then join probes, then
 * LIKEs (which charge the work budget, so they see only rows every other test let through:
 * a query never reads more through LIKE than when joins were all scans, and some that the
 * budget refused before are answered now). Without a sort, rows come in insertion order and
 * the scan stops once `start + limit` rows are found (unless a total is asked for).
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
  // Only dates need normalising on the row's side; the others compare as they are (these
  // closures run once per row and condition: ~10 ns saved each counts on 100,000 rows).
  const isDate = c.spec.type === 'date';
  const n = isDate ? (v: unknown) => norm(v, c) : (v: unknown) => v;
  switch (c.op) {
    case 'is null':
      return (v) => v === null || v === undefined;
    case 'not null':
      return (v) => v !== null && v !== undefined;
    case '=':
      return isDate ? (v) => n(v) === cv : (v) => v === cv;
    // SQL semantics: a null never satisfies a comparison, `!=` included.
    case '!=':
      return isDate ? (v) => v !== null && v !== undefined && n(v) !== cv : (v) => v !== null && v !== undefined && v !== cv;
    case '>':
      return isDate ? (v) => v !== null && v !== undefined && (n(v) as Scalar) > (cv as Scalar) : (v) => v !== null && v !== undefined && (v as Scalar) > (cv as Scalar);
    case '<':
      return isDate ? (v) => v !== null && v !== undefined && (n(v) as Scalar) < (cv as Scalar) : (v) => v !== null && v !== undefined && (v as Scalar) < (cv as Scalar);
    case '>=':
      return isDate ? (v) => v !== null && v !== undefined && (n(v) as Scalar) >= (cv as Scalar) : (v) => v !== null && v !== undefined && (v as Scalar) >= (cv as Scalar);
    case '<=':
      return isDate ? (v) => v !== null && v !== undefined && (n(v) as Scalar) <= (cv as Scalar) : (v) => v !== null && v !== undefined && (v as Scalar) <= (cv as Scalar);
    case '?=': {
      const set = new Set(cv as unknown[]);
      return (v) => set.has(n(v));
    }
    case '!?=': {
      const set = new Set(cv as unknown[]);
      return (v) => v !== null && v !== undefined && !set.has(n(v));
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
  const key = c.key;
  if (c.list) {
    const list = c.list;
    return (row) => {
      const els = row[list] as Rec[] | undefined;
      if (els) for (let i = 0; i < els.length; i++) if (p(els[i]![key])) return true;
      return false;
    };
  }
  return (row) => p(row[key]);
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

/** Values of `parentKey` allowed by a condition on a joined resource (`direct`: its index hits on the child). */
function joinKeys(child: Table, c: Condition, direct: Set<string> | undefined, work: Work): Set<unknown> {
  const join = JOINS[c.nested!]!;
  const test = direct ? undefined : rowTest(c, work);
  const keys = new Set<unknown>();
  const rows: Iterable<Row> = direct ? [...direct].map((u) => child.rows.get(u)!) : child.rows.values();
  for (const r of rows) {
    const rec = r as unknown as Rec;
    // Index hits for `=`/`?=` are exact; other rows are tested.
    if (!test || test(rec)) keys.add(rec[join.childKey]);
  }
  return keys;
}

/**
 * A semi-join probe: whether some child row linked to `row` (child.childKey = row.uuid, the
 * rows the child table keeps by that field: Table.linked) satisfies `c`. Stops at the first
 * that does.
 */
function joinProbe(child: Table, c: Condition, work: Work): (row: Rec) => boolean {
  const { childKey } = JOINS[c.nested!]!;
  const by = child.linked.get(childKey)!;
  const test = rowTest(c, work);
  return (row) => {
    const linked = by.get(row.uuid);
    if (!linked) return false;
    for (const r of linked) if (test(r as unknown as Rec)) return true;
    return false;
  };
}

const isLike = (c: Condition) => c.op === '~=' || c.op === '!~=';

/** Child rows a join samples to choose between a probe and a scan (see evaluateQuery). */
const SAMPLE = 256;

/**
 * Whether `c` (no LIKE: sampling spends no budget) holds for at least a quarter of the first
 * SAMPLE child rows: then most parents have a match among their first children and a probe
 * stops early; else a scan of the child table, which reads rows in order (~15 ns each here,
 * against ~100 ns for a probe's look-up per parent), is cheaper.
 */
function broad(child: Table, c: Condition): boolean {
  const test = rowTest(c, { likeSteps: 0 });
  let seen = 0;
  let hits = 0;
  for (const r of child.rows.values()) {
    if (test(r as unknown as Rec)) hits++;
    if (++seen >= SAMPLE) break;
  }
  return hits * 4 >= seen && seen > 0;
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
  // Row tests, run in this order (see the plan above): comparisons, join probes without and
  // with LIKEs, LIKEs.
  const residual: ((row: Rec) => boolean)[] = [];
  const probes: ((row: Rec) => boolean)[] = [];
  const likeProbes: ((row: Rec) => boolean)[] = [];
  const likes: ((row: Rec) => boolean)[] = [];
  const work: Work = { likeSteps: 0 };

  for (const [f, v] of Object.entries(scope)) {
    const hit = t.lookup(f, v);
    if (hit) hits.push(hit);
    else residual.push((row) => (row[f] ?? null) === v);
  }
  for (const c of spec.conditions) {
    if (c.nested) {
      const join = JOINS[c.nested]!;
      const child = tables(res.nested![c.nested]!.kind);
      const direct = indexCandidates(child, c);
      if (!direct && join.parentKey === 'uuid' && child.linked.has(join.childKey) && (isLike(c) || broad(child, c))) {
        (isLike(c) ? likeProbes : probes).push(joinProbe(child, c, work));
        continue;
      }
      const keys = joinKeys(child, c, direct, work);
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
    else (isLike(c) ? likes : residual).push(rowTest(c, work));
  }
  residual.push(...probes, ...likeProbes, ...likes);

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
  const nSets = sets.length;
  const nTests = residual.length;
  rows: for (const row of source) {
    for (let i = 0; i < nSets; i++) if (!sets[i]!.has(row.uuid)) continue rows;
    const rec = row as unknown as Rec;
    for (let i = 0; i < nTests; i++) if (!residual[i]!(rec)) continue rows;
    matched.push(row);
    if (matched.length >= stopAt) break;
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
