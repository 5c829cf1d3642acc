// One host: facts, metadata tags, capacity with reserved memory and where it comes from,
// its VMs, its recent events; actions with confirmation. Kept live by the event stream
// (a change of this host or its VMs reloads it, at most every 300 ms).
import { useEffect, useRef, useState } from 'preact/hooks';
import { Badge, bytes, CapBar, Confirm, EventList, html, Legend, Modal, num, toast, useTick } from '../ui.js';
import * as api from '../api.js';
import { VmActions } from './vms.js';

async function loadHost(uuid) {
  const [h, extra, sys, usr, vms] = await Promise.all([
    api.get(`/hosts/${uuid}`),
    api.get(`/console/hosts/${uuid}`),
    api.get('/system-tags', { q: `resourceUuid=${uuid}`, limit: 200 }),
    api.get('/user-tags', { q: `resourceUuid=${uuid}`, limit: 200 }),
    api.get('/vm-instances', { q: `hostUuid=${uuid}`, limit: 500, sort: '+name' }),
  ]);
  return { host: h.inventories[0], extra, sys: sys.inventories, usr: usr.inventories, vms: vms.inventories };
}

const SOURCE = {
  host: 'this host\'s tag reservedMemory::<size>',
  cluster: 'its cluster\'s tag host::reservedMemory::<size>',
  zone: 'its zone\'s tag host::reservedMemory::<size>',
  global: 'the global config kvm / reservedMemory',
};

/** The host's user tags: added and removed in place (the API's CreateUserTag / DeleteTag). */
function UserTags({ uuid, tags, onChange }) {
  const [tag, setTag] = useState('');
  const [err, setErr] = useState('');
  const add = async (e) => {
    e.preventDefault();
    setErr('');
    try {
      await api.act('POST', '/user-tags', { params: { resourceType: 'HostVO', resourceUuid: uuid, tag } });
      setTag('');
      onChange();
    } catch (x) { setErr(x.message); }
  };
  const del = async (t) => {
    try { await api.act('DELETE', `/tags/${t.uuid}`); onChange(); } catch (x) { setErr(x.message); }
  };
  return html`<div>
    <div class="tags">${tags.length ? tags.map((t) => html`<span class="tag user">${t.tag} <button class="link small" title="Remove" onClick=${() => del(t)}>×</button></span>`) : html`<span class="hint">none</span>`}</div>
    <form onSubmit=${add} style="display:flex;gap:6px;margin-top:8px"><input class="mono" placeholder="rack::r12" value=${tag} onInput=${(e) => setTag(e.target.value)} style="flex:1"/><button class="small" type="submit" disabled=${!tag}>Add tag</button></form>
    ${err && html`<div class="err">${err}</div>`}
  </div>`;
}

