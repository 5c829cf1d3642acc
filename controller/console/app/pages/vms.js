// VMs: a paged table (state filter, name search) and the start / stop / migrate actions, the
// migration showing the candidate hosts and why every other host does not fit.
import { useEffect, useState } from 'preact/hooks';
import { Badge, bytes, Confirm, html, Modal, num, toast } from '../ui.js';
import * as api from '../api.js';

function Migrate({ vm, onClose, onDone }) {
  const [c, setC] = useState(null);
  const [err, setErr] = useState('');
  const [target, setTarget] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => { api.get(`/vm-instances/${vm.uuid}/migration-target-hosts`).then(setC, (e) => setErr(e.message)); }, []);
  const go = async () => {
    setBusy(true);
    setErr('');
    try {
      const r = await api.act('PUT', `/vm-instances/${vm.uuid}/actions`, { migrateVm: target ? { hostUuid: target } : {} });
      toast(`${vm.name} migrated`);
      onDone?.(r);
      onClose();
    } catch (e) {
      setErr(e.message);
      setBusy(false);
    }
  };
  return html`<${Modal} wide title=${`Migrate ${vm.name}`} onClose=${onClose} footer=${html`<button onClick=${onClose}>Cancel</button><button class="primary" disabled=${busy || !c || c.inventories.length === 0} onClick=${go}>${busy ? 'Migrating…' : 'Migrate'}</button>`}>
    ${err && html`<div class="alert">${err}</div>`}
    ${!c ? html`<div class="empty">Asking the allocator…</div>` : html`
      <h3 style="margin-top:0">Candidates (best first)</h3>
      ${c.inventories.length === 0 ? html`<div class="empty">No host can take it now.</div>` : html`<label class=${`choice${target === '' ? ' on' : ''}`}><input type="radio" name="t" checked=${target === ''} onChange=${() => setTarget('')}/> <b>Let the allocator choose</b><span>${c.inventories[0].name} now</span></label>
        ${c.inventories.slice(0, 6).map((h) => html`<label class=${`choice${target === h.uuid ? ' on' : ''}`} key=${h.uuid}><input type="radio" name="t" checked=${target === h.uuid} onChange=${() => setTarget(h.uuid)}/> <b>${h.name}</b><span>${bytes(h.availableMemoryCapacity)} memory and ${num(h.availableCpuCapacity)} CPU available</span></label>`)}
        ${c.inventories.length > 6 && html`<div class="hint">and ${c.inventories.length - 6} more hosts that fit</div>`}`}
      ${c.dropped.length > 0 && html`<h3>Hosts that do not fit</h3><table id="dropped"><thead><tr><th>Reason</th><th>Details</th></tr></thead><tbody>${c.dropped.slice(0, 50).map((d) => html`<tr key=${d.hostUuid}><td><${Badge} v=${d.reason} plain/></td><td class="hint">${d.details}</td></tr>`)}</tbody></table>`}`}
  </${Modal}>`;
}

export function VmActions({ vm, onDone }) {
  const [m, setM] = useState(null);
  const run = (label, body) => async () => { await api.act('PUT', `/vm-instances/${vm.uuid}/actions`, body); toast(`${vm.name}: ${label}`); onDone?.(); };
  return html`<span class="actions" onClick=${(e) => e.stopPropagation()}>
    ${(vm.state === 'Stopped' || vm.state === 'Created') && html`<button class="small" onClick=${() => setM('start')}>Start</button>`}
    ${(vm.state === 'Running' || vm.state === 'Paused') && html`<button class="small" onClick=${() => setM('stop')}>Stop</button><button class="small" onClick=${() => setM('migrate')}>Migrate…</button>`}
    ${m === 'start' && html`<${Confirm} title=${`Start ${vm.name}?`} confirm="Start" onConfirm=${run('started', { startVmInstance: {} })} onClose=${() => setM(null)}><p>The allocator picks a host with room (its last host first when it fits).</p></${Confirm}>`}
    ${m === 'stop' && html`<${Confirm} title=${`Stop ${vm.name}?`} confirm="Stop" danger onConfirm=${run('stopped', { stopVmInstance: { type: 'grace' } })} onClose=${() => setM(null)}><p>A graceful shutdown first; if the guest does not stop in time it is powered off.</p></${Confirm}>`}
    ${m === 'migrate' && html`<${Migrate} vm=${vm} onClose=${() => setM(null)} onDone=${onDone}/>`}
  </span>`;
}

