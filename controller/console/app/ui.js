// The console's small component kit: htm bound to Preact, formatting, badges, bars, modals,
// toasts and the event list. Pages import from here only.
import { h, render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);
export { render };

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${UNITS[i]}`;
}
export const num = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));
export const pct = (a, b) => (b > 0 ? Math.round((a / b) * 100) : 0);

export function ago(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(ts).toLocaleString();
}

const TONE = {
  Connected: 'ok', Disconnected: 'bad', Connecting: 'info',
  Enabled: 'ok', Disabled: 'idle', PreMaintenance: 'warn', Maintenance: 'brand',
  Running: 'ok', Stopped: 'idle', Starting: 'info', Stopping: 'info', Migrating: 'info', Paused: 'warn', Unknown: 'bad', Created: 'idle', Destroyed: 'idle',
  Succeeded: 'ok', Failed: 'bad', migrate: 'brand', stop: 'warn', skip: 'bad',
  migrated: 'ok', stopped: 'warn', failed: 'bad', migrating: 'info', stopping: 'info', pending: 'idle',
};
export const Badge = ({ v, plain }) => html`<span class=${`badge b-${TONE[v] || 'idle'}${plain ? ' plain' : ''}`} data-v=${v}>${v}</span>`;

/** A capacity bar: used, reserved (striped), free. */
export function CapBar({ label, total, used, reserved = 0, fmt = num, small }) {
  const u = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const r = total > 0 ? Math.min(100 - u, (reserved / total) * 100) : 0;
  const free = Math.max(0, total - used - reserved);
  if (small) return html`<span class="mini" title=${`${fmt(used)} used of ${fmt(total)}`}><div class="bar"><div class="u" style=${`width:${u}%`}></div><div class="r" style=${`width:${r}%`}></div></div></span>`;
  return html`<div class="cap">
    <div class="top"><span>${label}</span><span><b>${fmt(used)}</b> used${reserved ? html` · <b>${fmt(reserved)}</b> reserved` : ''} · <b>${fmt(free)}</b> free of ${fmt(total)}</span></div>
    <div class="bar"><div class="u" style=${`width:${u}%`}></div><div class="r" style=${`width:${r}%`}></div></div>
  </div>`;
}
export const Legend = () => html`<div class="legend"><span><i style="background:var(--used)"></i>Used</span><span><i style="background:var(--reserved)"></i>Reserved</span><span><i style="background:var(--free)"></i>Free</span></div>`;

export function Modal({ title, onClose, children, footer, wide }) {
  useEffect(() => {
    const k = (e) => { if (e.key === 'Escape') onClose?.(); };
    addEventListener('keydown', k);
    return () => removeEventListener('keydown', k);
  }, [onClose]);
  return html`<div class="scrim" onClick=${(e) => { if (e.target === e.currentTarget) onClose?.(); }}>
    <div class=${`modal${wide ? ' wide' : ''}`} role="dialog" aria-label=${title}>
      <header><h2>${title}</h2><button class="x" aria-label="Close" onClick=${onClose}>×</button></header>
      <div class="body">${children}</div>
      ${footer ? html`<footer>${footer}</footer>` : ''}
    </div>
  </div>`;
}

/** Asks before acting; shows the action's error inline and stays open on failure. */
export function Confirm({ title, children, confirm = 'Confirm', danger, onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState('');
  const go = async () => {
    setBusy(true);
    setErr('');
    try {
      await onConfirm();
      onClose();
    } catch (e) {
      setErr(e.message);
      setBusy(false);
    }
  };
  return html`<${Modal} title=${title} onClose=${onClose} footer=${html`
    <button onClick=${onClose}>Cancel</button>
    <button class=${danger ? 'danger solid' : 'primary'} disabled=${busy} onClick=${go}>${busy ? 'Working…' : confirm}</button>`}>
    ${err && html`<div class="alert">${err}</div>`}
    ${children}
  </${Modal}>`;
}

// ---- toasts ---------------------------------------------------------------------------
let pushToast = () => {};
export function toast(text, bad = false) { pushToast({ text, bad, id: Math.random() }); }
export function Toasts() {
  const [list, setList] = useState([]);
  useEffect(() => {
    pushToast = (t) => {
      setList((l) => [...l, t]);
      setTimeout(() => setList((l) => l.filter((x) => x.id !== t.id)), t.bad ? 8000 : 4000);
    };
  }, []);
  return html`<div class="toasts">${list.map((t) => html`<div class=${`toast${t.bad ? ' bad' : ''}`} key=${t.id}>${t.text}</div>`)}</div>`;
}

const DOT = { HostStatusChanged: (e) => (e.to === 'Connected' ? 'ok' : e.severity), MaintenanceDone: () => 'ok' };
/** What happened, in a few words (the full message is the tooltip). */
function what(e) {
  let reason = e.message.includes(': ') && e.type === 'HostStatusChanged' ? e.message.slice(e.message.indexOf(': ') + 2) : '';
  if (reason === 'connecting') reason = '';
  switch (e.type) {
    case 'HostStatusChanged': return html`${e.to === 'Connected' ? 'connected' : e.to === 'Disconnected' ? 'disconnected' : 'connecting'}${reason ? html` <span class="hint">— ${reason}</span>` : ''}`;
    case 'HostStateChanged': return html`${e.from} → <b>${e.to}</b>`;
    case 'VmStateChanged': return html`${e.from || 'new'} → <b>${e.to}</b>`;
    case 'MaintenanceStarted': return 'maintenance started';
    case 'MaintenanceDone': return 'is in Maintenance';
    case 'MaintenanceFailed': return e.message.replace(/^maintenance of host\[[^\]]*\] /, 'maintenance ');
    case 'JobStarted': return 'started';
    case 'JobFinished': return e.to === 'Failed' ? html`failed <span class="hint">— ${e.message.replace(/^.*?failed: /, '')}</span>` : 'succeeded';
    default: return e.message;
  }
}
const KIND = { HostVO: 'host', VmInstanceVO: 'vm', ApiJob: 'job' };
export function EventList({ events, empty = 'No events yet.' }) {
  if (!events.length) return html`<div class="empty">${empty}</div>`;
  return html`<ul class="events">${events.map((e) => html`<li key=${e.uuid} title=${e.message}>
    <span class=${`dot ${(DOT[e.type] || ((x) => x.severity))(e)}`}></span>
    <span><span class="kind">${KIND[e.resourceType] || ''}</span> ${e.hostUuid && e.resourceType === 'HostVO' ? html`<a href=${`#/hosts/${e.hostUuid}`}><b>${e.resourceName}</b></a>` : html`<b>${e.resourceName}</b>`} ${what(e)}</span>
    <time title=${e.createDate}>${ago(e.ts)}</time>
  </li>`)}</ul>`;
}

/** Re-renders every `ms` (relative times). */
export function useTick(ms) {
  const [, set] = useState(0);
  useEffect(() => { const t = setInterval(() => set((x) => x + 1), ms); return () => clearInterval(t); }, [ms]);
}

/** Loads `fn()` when deps change; returns [data, error, reload]. */
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: undefined, err: undefined });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    fn().then((data) => live && setState({ data, err: undefined }), (err) => live && setState((s) => ({ data: s.data, err })));
    return () => { live = false; };
  }, [...deps, n]);
  return [state.data, state.err, () => setN((x) => x + 1)];
}

export function copy(text) {
  // navigator.clipboard needs a secure context; a management network often serves plain HTTP.
  if (navigator.clipboard && isSecureContext) return navigator.clipboard.writeText(text).then(() => toast('Copied'));
  const t = document.createElement('textarea');
  t.value = text;
  document.body.appendChild(t);
  t.select();
  document.execCommand('copy');
  t.remove();
  toast('Copied');
  return Promise.resolve();
}
