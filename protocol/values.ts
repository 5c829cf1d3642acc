/**
 * Value formats shared by the controller, the CLI and (later) the agent: ZStack uuids,
 * ZStack dates, memory sizes, IPv4 addresses and host names.
 */
import { randomBytes } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

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
 * ZStack writes dates as Java's en-US medium format, `Jun 1, 2015 6:49:24 PM`, in the
 * management node's time zone; its SDK parses them in the client's. So: UTC by default, and
 * the zone in `TZ` when it is set (Node applies TZ to the Date's local getters). The SDK
 * throws on anything else, so this is the only format the API ever emits.
 */
const LOCAL = typeof process !== 'undefined' && !!process.env.TZ && !/^(UTC|Etc\/UTC|UTC0|:?UTC)$/i.test(process.env.TZ);

export function formatZStackDate(ms: number): string {
  const d = new Date(ms);
  const h24 = LOCAL ? d.getHours() : d.getUTCHours();
  const h12 = h24 % 12 === 0 ? 12 : h24 % 12;
  const mm = String(LOCAL ? d.getMinutes() : d.getUTCMinutes()).padStart(2, '0');
  const ss = String(LOCAL ? d.getSeconds() : d.getUTCSeconds()).padStart(2, '0');
  const [mon, day, year] = LOCAL ? [d.getMonth(), d.getDate(), d.getFullYear()] : [d.getUTCMonth(), d.getUTCDate(), d.getUTCFullYear()];
  return `${MONTHS[mon]} ${day}, ${year} ${h12}:${mm}:${ss} ${h24 < 12 ? 'AM' : 'PM'}`;
}

const ZSTACK_DATE_RE = /^([A-Z][a-z]{2}) (\d{1,2}), (\d{4}) (\d{1,2}):(\d{2}):(\d{2})[ \u202f](AM|PM)$/;
const ISO_DATE_RE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * Parses a ZStack date (in the zone dates are written in: UTC, or TZ when set) or an ISO-8601
 * one (UTC when it names no zone); undefined when neither.
 */
export function parseDate(s: string): number | undefined {
  const z = ZSTACK_DATE_RE.exec(s);
  if (z) {
    const month = MONTHS.indexOf(z[1]!);
    let h = Number(z[4]);
    if (month < 0 || h < 1 || h > 12) return undefined;
    if (z[7] === 'AM' && h === 12) h = 0;
    else if (z[7] === 'PM' && h !== 12) h += 12;
    const parts = [Number(z[3]), month, Number(z[2]), h, Number(z[5]), Number(z[6])] as const;
    return LOCAL ? new Date(...parts).getTime() : Date.UTC(...parts);
  }
  if (ISO_DATE_RE.test(s)) {
    const hasZone = /(Z|[+-]\d{2}:?\d{2})$/.test(s) && s.length > 10;
    const t = Date.parse(hasZone ? s : s.length === 10 ? `${s}T00:00:00Z` : `${s.replace(' ', 'T')}Z`);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

// Anchored on both ends with nothing around: `"1\n"`, `" 5"`, `"1 G"` are refused, not trimmed
// (a value with stray whitespace is a mistake, and a config or tag must read back as written).
// JavaScript's `$` matches only at the very end (no multiline flag), and \d only ASCII digits.
const SIZE_RE = /^(\d+)([BKMGT]?)$/i;
const UNIT: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * A memory size as ZStack takes it: a whole number with an optional unit B/K/M/G/T
 * (powers of 1024, either case); no unit means bytes. Nothing else may be around it.
 * Returns undefined for anything else, and for sizes past 2^53 bytes (8 PiB).
 */
export function parseSize(s: string): number | undefined {
  const m = SIZE_RE.exec(s);
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

// ---- names ------------------------------------------------------------------------------------

// C0 and C1 controls and DEL, the Unicode line and paragraph separators, and the bidirectional
// overrides and isolates: they break log lines, CLI tables and scripts that read names, and can
// make a name display as something it is not. Right-to-left text needs none of them.
const UNPRINTABLE_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/**
 * Why `s` cannot name a resource (zone, cluster, host, VM), or undefined when it can: it must
 * hold something besides white space, and no control characters. Length is the schema's rule.
 */
export function nameProblem(s: string): string | undefined {
  if (UNPRINTABLE_RE.test(s)) return 'must not contain control characters';
  if (s.trim() === '') return 'must not be empty or only white space';
  return undefined;
}

export const isResourceName = (s: string): boolean => nameProblem(s) === undefined;

/** Free text (versions, OS names) an agent reports: no control characters, anything else goes. */
export const isPrintable = (s: string): boolean => !UNPRINTABLE_RE.test(s);

// ---- addresses ----------------------------------------------------------------------------------

/** A socket address without the IPv4-mapped IPv6 prefix (`::ffff:10.0.0.1` -> `10.0.0.1`). */
export function plainIPv4(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}

export function isIPv4Address(s: string): boolean {
  return isIPv4(s);
}

/**
 * One part of an address as inet_aton(3) reads it: `0x` hexadecimal, `0`-led octal, else
 * decimal. Undefined when malformed (`08`, `0x`, `1a`).
 */
function inetPart(p: string): number | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(p)) return parseInt(p.slice(2), 16);
  if (/^0[0-7]*$/.test(p)) return parseInt(p, 8);
  if (/^[1-9][0-9]*$/.test(p)) return parseInt(p, 10);
  return undefined;
}

/**
 * An IPv4 address in any spelling inet_aton(3) accepts, which is what Node's dns.lookup (and
 * so http.request and net.connect) resolves a numeric host with: `a.b.c.d`, `a.b.c` (c fills
 * 16 bits), `a.b` (24), `a` (32), each part decimal, octal or hex. `0x7f.1` is 127.0.0.1 and
 * `010.0.0.1` is 8.0.0.1. Returns dotted decimal, or undefined when inet_aton would refuse it.
 */
export function parseInetAton(s: string): string | undefined {
  const parts = s.split('.');
  if (parts.length > 4) return undefined;
  const nums = parts.map(inetPart);
  if (nums.some((n) => n === undefined)) return undefined;
  const last = nums.pop()!;
  if (nums.some((n) => n! > 255) || last >= 256 ** (4 - nums.length)) return undefined;
  let v = last;
  nums.forEach((n, i) => (v += n! * 256 ** (3 - i)));
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

/** The eight 16-bit pieces of an IPv6 address; undefined when not one (zone ids included). */
function ipv6Pieces(s: string): number[] | undefined {
  if (!isIPv6(s) || s.includes('%')) return undefined;
  const pieces = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').flatMap((p) => {
        if (!p.includes('.')) return [parseInt(p, 16)];
        const o = p.split('.').map(Number);
        return [o[0]! * 256 + o[1]!, o[2]! * 256 + o[3]!];
      });
  const gap = s.indexOf('::');
  if (gap < 0) return pieces(s);
  const head = pieces(s.slice(0, gap));
  const tail = pieces(s.slice(gap + 2));
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/** RFC 5952: lowercase, no leading zeros, the first longest run (>= 2) of zero pieces as `::`. */
function formatIPv6(p: number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && p[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(p) : `${hex(p.slice(0, best))}::${hex(p.slice(best + bestLen))}`;
}

/**
 * One spelling per address, so that two spellings of one address compare equal: IPv4 in any
 * inet_aton form -> dotted decimal; IPv6 -> RFC 5952; IPv4-mapped IPv6 (`::ffff:a.b.c.d`,
 * `::ffff:7f00:1`) -> the IPv4 address. Undefined when `s` is not an IP address.
 */
export function normalizeIp(s: string): string | undefined {
  if (!s.includes(':')) return parseInetAton(s);
  const p = ipv6Pieces(s);
  if (!p) return undefined;
  if (p.slice(0, 5).every((x) => x === 0) && p[5] === 0xffff) {
    return [p[6]! >> 8, p[6]! & 255, p[7]! >> 8, p[7]! & 255].join('.');
  }
  return formatIPv6(p);
}

/** 127.0.0.0/8 or ::1, in any spelling. */
export function isLoopback(ip: string): boolean {
  const n = normalizeIp(ip);
  return n !== undefined && (n === '::1' || n.startsWith('127.'));
}

const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A last label that is a number: the name is an IPv4 spelling (as the URL standard reads it). */
const NUMERIC_LABEL_RE = /^(\d+|0x[0-9a-f]*)$/;
/** Names every resolver maps to this machine (RFC 6761 reserves all of .localhost). */
const LOCAL_NAME_RE = /^(localhost|localhost4|localhost6|ip6-localhost|ip6-loopback)(\.localdomain[46]?)?$|(^|\.)localhost$/;

export type AddressCheck = { address: string; problem?: undefined } | { address?: undefined; problem: string };

/**
 * ZStack's rule (HostApiInterceptor) made exact: a management address is an IPv4 address or a
 * host name, and it is returned in the one spelling the inventory stores and compares:
 * - IPv4 in dotted decimal; `::ffff:a.b.c.d` is taken as a.b.c.d. Any other spelling the OS
 *   would also connect to (`0x7f.0.0.12`, `127.12`, `010.0.0.1`) is refused, naming the address
 *   it means: accepting it would register a second host for one address, and `010.0.0.1` is
 *   8.0.0.1, not the 10.0.0.1 its writer meant.
 * - Loopback (127.x.y.z) is allowed: tests and simulated fleets live there. 0.0.0.0/8 (this
 *   machine), multicast and broadcast are not a host's address.
 * - Host names are lowercased (DNS ignores case); `localhost` and its kin are refused, since
 *   they name the controller's own machine. Limit: a name is not resolved, so a name that
 *   resolves to the controller is not caught here.
 * - IPv6 is refused, as ZStack does: agent URLs and the playbook's inventory assume IPv4.
 */
export function normalizeManagementAddress(raw: string): AddressCheck {
  const notAddress = { problem: 'is neither an IPv4 address nor a valid hostname' };
  if (raw.length === 0 || raw.length > 253) return notAddress;
  let ip: string | undefined;
  if (raw.includes(':')) {
    ip = normalizeIp(raw);
    if (ip === undefined) return notAddress;
    if (!isIPv4(ip)) return { problem: `is an IPv6 address; a management address is an IPv4 address or a hostname` };
  } else {
    const name = raw.toLowerCase();
    const labels = name.split('.');
    if (!NUMERIC_LABEL_RE.test(labels[labels.length - 1]!)) {
      if (!labels.every((l) => LABEL_RE.test(l))) return notAddress;
      if (LOCAL_NAME_RE.test(name)) return { problem: 'names the controller\'s own machine; give the host\'s address' };
      return { address: name };
    }
    ip = parseInetAton(raw);
    if (ip === undefined) return notAddress;
    if (ip !== raw) return { problem: `means ${ip}; write it as ${ip}` };
  }
  const first = Number(ip.split('.')[0]);
  if (first === 0 || first >= 224) {
    return { problem: `is not a host's address (0.0.0.0/8 means "this machine"; 224.0.0.0 and above are multicast, reserved or broadcast)` };
  }
  return { address: ip };
}

/** Whether `s` is accepted as a management address (see normalizeManagementAddress). */
export function isManagementAddress(s: string): boolean {
  return normalizeManagementAddress(s).address !== undefined;
}

/**
 * Where the controller itself answers: the port of its API and the addresses it is reached at.
 * A host whose agent address is one of these would have the controller call itself.
 */
export interface ControllerEndpoint {
  /** The admin API's port, and the agent-side port when it is another. */
  ports: readonly number[];
  /** Normalised addresses of this machine (any spelling is accepted and normalised by the check). */
  addresses: readonly string[];
}

/**
 * Whether an agent at `ip:port` is the controller's own API. Loopback counts as the controller's
 * own machine, as does any of its addresses. Limit: a host name is not resolved.
 */
export function isControllerEndpoint(ip: string, port: number, self: ControllerEndpoint): boolean {
  if (!self.ports.includes(port)) return false;
  const n = normalizeIp(ip);
  if (n === undefined) return false;
  return isLoopback(n) || self.addresses.some((a) => normalizeIp(a) === n);
}
