/**
 * The agent's one HTTP client, on axios: registration and CA discovery (register.ts),
 * certificate requests (certs.ts), facts pushes (server.ts) and the migration hand-over to
 * another agent (delivery.ts). None of these is a hot path: an agent makes a handful of them
 * in its life, a migration one (its figures are the transfer's, not the request's); the
 * measured hot path, the controller's pings and channel, is served by the agent's server, not
 * made by this client. So the one client is axios, as the project's design says, with:
 *
 * - `proxy: false`: HTTP(S)_PROXY from the environment is ignored. The first request carries
 *   the bootstrap token and later ones the host's signatures; a proxy must never see them, and
 *   the agent talks to the address it was given.
 * - a timeout per call (socket inactivity, and the connect phase), bounded bodies both ways
 *   (maxContentLength for answers, maxBodyLength for ours), no redirects.
 * - TLS through an https.Agent per call carrying the pinned CA, our client certificate, and
 *   who the server must be (checkServerIdentity). One per call, not kept: calls are rare, and
 *   a fleet process runs thousands of agents (an https.Agent kept by each would add up).
 * - No keep-alive (Node 20's global agent keeps sockets open: ours does not).
 * - The answer's exact bytes (responseType 'arraybuffer', no decompression, no transform):
 *   answer signatures are verified over them.
 *
 * Memory, measured with bench/agent-rss.bench.ts (agent/README.md "Footprint"): imported as
 * is, axios took an idle registered agent from 70.4 to 75.9 MB (+5.5), most of it undici,
 * which axios makes Node load. Loaded at the first call with undici's lazy globals hidden
 * (importAxios below) and without Node's http2 in the bundle (build.ts), it costs +2.0 MB once
 * an agent has called the controller (72.4 MB) and +0.3-0.8 MB before (a restarted agent that
 * calls nobody: 61.9 MB). Those figures were over the 60 MB target for other reasons
 * (@peculiar/x509, ICU data, all of systeminformation: agent/README.md "Footprint"); without
 * them a registered agent (axios loaded) idles at 54.7 MB and a restarted one that calls
 * nobody at 53.5 MB, so axios stays the one client. A fleet process loads it once: per agent
 * it keeps nothing.
 */
import http from 'node:http';
import https from 'node:https';
import type { PeerCertificate } from 'node:tls';
import type { AxiosError, AxiosInstance } from 'axios';
import { AGENT_VERSION } from '../protocol/agent.ts';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body as received (answer signatures are over these bytes). */
  raw: Buffer;
  /** Parsed JSON, or undefined when the body was not JSON. */
  body: unknown;
  text: string;
}

export const MAX_ANSWER_BYTES = 1024 * 1024;
/** Our bodies are a facts push, a registration, a public key or one VM: a few KB. */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/** The text of a network error: `ECONNREFUSED`, `timed out after 30000 ms`, `TLS: ...`. */
export class NetworkError extends Error {}

/** TLS settings of a call: trusted CAs, our client certificate, who the server must be. */
export interface ClientTls {
  ca?: string;
  key?: string;
  cert?: string;
  /** False only in the provisional phase (agent/tls.ts says why that is safe). */
  rejectUnauthorized?: boolean;
  checkServerIdentity?: (host: string, cert: PeerCertificate) => Error | undefined;
}

let client: Promise<{ http: AxiosInstance; isError: (e: unknown) => e is AxiosError }> | undefined;

/**
 * axios is loaded at the first call, not at start: it costs the process ~5 MB of resident
 * memory (bench/agent-rss.bench.ts), and an agent that restarts with its secret and a valid
 * certificate may never call the controller (it is called, not calling) until its facts change.
 */
function axiosClient(): NonNullable<typeof client> {
  return (client ??= importAxios().then(({ default: axios, isAxiosError }) => ({
    http: axios.create({
      proxy: false,
      maxRedirects: 0,
      maxContentLength: MAX_ANSWER_BYTES,
      maxBodyLength: MAX_REQUEST_BYTES,
      responseType: 'arraybuffer',
      decompress: false,
      transformResponse: (d: unknown) => d,
      // Every status is an answer: callers read the controller's error body.
      validateStatus: () => true,
      adapter: 'http',
      httpAgent: new http.Agent({ keepAlive: false }),
      headers: { 'user-agent': `hostkeeper-agent/${AGENT_VERSION}`, accept: 'application/json', 'accept-encoding': 'identity' },
    }),
    isError: isAxiosError,
  })).catch((err: unknown) => {
    client = undefined;
    throw new NetworkError(`cannot load axios: ${(err as Error).message}`);
  }));
}

