// The console's one HTTP client: the same REST API as every client. Requests carry the
// console's header (the server takes the HttpOnly session cookie only with it, or for GETs:
// controller/api/console.ts) and async answers (202 + location) are followed to the job's end.

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.details || e.description || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
  }
}

/** Called when the session is gone (401): the app shows the login page. */
let onUnauthorized = () => {};
export const setUnauthorized = (fn) => { onUnauthorized = fn; };

export async function http(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { 'X-Hostkeeper-Console': '1', ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    credentials: 'same-origin',
  });
  const text = await r.text();
  let json;
  try { json = text ? JSON.parse(text) : {}; } catch { json = { error: { details: text } }; }
  if (r.status === 401 && !path.startsWith('/console/session')) onUnauthorized();
  return { status: r.status, body: json };
}

/** GET under /zstack/v1; throws ApiError unless 200. */
export async function get(path, params) {
  const qs = params ? `?${toQuery(params)}` : '';
  const r = await http('GET', `/zstack/v1${path}${qs}`);
  if (r.status !== 200) throw new ApiError(r.status, r.body);
  return r.body;
}

export function toQuery(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) for (const x of v) u.append(k, x);
    else u.append(k, String(v));
  }
  return u.toString();
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * A create, action or delete: sends it, then polls its job until it ends. `onProgress` hears
 * each 202's progress. Resolves with the job's result; throws ApiError with the job's error.
 */
export async function act(method, path, body, onProgress) {
  const r = await http(method, `/zstack/v1${path}`, body);
  if (r.status === 200) return r.body;
  if (r.status !== 202) throw new ApiError(r.status, r.body);
  const loc = new URL(r.body.location).pathname;
  for (let wait = 150; ; wait = Math.min(wait * 1.5, 1000)) {
    const j = await http('GET', loc);
    if (j.status === 202) {
      if (onProgress && j.body.progress) onProgress(j.body.progress);
      await sleep(wait);
      continue;
    }
    if (j.status === 200) return j.body;
    throw new ApiError(j.status, j.body);
  }
}

export const login = async (accountName, password) => {
  const r = await http('PUT', '/console/session', { logInByAccount: { accountName, password } });
  if (r.status !== 200) throw new ApiError(r.status, r.body);
  return r.body;
};
export const logout = () => http('DELETE', '/console/session');
export const whoami = async () => {
  const r = await http('GET', '/console/session');
  return r.status === 200 ? r.body : null;
};

// ---- the live event stream: one EventSource for the whole app, fanned out -------------
const listeners = new Set();
const stateListeners = new Set();
let source;
let connected = false;

export function startStream() {
  if (source) return;
  source = new EventSource('/zstack/v1/event-stream');
  source.onopen = () => { connected = true; for (const fn of stateListeners) fn(true); };
  source.onerror = () => { connected = false; for (const fn of stateListeners) fn(false); };
  source.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    for (const fn of listeners) fn(ev);
  };
}
export function stopStream() {
  source?.close();
  source = undefined;
  connected = false;
}
/** Hears every event; returns the unsubscribe function. */
export function onEvent(fn) { listeners.add(fn); return () => listeners.delete(fn); }
/** Hears the stream going up (true) or down (false). */
export function onStream(fn) { stateListeners.add(fn); fn(connected); return () => stateListeners.delete(fn); }

/** Host rows the hosts table last showed: a host's page renders from its row at once. */
export const hostRows = new Map();
