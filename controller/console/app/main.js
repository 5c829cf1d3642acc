// The console's shell: login, the side bar, hash routes (#/, #/hosts, #/hosts/<uuid>, #/vms,
// #/configs, #/tags, #/events, #/api) and the one live event stream.
import { useEffect, useState } from 'preact/hooks';
import { html, render, Toasts } from './ui.js';
import * as api from './api.js';
import { Overview } from './pages/overview.js';
import { Hosts } from './pages/hosts.js';
import { HostDetail } from './pages/host.js';
import { Vms } from './pages/vms.js';
import { Configs } from './pages/configs.js';
import { Tags } from './pages/tags.js';
import { Events } from './pages/events.js';
import { ApiReference } from './pages/api-ref.js';

function useHash() {
  const [hash, set] = useState(location.hash || '#/');
  useEffect(() => {
    const f = () => set(location.hash || '#/');
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  return hash;
}

function Login({ onIn }) {
  const [name, setName] = useState('admin');
  const [pw, setPw] = useState('');
  const [err, setErr] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErr('');
    try {
      onIn(await api.login(name, pw));
    } catch (x) {
      // ID.1000 is the wrong password; a throttled login says when to try again.
      setErr(x.code === 'ID.1000' ? 'Wrong account name or password.' : x.message);
      setBusy(false);
    }
  };
  return html`<div class="login"><form onSubmit=${submit} aria-label="Log in">
    <div class="brand"><img src="/console/app/logo.svg" alt="" width="28" height="28"/>Hostkeeper</div>
    ${err && html`<div class="alert" role="alert" id="login-error">${err}</div>`}
    <label class="f"><span>Account</span><input name="account" value=${name} onInput=${(e) => setName(e.target.value)} autocomplete="username"/></label>
    <label class="f"><span>Password</span><input name="password" type="password" value=${pw} onInput=${(e) => setPw(e.target.value)} autocomplete="current-password" autofocus/></label>
    <button class="primary" type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
    <div class="hint" style="margin-top:14px">The admin account of this controller. <a href="#/api">API reference</a></div>
  </form></div>`;
}

const NAV = [
  ['#/', 'Overview', '◧'], ['#/hosts', 'Hosts', '▤'], ['#/vms', 'VMs', '▣'], ['#/events', 'Events', '◷'],
  ['#/configs', 'Global configs', '⚙'], ['#/tags', 'Tags', '#'], ['#/api', 'API reference', '{}'],
];

function Live() {
  const [on, setOn] = useState(false);
  useEffect(() => api.onStream(setOn), []);
  return html`<span class=${`live${on ? ' on' : ''}`} title="Live updates over server-sent events"><i></i>${on ? 'Live' : 'Reconnecting…'}</span>`;
}

function Shell({ who, hash, onOut }) {
  const route = hash.slice(1).split('?')[0];
  const parts = route.split('/').filter(Boolean);
  let page;
  if (parts[0] === 'hosts' && parts[1]) page = html`<${HostDetail} uuid=${parts[1]} key=${parts[1]}/>`;
  else if (parts[0] === 'hosts') page = html`<${Hosts}/>`;
  else if (parts[0] === 'vms') page = html`<${Vms}/>`;
  else if (parts[0] === 'configs') page = html`<${Configs}/>`;
  else if (parts[0] === 'tags') page = html`<${Tags}/>`;
  else if (parts[0] === 'events') page = html`<${Events}/>`;
  else if (parts[0] === 'api') page = html`<${ApiReference}/>`;
  else page = html`<${Overview}/>`;
  const active = (href) => (href === '#/' ? parts.length === 0 : `#/${parts[0]}` === href);
  return html`<div class="shell">
    <nav class="side">
      <div class="brand"><img src="/console/app/logo.svg" alt="" width="28" height="28"/>Hostkeeper</div>
      ${NAV.map(([href, label, icon]) => html`<a href=${href} class=${active(href) ? 'active' : ''}><span aria-hidden="true">${icon}</span>${label}</a>`)}
      <div class="grow"></div>
      <${Live}/>
      <div class="who">Signed in as <b>${who.accountName}</b><button class="small" onClick=${onOut}>Sign out</button></div>
    </nav>
    <main>${page}</main>
  </div>`;
}

// Whether this browser was signed in: the shell renders at once instead of waiting for the
// session check (one round trip less before the first rows); a 401 still shows the login.
const HINT = 'hostkeeper:signed-in';
const hinted = () => localStorage.getItem(HINT) === '1';

function App() {
  const hash = useHash();
  const [who, setWhoState] = useState(hinted() ? { accountName: 'admin' } : undefined);
  const setWho = (w) => {
    if (w) localStorage.setItem(HINT, '1');
    else localStorage.removeItem(HINT);
    setWhoState(w);
  };
  useEffect(() => {
    api.setUnauthorized(() => { api.stopStream(); setWho(null); });
    api.whoami().then(setWho);
  }, []);
  useEffect(() => { if (who) api.startStream(); }, [who]);
  if (who === undefined) return html``;
  const out = async () => { await api.logout(); api.stopStream(); setWho(null); };
  // The API reference is public, like the document it renders.
  if (!who && hash.startsWith('#/api')) return html`<main><${ApiReference}/></main>`;
  return html`${who ? html`<${Shell} who=${who} hash=${hash} onOut=${out}/>` : html`<${Login} onIn=${setWho}/>`}<${Toasts}/>`;
}

render(html`<${App}/>`, document.getElementById('root'));