/**
 * Node 20 defines fetch's classes (FormData, Headers, Request, Response, ReadableStream) as lazy
 * globals: the first read loads undici, +11.6 MB resident in a bare process (`node -e
 * "globalThis.FormData"`: 39.6 -> 51.2 MB). axios reads them while it loads (utils.js looks for
 * a FormData class, its fetch adapter probes Request and Response), and the agent needs none of
 * them (adapter 'http', JSON bodies). So they are hidden while axios loads and put back as they
 * were right after: axios then sees no fetch (we do not use it) and tells FormData by its tag.
 * Nothing else in the agent reads them (it never uses fetch), so the short window is harmless.
 */
const UNDICI_GLOBALS = ['fetch', 'FormData', 'Headers', 'Request', 'Response', 'ReadableStream'];

async function importAxios(): Promise<typeof import('axios')> {
  const saved = UNDICI_GLOBALS.map((k) => [k, Object.getOwnPropertyDescriptor(globalThis, k)] as const);
  for (const [k, d] of saved) if (d?.configurable) Object.defineProperty(globalThis, k, { value: undefined, configurable: true, writable: true });
  try {
    return await import('axios');
  } finally {
    for (const [k, d] of saved) if (d?.configurable) Object.defineProperty(globalThis, k, d);
  }
}

export function postJson(url: string, payload: string, headers: Record<string, string>, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  return request('POST', url, payload, headers, timeoutMs, tls);
}

export function getJson(url: string, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  return request('GET', url, undefined, {}, timeoutMs, tls);
}

async function request(method: string, url: string, payload: string | undefined, headers: Record<string, string>, timeoutMs: number, tls?: ClientTls): Promise<HttpAnswer> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new NetworkError(`bad URL ${url}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new NetworkError(`bad URL ${url}`);
  const secure = u.protocol === 'https:';
  const ax = await axiosClient();
  try {
    const res = await ax.http.request<Buffer>({
      method,
      url,
      // A Buffer goes out as it is (a string would be trimmed by axios's JSON handling): the
      // signature in `headers` is over exactly these bytes.
      data: payload === undefined ? undefined : Buffer.from(payload, 'utf8'),
      headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
      timeout: timeoutMs,
      httpsAgent: secure ? new https.Agent({ keepAlive: false, maxCachedSessions: 0, rejectUnauthorized: true, ...tls }) : undefined,
    });
    const raw = Buffer.isBuffer(res.data) ? res.data : Buffer.alloc(0);
    const text = raw.toString('utf8');
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    // AxiosHeaders keeps Node's lower-case names as own properties.
    return { status: res.status, headers: { ...res.headers } as http.IncomingHttpHeaders, raw, body, text };
  } catch (err) {
    throw networkError(ax.isError(err) ? err : undefined, err, timeoutMs);
  }
}

/** An axios failure in the words callers (and delivery.ts's "was anything sent?") expect. */
function networkError(err: AxiosError | undefined, other: unknown, timeoutMs: number): NetworkError {
  if (!err) return new NetworkError((other as Error)?.message ?? String(other));
  if ((err.code === 'ECONNABORTED' || err.code === 'ETIMEDOUT') && /timeout/i.test(err.message)) return new NetworkError(`timed out after ${timeoutMs} ms`);
  if (/maxContentLength/.test(err.message)) return new NetworkError(`answer larger than ${MAX_ANSWER_BYTES} bytes`);
  if (/maxBodyLength/.test(err.message)) return new NetworkError(`request larger than ${MAX_REQUEST_BYTES} bytes`);
  // axios keeps the system error as `cause` and copies its code.
  const cause = (err.cause ?? err) as NodeJS.ErrnoException;
  return new NetworkError(tlsWords(cause) ?? cause.code ?? err.code ?? cause.message ?? err.message);
}

/** `error` of an agent/controller answer, or its status line. */
export function answerError(a: HttpAnswer): string {
  const b = a.body as { error?: unknown } | undefined;
  if (b && typeof b.error === 'string' && b.error) return b.error;
  if (b && typeof b.error === 'object' && b.error) {
    const e = b.error as { description?: unknown; details?: unknown };
    return [e.description, e.details].filter((x) => typeof x === 'string' && x).join(': ') || JSON.stringify(b.error);
  }
  return a.text.slice(0, 200) || `HTTP ${a.status}`;
}

/** `base` + `path` with one slash between. */
export function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, '') + path;
}

/** A TLS failure in words (the server is not who we pinned), else undefined. */
function tlsWords(err: NodeJS.ErrnoException): string | undefined {
  const c = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL/.test(c) || /certificate/i.test(err.message ?? '')) return `TLS: ${err.message} (${c || 'handshake'})`;
  return undefined;
}
