// User and system tags: list (filtered by resource), create, delete. Inherent system tags
// (written by the controller at connect) cannot be deleted by hand.
import { useState } from 'preact/hooks';
import { Confirm, html, toast, useLoad } from '../ui.js';
import * as api from '../api.js';

export function Tags() {
  const [kind, setKind] = useState('user');
  const [resource, setResource] = useState('');
  const [f, setF] = useState({ resourceType: 'HostVO', resourceUuid: '', tag: '' });
  const [err, setErr] = useState('');
  const [del, setDel] = useState(null);
  const [list, loadErr, reload] = useLoad(() => api.get(`/${kind}-tags`, { q: resource ? `resourceUuid=${resource}` : undefined, limit: 500, sort: '-createDate' }).then((r) => r.inventories), [kind, resource]);
  const create = async (e) => {
    e.preventDefault();
    setErr('');
    try {
      await api.act('POST', `/${kind}-tags`, { params: f });
      toast(`Tag ${f.tag} added`);
      setF({ ...f, tag: '' });
      reload();
    } catch (x) { setErr(x.message); }
  };
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  return html`
    <div class="head"><h1>Tags</h1><span class="spacer"></span>
      <select value=${kind} onChange=${(e) => setKind(e.target.value)}><option value="user">User tags</option><option value="system">System tags</option></select></div>
    <div class="panel" style="margin-bottom:16px">
      <h2>New ${kind} tag</h2>
      ${err && html`<div class="alert">${err}</div>`}
      <form onSubmit=${create} style="display:grid;grid-template-columns:160px 1fr 1fr auto;gap:8px;align-items:start">
        <select value=${f.resourceType} onChange=${set('resourceType')}><option>HostVO</option><option>ClusterVO</option><option>ZoneVO</option></select>
        <input placeholder="resource uuid" value=${f.resourceUuid} onInput=${set('resourceUuid')} class="mono"/>
        <input placeholder=${kind === 'system' ? 'reservedMemory::1G' : 'rack::r12'} value=${f.tag} onInput=${set('tag')} class="mono"/>
        <button class="primary" type="submit">Add tag</button>
      </form>
      ${kind === 'system' && html`<div class="hint" style="margin-top:6px">System tags that mean something: reservedMemory::&lt;size&gt; on a host, host::reservedMemory::&lt;size&gt; on a cluster or zone.</div>`}
    </div>
    <div class="panel flush">
      <div class="toolbar"><input class="grow mono" placeholder="Filter by resource uuid" value=${resource} onChange=${(e) => setResource(e.target.value.trim())}/></div>
      ${loadErr && html`<div class="alert" style="margin:12px">${loadErr.message}</div>`}
      <table><thead><tr><th>Tag</th><th>Resource</th><th>Created</th><th></th></tr></thead><tbody>
        ${(list || []).map((t) => html`<tr key=${t.uuid}><td><span class=${`tag${kind === 'user' ? ' user' : ''}`}>${t.tag}</span>${t.inherent ? html` <span class="hint">inherent</span>` : ''}</td>
          <td><span class="hint">${t.resourceType}</span> ${t.resourceType === 'HostVO' ? html`<a class="mono" href=${`#/hosts/${t.resourceUuid}`}>${t.resourceUuid}</a>` : html`<span class="mono">${t.resourceUuid}</span>`}</td>
          <td class="hint">${t.createDate}</td>
          <td>${!t.inherent && html`<button class="small danger" onClick=${() => setDel(t)}>Delete</button>`}</td></tr>`)}
      </tbody></table>
      ${list && list.length === 0 && html`<div class="empty">No tags.</div>`}
    </div>
    ${del && html`<${Confirm} title="Delete tag?" danger confirm="Delete" onClose=${() => setDel(null)} onConfirm=${async () => { await api.act('DELETE', `/tags/${del.uuid}`); reload(); }}><p class="mono">${del.tag}</p></${Confirm}>`}`;
}
