// Global configurations: each value editable in place; the server validates it (the update's
// job fails with SYS.1007 naming the rule) and the message is shown under the field.
import { useState } from 'preact/hooks';
import { html, toast, useLoad } from '../ui.js';
import * as api from '../api.js';

function Row({ c, onSaved }) {
  const [v, setV] = useState(c.value);
  const [err, setErr] = useState('');
  const [busy, setBusy] = useState(false);
  const id = `${c.category}/${c.name}`;
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErr('');
    try {
      await api.act('PUT', `/global-configurations/${c.category}/${c.name}/actions`, { updateGlobalConfig: { value: v } });
      toast(`${id} = ${v}`);
      onSaved();
    } catch (x) {
      setErr(x.message);
    }
    setBusy(false);
  };
  const changed = v !== c.value;
  return html`<tr data-config=${id}>
    <td><b class="mono">${c.name}</b><div class="hint">${c.description}</div></td>
    <td><form onSubmit=${save} style="display:flex;gap:6px;align-items:flex-start;flex-wrap:wrap">
      <input name="value" class=${err ? 'bad' : ''} value=${v} onInput=${(e) => { setV(e.target.value); setErr(''); }} style="flex:1;min-width:120px" aria-invalid=${err ? 'true' : 'false'}/>
      <button class="small primary" type="submit" disabled=${!changed || busy}>Save</button>
      ${changed && html`<button class="small" type="button" onClick=${() => { setV(c.value); setErr(''); }}>Undo</button>`}
      ${err && html`<div class="err" role="alert" style="flex-basis:100%">${err}</div>`}
    </form></td>
    <td class="mono hint">${c.defaultValue}${c.value !== c.defaultValue ? html` <button class="link small" onClick=${() => setV(c.defaultValue)}>reset</button>` : ''}</td>
  </tr>`;
}

export function Configs() {
  const [list, err, reload] = useLoad(() => api.get('/global-configurations', { limit: 500 }).then((r) => r.inventories), []);
  const groups = new Map();
  for (const c of list || []) groups.set(c.category, [...(groups.get(c.category) || []), c]);
  return html`
    <div class="head"><h1>Global configurations</h1><span class="sub">take effect without a restart</span></div>
    ${err && html`<div class="alert">${err.message}</div>`}
    ${[...groups].map(([cat, cs]) => html`<div class="panel flush" style="margin-bottom:16px">
      <div class="toolbar"><h2 style="margin:0">${cat}</h2></div>
      <table class="fixed"><colgroup><col/><col style="width:360px"/><col style="width:140px"/></colgroup><thead><tr><th>Name</th><th>Value</th><th>Default</th></tr></thead>
      <tbody>${cs.map((c) => html`<${Row} key=${`${c.category}/${c.name}/${c.value}`} c=${c} onSaved=${reload}/>`)}</tbody></table>
    </div>`)}`;
}
