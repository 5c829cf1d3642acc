/**
 * Value formats shared by the controller, the CLI and (later) the agent: ZStack uuids,
 * ZStack dates, memory sizes, IPv4 addresses and host names.
 */
import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';

export const UUID_RE = /^[0-9a-f]{32}$/;

/** ZStack style: 32 lowercase hex digits, no dashes. */
export function newUuid(): string {
  return randomBytes(16).toString('hex');
}

export function isUuid(s: unknown): s is string {
  return typeof s === 'string' && UUID_RE.test(s);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * ZStack writes dates as Java's en-US medium format in UTC: `Jun 1, 2015 6:49:24 PM`.
 * Its SDK throws on anything else, so this is the only format the API ever emits.
 */
export function formatZStackDate(ms: number): string {
  const d = new Date(ms);
  const h24 = d.getUTCHours();
  const h12 = h24 % 12 === 0 ? 12 : h24 % 12;
  const mm = String(d.getUTCMinutes()).padStart(2, '0');
  const ss = String(d.getUTCSeconds()).padStart(2, '0');
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}, ${d.getUTCFullYear()} ${h12}:${mm}:${ss} ${h24 < 12 ? 'AM' : 'PM'}`;
}

const ZSTACK_DATE_RE = /^([A-Z][a-z]{2}) (\d{1,2}), (\d{4}) (\d{1,2}):(\d{2}):(\d{2})[ \u202f](AM|PM)$/;
const ISO_DATE_RE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** Parses a ZStack date or an ISO-8601 one (UTC when no zone is given); undefined when neither. */
export function parseDate(s: string): number | undefined {
  const z = ZSTACK_DATE_RE.exec(s);
  if (z) {
    const month = MONTHS.indexOf(z[1]!);
    let h = Number(z[4]);
    if (month < 0 || h < 1 || h > 12) return undefined;
    if (z[7] === 'AM' && h === 12) h = 0;
    else if (z[7] === 'PM' && h !== 12) h += 12;
    return Date.UTC(Number(z[3]), month, Number(z[2]), h, Number(z[5]), Number(z[6]));
  }
  if (ISO_DATE_RE.test(s)) {
    const hasZone = /(Z|[+-]\d{2}:?\d{2})$/.test(s) && s.length > 10;
    const t = Date.parse(hasZone ? s : s.length === 10 ? `${s}T00:00:00Z` : `${s.replace(' ', 'T')}Z`);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

const SIZE_RE = /^(\d+)\s*([BKMGT]?)$/i;
const UNIT: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * A memory size as ZStack takes it: a whole number with an optional unit B/K/M/G/T
 * (powers of 1024); no unit means bytes. Returns undefined for anything else.
 */
export function parseSize(s: string): number | undefined {
  const m = SIZE_RE.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * UNIT[m[2]!.toUpperCase()]!;
  return Number.isSafeInteger(n) ? n : undefined;
}

export function formatSize(bytes: number): string {
  for (const u of ['T', 'G', 'M', 'K'] as const) {
    if (bytes >= UNIT[u]! && bytes % UNIT[u]! === 0) return `${bytes / UNIT[u]!}${u}`;
  }
  return `${bytes}B`;
}

/** A socket address without the IPv4-mapped IPv6 prefix (`::ffff:10.0.0.1` -> `10.0.0.1`). */
export function plainIPv4(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}

export function isIPv4Address(s: string): boolean {
  return isIPv4(s);
}

const LABEL_RE = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/**
 * ZStack's rule (HostApiInterceptor): a management IP is an IPv4 address or a valid host
 * name. A dotted all-numeric string that is not IPv4 (`10.0.0.300`) is refused, not
 * taken as a host name.
 */
export function isManagementAddress(s: string): boolean {
  if (isIPv4(s)) return true;
  if (s.length === 0 || s.length > 253) return false;
  if (/^[\d.]+$/.test(s)) return false;
  return s.split('.').every((l) => LABEL_RE.test(l));
}
