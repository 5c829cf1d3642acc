// Overview: hosts by status and state, capacity per cluster, jobs running now, recent events.
// Refreshed when events arrive (at most every 2 s: a burst of 1,000 changes is one reload).
import { useEffect, useRef } from 'preact/hooks';
import { Badge, bytes, CapBar, EventList, html, Legend, num, useLoad, useTick } from '../ui.js';
import * as api from '../api.js';

function StatCard({ label, total, parts, tones }) {
  return html`<div class="panel stat">
    <div class="l">${label}</div>
    <div class="n">${num(total)}</div>
    <div class="parts">${Object.entries(parts).map(([k, v]) => html`<a href=${`#/hosts?q=${tones.field}=${k}`}><${Badge} v=${k}/> ${num(v)}</a>`)}</div>
    <div class="stack">${Object.entries(parts).map(([k, v]) => html`<span style=${`width:${total ? (v / total) * 100 : 0}%;background:${tones[k]}`}></span>`)}</div>
  </div>`;
}
const STATUS_TONES = { field: 'status', Connected: 'var(--ok)', Connecting: 'var(--info)', Disconnected: 'var(--bad)' };
const STATE_TONES = { field: 'state', Enabled: 'var(--ok)', Disabled: 'var(--idle)', PreMaintenance: 'var(--warn)', Maintenance: 'var(--brand)' };

export function Overview() {
  const [o, err, reload] = useLoad(() => api.get('/console/overview'), []);
  const pending = useRef(0);
  useTick(10_000);
  useEffect(() => api.onEvent(() => {
    if (pending.current) return;
    pending.current = setTimeout(() => { pending.current = 0; reload(); }, 2000);
  }), []);
  useEffect(() => () => clearTimeout(pending.current), []);
  if (!o) return html`<div class="head"><h1>Overview</h1></div>${err ? html`<div class="alert">${err.message}</div>` : html`<div class="empty">Loading…</div>`}`;
  const cpuTotal = o.clusters.reduce((s, c) => s + c.cpu.total, 0);
  const cpuUsed = o.clusters.reduce((s, c) => s + c.cpu.used, 0);
  const memTotal = o.clusters.reduce((s, c) => s + c.memory.total, 0);
  const memUsed = o.clusters.reduce((s, c) => s + c.memory.used, 0);
  const memRes = o.clusters.reduce((s, c) => s + c.memory.reserved, 0);
  return html`
    <div class="head"><h1>Overview</h1><span class="sub">${num(o.hosts.total)} hosts in ${o.clusters.length} clusters</span></div>
    <div class="grid g4" style="margin-bottom:16px">
      <${StatCard} label="Hosts by status" total=${o.hosts.total} parts=${o.hosts.byStatus} tones=${STATUS_TONES}/>
      <${StatCard} label="Hosts by state" total=${o.hosts.total} parts=${o.hosts.byState} tones=${STATE_TONES}/>
      <div class="panel stat"><div class="l">CPU (all clusters)</div><div class="n">${num(cpuUsed)}<span class="sub" style="font-size:14px;font-weight:400"> / ${num(cpuTotal)}</span></div><${CapBar} total=${cpuTotal} used=${cpuUsed} small/></div>
      <div class="panel stat"><div class="l">Memory (all clusters)</div><div class="n">${bytes(memUsed)}<span class="sub" style="font-size:14px;font-weight:400"> / ${bytes(memTotal)}</span></div><${CapBar} total=${memTotal} used=${memUsed} reserved=${memRes} small/></div>
    </div>
    <div class="grid g21">
      <div class="panel" id="capacity">
        <div class="head" style="margin-bottom:6px"><h2 style="margin:0">Capacity by cluster</h2><span class="spacer"></span><${Legend}/></div>
        ${o.clusters.length === 0 ? html`<div class="empty">No clusters yet.</div>` : o.clusters.map((c) => html`<div class="cluster" key=${c.uuid}>
          <div class="name"><a href=${`#/hosts?q=clusterUuid=${c.uuid}`}>${c.name}</a><span>${num(c.hosts)} hosts</span></div>
          <${CapBar} label="CPU (cpuNum × over-provisioning)" total=${c.cpu.total} used=${c.cpu.used}/>
          <${CapBar} label="Memory" total=${c.memory.total} used=${c.memory.used} reserved=${c.memory.reserved} fmt=${bytes}/>
        </div>`)}
      </div>
      <div class="grid" style="align-content:start">
        <div class="panel" id="jobs">
          <h2>Jobs running now</h2>
          ${o.jobs.length === 0 ? html`<div class="empty" style="padding:12px">None.</div>` : html`<ul class="events">${o.jobs.map((j) => html`<li key=${j.uuid}>
            <span class="dot"></span>
            <span><b>${j.apiName}</b>${j.progress ? html` — ${j.progress.message || j.progress.step} <div class="progress"><span style=${`width:${j.progress.total ? (j.progress.current / j.progress.total) * 100 : 5}%`}></span></div>` : ''}</span>
            <time>${new Date(j.createDate).toLocaleTimeString()}</time></li>`)}</ul>`}
        </div>
        <div class="panel" id="recent-events">
          <div class="head" style="margin-bottom:8px"><h2 style="margin:0">Recent events</h2><span class="spacer"></span><a href="#/events">All events →</a></div>
          <${EventList} events=${o.events}/>
        </div>
      </div>
    </div>`;
}
