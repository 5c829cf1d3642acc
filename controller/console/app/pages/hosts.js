// Hosts: a page of the table at a time (limit/start/replyWithCount, so 10,000 hosts cost one
// page), filtered and sorted by the query language on the server, and kept live by the event
// stream: a host's status or state change patches its row in place (batched per frame), the
// table is never polled.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { Badge, bytes, CapBar, html, num } from '../ui.js';
import * as api from '../api.js';
import { AddHost, BootstrapToken } from './host-add.js';

const FIELDS = 'uuid,name,managementIp,clusterUuid,state,status,cpuNum,totalCpuCapacity,availableCpuCapacity,totalMemoryCapacity,availableMemoryCapacity';
const STATUSES = ['Connected', 'Connecting', 'Disconnected'];
const STATES = ['Enabled', 'Disabled', 'PreMaintenance', 'Maintenance'];

function fromHash() {
  const qs = new URLSearchParams(location.hash.split('?')[1] || '');
  return { q: qs.getAll('q'), sort: qs.get('sort') || '+name', start: Number(qs.get('start') || 0), limit: Number(qs.get('limit') || 50) };
}
function toHash(s) {
  const qs = api.toQuery({ q: s.q, sort: s.sort === '+name' ? undefined : s.sort, start: s.start || undefined, limit: s.limit === 50 ? undefined : s.limit });
  const h = `#/hosts${qs ? `?${qs}` : ''}`;
  if (location.hash !== h) history.replaceState(null, '', h);
}

/** The typed filter: the name search, the two selects and free conditions separated by ";". */
function conditions(f) {
  const out = [];
  if (f.text) out.push(/^\d+\.\d+/.test(f.text) ? `managementIp~=${f.text}%` : `name~=%${f.text}%`);
  if (f.status) out.push(`status=${f.status}`);
  if (f.state) out.push(`state=${f.state}`);
  if (f.cluster) out.push(`clusterUuid=${f.cluster}`);
  for (const c of f.extra.split(';').map((x) => x.trim()).filter(Boolean)) out.push(c);
  return out;
}
function parseConditions(q) {
  const f = { text: '', status: '', state: '', cluster: '', extra: [] };
  for (const c of q) {
    let m;
    if ((m = /^status=(\w+)$/.exec(c)) && STATUSES.includes(m[1])) f.status = m[1];
    else if ((m = /^state=(\w+)$/.exec(c)) && STATES.includes(m[1])) f.state = m[1];
    else if ((m = /^clusterUuid=([0-9a-f]{32})$/.exec(c))) f.cluster = m[1];
    else if ((m = /^name~=%(.*)%$/.exec(c))) f.text = m[1];
    else f.extra.push(c);
  }
  return { ...f, extra: f.extra.join('; ') };
}

const COLS = [
  ['name', 'Name'], ['managementIp', 'Management IP'], ['clusterUuid', 'Cluster'], ['state', 'State'], ['status', 'Status'],
  ['totalCpuCapacity', 'CPU used', true], ['totalMemoryCapacity', 'Memory used', true],
];

