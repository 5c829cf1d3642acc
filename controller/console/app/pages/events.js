// The event log: the latest events (the store keeps the last 10,000), filtered by type and
// severity, with live arrivals prepended.
import { useEffect, useState } from 'preact/hooks';
import { EventList, html, useTick } from '../ui.js';
import * as api from '../api.js';

const TYPES = ['HostStatusChanged', 'HostStateChanged', 'VmStateChanged', 'MaintenanceStarted', 'MaintenanceDone', 'MaintenanceFailed', 'JobStarted', 'JobFinished'];

export function Events() {
  const [type, setType] = useState('');
  const [severity, setSeverity] = useState('');
  const [rows, setRows] = useState([]);
  const [err, setErr] = useState('');
  useTick(10_000);
  useEffect(() => {
    const q = [...(type ? [`type=${type}`] : []), ...(severity ? [`severity=${severity}`] : [])];
    api.get('/events', { q, sort: '-createDate', limit: 200 }).then((r) => { setRows(r.inventories.map((e) => ({ ...e, ts: Date.parse(e.createDate) }))); setErr(''); }, (e) => setErr(e.message));
    return api.onEvent((e) => {
      if ((type && e.type !== type) || (severity && e.severity !== severity)) return;
      setRows((r) => [e, ...r].slice(0, 200));
    });
  }, [type, severity]);
  return html`
    <div class="head"><h1>Events</h1><span class="sub">the last 10,000 are kept; also at GET /zstack/v1/events</span></div>
    <div class="panel flush">
      <div class="toolbar">
        <select value=${type} onChange=${(e) => setType(e.target.value)}><option value="">All types</option>${TYPES.map((t) => html`<option>${t}</option>`)}</select>
        <select value=${severity} onChange=${(e) => setSeverity(e.target.value)}><option value="">Any severity</option><option>info</option><option>warning</option><option>error</option></select>
      </div>
      ${err && html`<div class="alert" style="margin:12px">${err}</div>`}
      <div style="padding:4px 16px"><${EventList} events=${rows}/></div>
    </div>`;
}