function Maintain({ host, onClose }) {
  const [plan, setPlan] = useState(null);
  const [err, setErr] = useState('');
  const [prog, setProg] = useState(null);
  // Where each planned VM is now (the job's progress lists only the VMs in flight).
  const [where, setWhere] = useState(new Map());
  const [result, setResult] = useState(null);
  const look = useRef(0);
  const refreshWhere = () => {
    if (look.current || !plan || plan.length === 0) return;
    look.current = setTimeout(() => { look.current = 0; }, 500);
    api.get('/vm-instances', { q: `uuid?=${plan.map((p) => p.vmUuid).join(',')}`, fields: 'uuid,hostUuid,state', limit: plan.length })
      .then((r) => setWhere(new Map(r.inventories.map((v) => [v.uuid, v]))), () => {});
  };
  useEffect(() => { api.get(`/hosts/${host.uuid}/maintenance-plan`).then((r) => setPlan(r.inventories), (e) => setErr(e.message)); }, []);
  const start = async () => {
    setErr('');
    setProg({ current: 0, total: plan.length, message: 'entering PreMaintenance', items: [] });
    try {
      const r = await api.act('PUT', `/hosts/${host.uuid}/actions`, { changeHostState: { stateEvent: 'maintain' } }, (p) => {
        setProg(p);
        refreshWhere();
      });
      setResult(r.evacuation || { migrated: [], stopped: [], left: [] });
      toast(`${host.name} is in Maintenance`);
    } catch (e) {
      setErr(e.message);
    }
  };
  const names = new Map((plan || []).map((p) => [p.vmUuid, p.name]));
  const phaseOf = (uuid) => {
    if (result) {
      if (result.migrated.some((x) => x.uuid === uuid)) return 'migrated';
      if (result.stopped.some((x) => x.uuid === uuid)) return 'stopped';
      if (result.left.some((x) => x.uuid === uuid)) return 'failed';
    }
    const inFlight = (prog?.items || []).find((i) => i.uuid === uuid);
    if (inFlight) return inFlight.phase;
    const v = where.get(uuid);
    if (v && v.hostUuid && v.hostUuid !== host.uuid) return 'migrated';
    if (v && v.state === 'Stopped') return 'stopped';
    return 'pending';
  };
  const footer = result ? html`<button class="primary" onClick=${onClose}>Close</button>`
    : prog ? html`<button onClick=${onClose}>Hide (it goes on)</button>`
    : html`<button onClick=${onClose}>Cancel</button><button class="primary" disabled=${!plan} onClick=${start}>Enter maintenance</button>`;
  return html`<${Modal} wide title=${`Maintenance of ${host.name}`} onClose=${onClose} footer=${footer}>
    ${err && html`<div class="alert" id="maintain-error">${err}</div>`}
    ${!prog && html`<div class="note">The host goes to PreMaintenance, its VMs migrate (kvm / vm.migrationQuantity at a time) to the hosts below, a VM that cannot is stopped, then the host enters Maintenance. Enable or Disable meanwhile cancels.</div>`}
    ${prog && html`<div id="maintain-progress">
      <div class="head" style="margin:0"><b>${result ? 'Done: the host is in Maintenance' : prog.step === 'evacuate-vms' ? `Moving VMs off the host: ${prog.current} of ${prog.total} done` : prog.step === 'enter-pre-maintenance' ? 'Entering PreMaintenance…' : prog.message || prog.step}</b><span class="spacer"></span><span class="sub">${result ? `${result.migrated.length} migrated, ${result.stopped.length} stopped, ${result.left.length} left` : `${prog.current}/${prog.total} VMs`}</span></div>
      <div class="progress"><span style=${`width:${result ? 100 : prog.total ? (prog.current / prog.total) * 100 : 3}%`}></span></div>
    </div>`}
    ${!plan ? html`<div class="empty">Computing the plan…</div>` : plan.length === 0 ? html`<div class="empty">No VMs to move: the host can enter Maintenance at once.</div>` : html`<table id="maintain-plan">
      <thead><tr><th>VM</th><th>State</th><th>Plan</th><th>${prog ? 'Progress' : 'Target or reason'}</th></tr></thead>
      <tbody>${plan.map((p) => html`<tr key=${p.vmUuid} data-uuid=${p.vmUuid}>
        <td>${p.name}</td><td><${Badge} v=${p.state}/></td><td><${Badge} v=${p.action}/></td>
        <td>${prog ? html`<span class="phase"><${Badge} v=${phaseOf(p.vmUuid)}/></span>` : p.action === 'migrate' ? html`→ <a href=${`#/hosts/${p.targetHostUuid}`}>${p.targetHostName}</a>` : html`<span class="hint">${p.reason}</span>`}</td>
      </tr>`)}</tbody></table>`}
    ${result && result.left.length > 0 && html`<div class="alert" style="margin-top:12px">Left on the host: ${result.left.map((l) => `${names.get(l.uuid) || l.uuid} (${l.reason})`).join('; ')}</div>`}
  </${Modal}>`;
}

function Delete({ host, vms, onClose }) {
  const [mode, setMode] = useState('Permissive');
  const active = vms.filter((v) => ['Starting', 'Running', 'Stopping', 'Migrating'].includes(v.state)).length;
  return html`<${Confirm} title=${`Delete ${host.name}`} danger confirm="Delete host" onClose=${onClose}
    onConfirm=${async () => { await api.act('DELETE', `/hosts/${host.uuid}?deleteMode=${mode}`); toast(`${host.name} deleted`); location.hash = '#/hosts'; }}>
    <p>The host leaves the inventory; over SSH its agent is stopped and its credentials removed (when it was added over SSH).</p>
    <label class=${`choice${mode === 'Permissive' ? ' on' : ''}`}><input type="radio" name="mode" checked=${mode === 'Permissive'} onChange=${() => setMode('Permissive')}/> <b>Permissive</b>
      <span>Refused while VMs are active on the host (${active} now): migrate or stop them first.</span></label>
    <label class=${`choice${mode === 'Enforcing' ? ' on' : ''}`}><input type="radio" name="mode" checked=${mode === 'Enforcing'} onChange=${() => setMode('Enforcing')}/> <b>Enforcing</b>
      <span>Deletes anyway: its active VMs are recorded as Stopped with no host (they may still run on the machine).</span></label>
  </${Confirm}>`;
}