export function Hosts() {
  const init = useMemo(fromHash, []);
  const [view, setView] = useState(init);
  const [filter, setFilter] = useState(() => parseConditions(init.q));
  const [page, setPage] = useState({ rows: [], total: 0 });
  const [err, setErr] = useState('');
  const [loading, setLoading] = useState(true);
  const [clusters, setClusters] = useState(new Map());
  const [modal, setModal] = useState(null);
  const [flash, setFlash] = useState(new Set());
  const rowsRef = useRef(new Set());

  useEffect(() => {
    api.get('/clusters', { fields: 'uuid,name', limit: 1000 }).then((r) => setClusters(new Map(r.inventories.map((c) => [c.uuid, c.name]))), () => {});
  }, []);

  const load = async (v) => {
    toHash(v);
    setLoading(true);
    try {
      const r = await api.get('/hosts', { q: v.q, sort: v.sort, start: v.start, limit: v.limit, replyWithCount: true, fields: FIELDS });
      rowsRef.current = new Set(r.inventories.map((h) => h.uuid));
      api.hostRows.clear();
      for (const h of r.inventories) api.hostRows.set(h.uuid, h);
      setPage({ rows: r.inventories, total: r.total });
      setErr('');
    } catch (e) {
      setErr(e.message);
    }
    setLoading(false);
  };
  useEffect(() => { load(view); }, [view]);
  // For bench/console.bench.ts: when rows first reached the screen (User Timing, no cost otherwise).
  useEffect(() => { if (page.rows.length && !performance.getEntriesByName('hk:hosts-rows').length) performance.mark('hk:hosts-rows'); }, [page]);

  // Live: status/state changes of the rows on screen, applied once per animation frame.
  useEffect(() => {
    let patches = new Map();
    let frame = 0;
    const apply = () => {
      frame = 0;
      const p = patches;
      patches = new Map();
      setPage((pg) => ({ ...pg, rows: pg.rows.map((r) => (p.has(r.uuid) ? { ...r, ...p.get(r.uuid) } : r)) }));
      setFlash(new Set(p.keys()));
    };
    const off = api.onEvent((e) => {
      if (e.type !== 'HostStatusChanged' && e.type !== 'HostStateChanged') return;
      if (!rowsRef.current.has(e.resourceUuid)) return;
      const key = e.type === 'HostStatusChanged' ? 'status' : 'state';
      patches.set(e.resourceUuid, { ...(patches.get(e.resourceUuid) || {}), [key]: e.to });
      frame ||= requestAnimationFrame(apply);
    });
    // A stream that comes back (after being up) may have missed events: reload the rows once.
    let wasUp;
    const offUp = api.onStream((up) => { if (up && wasUp === false) load(view); if (up || wasUp) wasUp = up; });
    return () => { off(); offUp(); cancelAnimationFrame(frame); };
  }, [view]);

  const apply = (e) => {
    e?.preventDefault();
    setView((v) => ({ ...v, q: conditions(filter), start: 0 }));
  };
  const sortBy = (f) => setView((v) => ({ ...v, sort: v.sort === `+${f}` ? `-${f}` : `+${f}`, start: 0 }));
  const set = (k) => (e) => setFilter((f) => ({ ...f, [k]: e.target.value }));
  const pages = Math.max(1, Math.ceil(page.total / view.limit));
  const at = Math.floor(view.start / view.limit) + 1;
  const go = (n) => setView((v) => ({ ...v, start: (Math.min(Math.max(1, n), pages) - 1) * v.limit }));

  return html`
    <div class="head"><h1>Hosts</h1><span class="sub">${loading ? 'Loading…' : `${num(page.total)} matching`}</span><span class="spacer"></span>
      <button onClick=${() => setModal('token')}>Bootstrap token</button>
      <button class="primary" onClick=${() => setModal('add')}>Add host</button>
    </div>
    <div class="panel flush">
      <form class="toolbar" onSubmit=${apply}>
        <input class="grow" name="search" placeholder="Search name or IP" value=${filter.text} onInput=${set('text')}/>
        <select name="status" value=${filter.status} onChange=${set('status')} aria-label="Status"><option value="">Any status</option>${STATUSES.map((s) => html`<option>${s}</option>`)}</select>
        <select name="state" value=${filter.state} onChange=${set('state')} aria-label="State"><option value="">Any state</option>${STATES.map((s) => html`<option>${s}</option>`)}</select>
        <select name="cluster" value=${filter.cluster} onChange=${set('cluster')} aria-label="Cluster"><option value="">Any cluster</option>${[...clusters].map(([u, n]) => html`<option value=${u}>${n}</option>`)}</select>
        <input class="grow" name="q" placeholder="More conditions: cpuNum>=16; zone.name=z1" value=${filter.extra} onInput=${set('extra')} title="The query language: <field><op><value>, op = != > < >= <= ?= !?= ~= !~=; separate conditions with ;"/>
        <button class="primary" type="submit">Filter</button>
      </form>
      ${err && html`<div class="alert" style="margin:12px">${err}</div>`}
      <table id="hosts-table">
        <thead><tr>${COLS.map(([f, label, n]) => html`<th class=${`sort${n ? ' num' : ''}`} onClick=${() => sortBy(f)}>${label}${view.sort.slice(1) === f ? (view.sort[0] === '+' ? ' ▲' : ' ▼') : ''}</th>`)}</tr></thead>
        <tbody>${page.rows.map((h) => {
          const cpuUsed = (h.totalCpuCapacity ?? 0) - (h.availableCpuCapacity ?? 0);
          const memUsed = (h.totalMemoryCapacity ?? 0) - (h.availableMemoryCapacity ?? 0);
          return html`<tr key=${h.uuid} data-uuid=${h.uuid} class=${`click${flash.has(h.uuid) ? ' flash' : ''}`} onClick=${() => { location.hash = `#/hosts/${h.uuid}`; }}>
            <td><a href=${`#/hosts/${h.uuid}`}>${h.name}</a></td>
            <td class="mono">${h.managementIp}</td>
            <td>${clusters.get(h.clusterUuid) || h.clusterUuid.slice(0, 8)}</td>
            <td class="state"><${Badge} v=${h.state}/></td>
            <td class="status"><${Badge} v=${h.status}/></td>
            <td class="num">${num(cpuUsed)} / ${num(h.totalCpuCapacity)} <${CapBar} small total=${h.totalCpuCapacity} used=${cpuUsed}/></td>
            <td class="num">${bytes(memUsed)} / ${bytes(h.totalMemoryCapacity)} <${CapBar} small total=${h.totalMemoryCapacity} used=${memUsed}/></td>
          </tr>`;
        })}</tbody>
      </table>
      ${!loading && page.rows.length === 0 && html`<div class="empty">No host matches.</div>`}
      <div class="pager">
        <span>Rows</span>
        <select value=${view.limit} onChange=${(e) => setView((v) => ({ ...v, limit: Number(e.target.value), start: 0 }))}>${[25, 50, 100, 200].map((n) => html`<option value=${n}>${n}</option>`)}</select>
        <span>${num(page.total ? view.start + 1 : 0)}–${num(Math.min(view.start + view.limit, page.total))} of ${num(page.total)}</span>
        <button class="small" disabled=${at <= 1} onClick=${() => go(1)}>«</button>
        <button class="small" disabled=${at <= 1} onClick=${() => go(at - 1)}>‹ Prev</button>
        <span>Page ${at} of ${pages}</span>
        <button class="small" disabled=${at >= pages} onClick=${() => go(at + 1)}>Next ›</button>
        <button class="small" disabled=${at >= pages} onClick=${() => go(pages)}>»</button>
      </div>
    </div>
    ${modal === 'add' && html`<${AddHost} clusters=${clusters} onClose=${() => { setModal(null); load(view); }}/>`}
    ${modal === 'token' && html`<${BootstrapToken} clusters=${clusters} onClose=${() => setModal(null)}/>`}`;
}
