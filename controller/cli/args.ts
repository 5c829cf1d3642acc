/**
 * Pure parts of the CLI: zstack-cli `key=value` / query-condition parsing, request building
 * and help text. No I/O here, so all of it is tested table-driven (test/cli/args.test.ts).
 */
import { splitCondition } from '../../protocol/query.ts';
import { ACTIONS, QUERY_KEYS, type ActionDef, type KeyDef, type Method, type PathContext, type Value, type Values } from './actions.ts';

/** A mistake in the command line: reported in one line, exit 2, nothing sent. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface Parsed {
  /** Checked, typed values of the action's keys (defaults applied). */
  values: Values;
  /** Query-string pairs in order: each condition as its own `q`, then the reserved keys. */
  search: Array<[string, string]>;
}

export interface RestRequest {
  method: Method;
  /** Below `<url>/zstack`, e.g. `/v1/hosts/kvm`. */
  path: string;
  search: Array<[string, string]>;
  body?: unknown;
}

/**
 * One zstack-cli condition to the REST `q=` form. The field/operator split is the server's
 * own (protocol/query.ts `splitCondition`: field `[A-Za-z_][A-Za-z0-9_.]*`, then the longest
 * operator), so both ends read an argument the same way. zstack-cli's `field=null` and
 * `field!=null` become `field is null` / `field not null`; `field is null` passes through.
 */
export function translateCondition(arg: string): string {
  const { field, op, raw } = splitArg(arg);
  if (raw === 'null' && op === '=') return `${field} is null`;
  if (raw === 'null' && op === '!=') return `${field} not null`;
  return raw === undefined ? `${field} ${op}` : `${field}${op}${raw}`;
}

function splitArg(arg: string): ReturnType<typeof splitCondition> {
  try {
    return splitCondition(arg);
  } catch {
    throw new UsageError(
      `argument [${arg}] is not <field><operator><value>; operators are = != > < >= <= ?= !?= ~= !~= (and field=null, field!=null)`,
    );
  }
}

function keyNames(keys: readonly KeyDef[]): string {
  return keys.map((k) => k.name).join(', ');
}

function convert(def: ActionDef, key: KeyDef, raw: string): Value {
  if (key.values && !key.values.includes(raw)) {
    throw new UsageError(`${def.name}: ${key.name} must be one of ${key.values.join(', ')}, not [${raw}]`);
  }
  switch (key.type) {
    case 'int':
      if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
        throw new UsageError(`${def.name}: ${key.name} takes an integer, not [${raw}]`);
      }
      return Number(raw);
    case 'list':
      return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    default:
      return raw;
  }
}

/** Parses the arguments after the action name. Throws UsageError naming the offending key. */
export function parseArgs(def: ActionDef, argv: readonly string[]): Parsed {
  const values: Values = {};
  const conditions: string[] = [];
  const seen = new Set<string>();
  const set = (key: KeyDef, raw: string) => {
    if (seen.has(key.name)) throw new UsageError(`${def.name}: key [${key.name}] is given twice`);
    seen.add(key.name);
    values[key.name] = convert(def, key, raw);
  };

  for (const arg of argv) {
    if (def.query) {
      const { field, op, raw } = splitArg(arg);
      const key = def.keys.find((k) => k.name === field);
      if (key) {
        if (op !== '=') throw new UsageError(`${def.name}: ${field} is not a condition; write ${field}=<value>, not ${op}`);
        set(key, raw ?? '');
      } else {
        conditions.push(translateCondition(arg));
      }
      continue;
    }
    const eq = arg.indexOf('=');
    if (eq <= 0) {
      throw new UsageError(`${def.name}: argument [${arg}] is not key=value` + (def.keys.length ? `; keys are ${keyNames(def.keys)}` : ''));
    }
    const name = arg.slice(0, eq);
    const key = def.keys.find((k) => k.name === name);
    if (!key) {
      throw new UsageError(
        `${def.name} has no key [${name}]` + (def.keys.length ? `; its keys are ${keyNames(def.keys)}` : '; it takes no keys'),
      );
    }
    set(key, arg.slice(eq + 1));
  }

  for (const key of def.keys) {
    if (values[key.name] !== undefined) continue;
    if (key.default !== undefined) values[key.name] = convert(def, key, key.default);
    else if (key.required) throw new UsageError(`${def.name} needs key [${key.name}]`);
  }

  const search: Array<[string, string]> = conditions.map((c) => ['q', c]);
  if (def.query) {
    if (values.sortDirection !== undefined && values.sortBy === undefined) {
      throw new UsageError(`${def.name}: sortDirection needs sortBy`);
    }
    for (const k of ['limit', 'start', 'count', 'replyWithCount'] as const) {
      if (values[k] !== undefined) search.push([k, String(values[k])]);
    }
    if (values.sortBy !== undefined) search.push(['sort', `${values.sortDirection === 'desc' ? '-' : '+'}${values.sortBy}`]);
    if (values.fields !== undefined) search.push(['fields', String(values.fields)]);
  } else {
    for (const key of def.keys) {
      if (key.in === 'query' && values[key.name] !== undefined) search.push([key.name, String(values[key.name])]);
    }
  }
  return { values, search };
}