export function HostDetail({ uuid }) {
  // From the hosts table's row when there is one: the page shows at once and fills in.
  const [d, setD] = useState(() => (api.hostRows.has(uuid) ? { host: api.hostRows.get(uuid), extra: null, sys: [], usr: [], vms: [] } : null));
  const [err, setErr] = useState('');
  const [modal, setModal] = useState(null);
  const timer = useRef(0);
  useTick(15_000);
  const reload = () => loadHost(uuid).then((x) => { setD(x); setErr(''); }, (e) => setErr(e.message));
  useEffect(() => { reload(); }, [uuid]);
  useEffect(() => {
    const off = api.onEvent((e) => {
      if (e.hostUuid !== uuid && e.resourceUuid !== uuid) return;
      if (timer.current) return;
      timer.current = setTimeout(() => { timer.current = 0; reload(); }, 300);
    });
    return () => { off(); clearTimeout(timer.current); };
  }, [uuid]);
  if (!d) return html`<div class="crumb"><a href="#/hosts">Hosts</a></div>${err ? html`<div class="alert">${err}</div>` : html`<div class="empty">Loading…</div>`}`;
  const { host: h, sys, usr, vms } = d;
  const extra = d.extra || { reservedMemory: { bytes: 0, source: '…' }, events: [], vmCount: 0, statusReason: '', registered: undefined };
  const change = (ev, label) => () => setModal({ kind: 'confirm', title: `${label} ${h.name}?`, confirm: label, run: async () => { await api.act('PUT', `/hosts/${uuid}/actions`, { changeHostState: { stateEvent: ev } }); toast(`${h.name}: ${label.toLowerCase()}d`); }, text: ev === 'disable' ? 'A Disabled host takes no new VMs; its VMs keep running.' : 'An Enabled host takes new VMs again.' });
  const reconnect = () => setModal({ kind: 'confirm', title: `Reconnect ${h.name}?`, confirm: 'Reconnect', run: async () => { await api.act('PUT', `/hosts/${uuid}/actions`, { reconnectHost: {} }); toast(`${h.name} reconnected`); }, text: 'A full connect: facts, capacity, VMs and the command channel. An SSH-added host is also checked for a changed agent and redeployed if needed.' });
  // The OS facts are inventory fields where the API has them, else the metadata tags.
  const tagOf = (k) => sys.map((t) => t.tag).find((t) => t.startsWith(`${k}::`))?.slice(k.length + 2);
  const os = [h.osDistribution ?? tagOf('os::distribution'), h.osRelease ?? tagOf('os::release'), h.osVersion ?? tagOf('os::version')].filter(Boolean).join(' ');
  const memUsed = h.totalMemoryCapacity - h.availableMemoryCapacity;
  const cpuUsed = h.totalCpuCapacity - h.availableCpuCapacity;
  const res = extra.reservedMemory;
  return html`
    <div class="crumb"><a href="#/hosts">Hosts</a> / ${h.name}</div>
    <div class="head"><h1 id="host-name">${h.name}</h1><span id="host-state"><${Badge} v=${h.state}/></span><span id="host-status"><${Badge} v=${h.status}/></span>
      <span class="sub mono">${h.managementIp}</span><span class="spacer"></span>
      <div class="actions">
        ${h.state !== 'Enabled' && html`<button onClick=${change('enable', 'Enable')}>Enable</button>`}
        ${h.state !== 'Disabled' && html`<button onClick=${change('disable', 'Disable')}>Disable</button>`}
        ${h.state !== 'Maintenance' && h.state !== 'PreMaintenance' && html`<button onClick=${() => setModal({ kind: 'maintain' })} disabled=${h.status !== 'Connected'} title=${h.status !== 'Connected' ? 'Only a Connected host can enter maintenance' : ''}>Maintain…</button>`}
        <button onClick=${reconnect}>Reconnect</button>
        <button class="danger" onClick=${() => setModal({ kind: 'delete' })}>Delete…</button>
      </div>
    </div>
    ${err && html`<div class="alert">${err}</div>`}
    ${h.status === 'Disconnected' && extra.statusReason && html`<div class="alert">Disconnected: ${extra.statusReason}</div>`}
    <div class="grid g2" style="margin-bottom:16px">
      <div class="panel"><h2>Facts</h2><dl class="facts">
        <dt>UUID</dt><dd class="mono">${h.uuid}</dd>
        <dt>Cluster / zone</dt><dd><a href=${`#/hosts?q=clusterUuid=${h.clusterUuid}`}>${extra.clusterName || h.clusterUuid}</a> / ${extra.zoneName || h.zoneUuid}</dd>
        <dt>CPUs</dt><dd>${num(h.cpuNum)} (${num(h.cpuSockets)} sockets)</dd>
        <dt>Memory</dt><dd>${bytes(h.totalMemoryCapacity)}</dd>
        <dt>OS</dt><dd>${os || '—'}</dd>
        <dt>Virtualization</dt><dd>${h.architecture ? `${h.architecture}, ` : ''}${tagOf('hvm') ? `hardware (${tagOf('hvm')})` : '—'}${tagOf('libvirt::version') ? `, libvirt ${tagOf('libvirt::version')}` : ''}</dd>
        <dt>Added</dt><dd>${extra.registered === undefined ? '…' : extra.registered ? 'registered with a bootstrap token' : `over SSH as ${h.username || 'root'} (port ${h.sshPort || 22})`}</dd>
        <dt>Agent</dt><dd>${extra.agentVersion || '—'}</dd>
        <dt>Created</dt><dd>${h.createDate}</dd>
      </dl>
      <h3>System tags</h3><div class="tags">${sys.length ? sys.map((t) => html`<span class="tag" title=${t.inherent ? 'written by the controller at connect' : ''}>${t.tag}</span>`) : html`<span class="hint">none</span>`}</div>
      <h3>User tags</h3><${UserTags} uuid=${uuid} tags=${usr} onChange=${reload}/>
      </div>
      <div class="panel" id="host-capacity"><div class="head" style="margin-bottom:4px"><h2 style="margin:0">Capacity</h2><span class="spacer"></span><${Legend}/></div>
        <${CapBar} label="CPU (cpuNum × over-provisioning ratio)" total=${h.totalCpuCapacity} used=${cpuUsed}/>
        <${CapBar} label="Memory" total=${h.totalMemoryCapacity} used=${memUsed} reserved=${Math.min(res.bytes, Math.max(0, h.totalMemoryCapacity - memUsed))} fmt=${bytes}/>
        ${d.extra && html`<div class="note" id="reserved-source">Reserved memory <b>${bytes(res.bytes)}</b> comes from <b>${res.source}</b>: ${SOURCE[res.source] || res.source}. The allocator never places a VM where available − reserved ${'<'} its memory.</div>`}
        <dl class="facts"><dt>VMs holding capacity</dt><dd>${num(extra.vmCount)}</dd><dt>Available memory</dt><dd>${bytes(h.availableMemoryCapacity)}</dd><dt>Physical memory free</dt><dd>${bytes(h.availablePhysicalMemory)}</dd></dl>
      </div>
    </div>
    <div class="grid g21">
      <div class="panel flush"><div class="toolbar"><h2 style="margin:0">VMs</h2><span class="hint">${vms.length} on this host</span></div>
        ${vms.length === 0 ? html`<div class="empty">No VMs.</div>` : html`<table id="host-vms"><thead><tr><th>Name</th><th>State</th><th class="num">CPUs</th><th class="num">Memory</th><th>IP</th><th></th></tr></thead><tbody>
          ${vms.map((v) => html`<tr key=${v.uuid}><td>${v.name}</td><td><${Badge} v=${v.state}/></td><td class="num">${v.cpuNum}</td><td class="num">${bytes(v.memorySize)}</td><td class="mono">${(v.vmNics || []).map((n) => n.ip).join(', ')}</td><td><${VmActions} vm=${v} onDone=${reload}/></td></tr>`)}
        </tbody></table>`}
      </div>
      <div class="panel" id="host-events"><h2>Recent events</h2><${EventList} events=${extra.events}/></div>
    </div>
    ${modal?.kind === 'confirm' && html`<${Confirm} title=${modal.title} confirm=${modal.confirm} onConfirm=${async () => { await modal.run(); reload(); }} onClose=${() => setModal(null)}><p>${modal.text}</p></${Confirm}>`}
    ${modal?.kind === 'maintain' && html`<${Maintain} host=${h} onClose=${() => { setModal(null); reload(); }}/>`}
    ${modal?.kind === 'delete' && html`<${Delete} host=${h} vms=${vms} onClose=${() => setModal(null)}/>`}`;
}