const STATES = ['Running', 'Stopped', 'Migrating', 'Starting', 'Stopping', 'Paused', 'Unknown', 'Created'];

export function Vms() {
  const [q, setQ] = useState({ text: '', state: '', start: 0 });
  const [page, setPage] = useState({ rows: [], total: 0 });
  const [hosts, setHosts] = useState(new Map());
  const [err, setErr] = useState('');
  const limit = 50;
  const load = async () => {
    try {
      const conds = [...(q.text ? [`name~=%${q.text}%`] : []), ...(q.state ? [`state=${q.state}`] : []), 'state!=Destroyed'];
      const r = await api.get('/vm-instances', { q: conds, start: q.start, limit, replyWithCount: true, sort: '+name' });
      setPage({ rows: r.inventories, total: r.total });
      const need = [...new Set(r.inventories.map((v) => v.hostUuid).filter(Boolean))];
      if (need.length) {
        const hs = await api.get('/hosts', { q: `uuid?=${need.join(',')}`, fields: 'uuid,name', limit: need.length });
        setHosts(new Map(hs.inventories.map((h) => [h.uuid, h.name])));
      }
      setErr('');
    } catch (e) { setErr(e.message); }
  };
  useEffect(() => { load(); }, [q]);
  useEffect(() => {
    let t = 0;
    const off = api.onEvent((e) => { if (e.type === 'VmStateChanged' && !t) t = setTimeout(() => { t = 0; load(); }, 500); });
    return () => { off(); clearTimeout(t); };
  }, [q]);
  return html`
    <div class="head"><h1>VMs</h1><span class="sub">${num(page.total)} matching</span></div>
    <div class="panel flush">
      <div class="toolbar">
        <input class="grow" placeholder="Search name" value=${q.text} onChange=${(e) => setQ({ ...q, text: e.target.value, start: 0 })}/>
        <select value=${q.state} onChange=${(e) => setQ({ ...q, state: e.target.value, start: 0 })}><option value="">Any state</option>${STATES.map((s) => html`<option>${s}</option>`)}</select>
      </div>
      ${err && html`<div class="alert" style="margin:12px">${err}</div>`}
      <table id="vms-table"><thead><tr><th>Name</th><th>State</th><th>Host</th><th class="num">CPUs</th><th class="num">Memory</th><th>IP</th><th></th></tr></thead><tbody>
        ${page.rows.map((v) => html`<tr key=${v.uuid}><td>${v.name}</td><td><${Badge} v=${v.state}/></td>
          <td>${v.hostUuid ? html`<a href=${`#/hosts/${v.hostUuid}`}>${hosts.get(v.hostUuid) || v.hostUuid.slice(0, 8)}</a>` : html`<span class="hint">—</span>`}</td>
          <td class="num">${v.cpuNum}</td><td class="num">${bytes(v.memorySize)}</td><td class="mono">${(v.vmNics || []).map((n) => n.ip).join(', ')}</td>
          <td><${VmActions} vm=${v} onDone=${load}/></td></tr>`)}
      </tbody></table>
      ${page.rows.length === 0 && html`<div class="empty">No VM matches.</div>`}
      <div class="pager"><span>${num(page.total ? q.start + 1 : 0)}–${num(Math.min(q.start + limit, page.total))} of ${num(page.total)}</span>
        <button class="small" disabled=${q.start === 0} onClick=${() => setQ({ ...q, start: Math.max(0, q.start - limit) })}>‹ Prev</button>
        <button class="small" disabled=${q.start + limit >= page.total} onClick=${() => setQ({ ...q, start: q.start + limit })}>Next ›</button></div>
    </div>`;
}