/** The REST call an action makes: method, path, query string and body envelope. */
export function buildRequest(def: ActionDef, parsed: Parsed, ctx: PathContext = {}): RestRequest {
  const request: RestRequest = { method: def.method, path: def.path(parsed.values, ctx), search: parsed.search };
  if (def.envelope !== undefined) {
    const inner: Record<string, Value> = {};
    const top: Record<string, Value> = {};
    for (const key of def.keys) {
      const v = parsed.values[key.name];
      if (v === undefined) continue;
      if (key.in === undefined || key.in === 'body') inner[key.name] = v;
      else if (key.in === 'top') top[key.name] = v;
    }
    request.body = { [def.envelope]: inner, ...top };
  }
  return request;
}

/** `/zstack/v1/hosts?q=...`: every name and value URL-encoded (`+` as %2B, space as %20). */
export function requestTarget(request: RestRequest): string {
  const qs = request.search.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  return `/zstack${request.path}${qs ? `?${qs}` : ''}`;
}

function keyUsage(key: KeyDef): string {
  const shown = key.values?.join('|') ?? key.hint ?? (key.type === 'int' ? 'N' : key.type === 'list' ? 'a,b' : '');
  const text = `${key.name}=${shown}`;
  return key.required ? text : `[${text}]`;
}

/** One line: the action and its keys, optional ones in brackets. */
export function usageLine(def: ActionDef): string {
  const parts = [def.name];
  if (def.query) parts.push('[<field><op><value> ...]');
  parts.push(...def.keys.map(keyUsage));
  return parts.join(' ');
}

export function helpText(): string {
  return [
    'Usage: hostkeeper <Action> key=value ...   (zstack-cli syntax)',
    '',
    ...ACTIONS.map((a) => `  ${usageLine(a)}`),
    '',
    'Query conditions: <field><op><value> with op one of = != > < >= <= ?= (in a,b) !?= ~= (like, % and _) !~=;',
    '  field=null / field!=null test for null; nested fields like vmInstance.vmNics.ip=10.0.0.5.',
    'Environment: HOSTKEEPER_URL (default http://127.0.0.1:8080); session in ~/.hostkeeper/session',
    '  (HOSTKEEPER_SESSION_FILE overrides the path).',
    '',
  ].join('\n');
}

export function actionHelp(def: ActionDef): string {
  const lines = [`Usage: hostkeeper ${usageLine(def)}`];
  const restForm = decodeURIComponent(def.path(Object.fromEntries(def.keys.map((k) => [k.name, `<${k.name}>`])), { session: '<session>' }));
  lines.push(`  REST: ${def.method} /zstack${restForm}${def.envelope !== undefined ? ` {"${def.envelope}":{...}}` : ''}`);
  if (def.query) {
    lines.push('  Conditions: <field><op><value>, op one of = != > < >= <= ?= !?= ~= !~=; field=null, field!=null.');
    lines.push(`  Reserved keys (only =): ${QUERY_KEYS.map((k) => k.name).join(', ')}.`);
  }
  return `${lines.join('\n')}\n`;
}
