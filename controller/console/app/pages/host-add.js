// Adding hosts: over SSH (AddKVMHost, with its deployment steps shown live from the job's
// progress), or by a bootstrap token an agent registers with (the command ready to copy).
import { useState } from 'preact/hooks';
import { copy, html, Modal, toast } from '../ui.js';
import * as api from '../api.js';

const STEPS = [
  ['ssh-login', 'Log in over SSH (password used once)'],
  ['check-root', 'Check root or password-less sudo'],
  ['install-key', "Install the controller's key"],
  ['deploy-agent', 'Deploy the agent (Ansible)'],
  ['connect', 'Connect: facts, capacity, VMs, channel'],
];

function ClusterSelect({ clusters, value, onChange }) {
  return html`<select name="clusterUuid" value=${value} onChange=${(e) => onChange(e.target.value)} required>
    <option value="">Choose a cluster…</option>${[...clusters].map(([u, n]) => html`<option value=${u}>${n}</option>`)}</select>`;
}

export function AddHost({ clusters, onClose }) {
  const [f, setF] = useState({ name: '', managementIp: '', clusterUuid: '', username: 'root', password: '', sshPort: '22' });
  const [run, setRun] = useState(null);
  const [err, setErr] = useState('');
  const set = (k) => (e) => setF((x) => ({ ...x, [k]: e.target ? e.target.value : e }));
  const submit = async (e) => {
    e.preventDefault();
    setErr('');
    setRun({ step: 'ssh-login', message: 'starting' });
    try {
      const params = { name: f.name, managementIp: f.managementIp, clusterUuid: f.clusterUuid, username: f.username, password: f.password, sshPort: Number(f.sshPort) || 22 };
      const r = await api.act('POST', '/hosts/kvm', { params }, (p) => setRun({ step: p.step, message: p.message }));
      setRun({ step: 'done', message: '' });
      toast(`Host ${r.inventory?.name ?? f.name} added and Connected`);
    } catch (x) {
      setErr(x.message);
      setRun((r) => ({ ...r, failed: true }));
    }
  };
  const idx = run ? (run.step === 'done' ? STEPS.length : STEPS.findIndex(([s]) => s === run.step)) : -1;
  return html`<${Modal} title="Add a KVM host over SSH" onClose=${onClose} footer=${run && !run.failed ? html`<button class="primary" onClick=${onClose} disabled=${run.step !== 'done'}>Done</button>` : html`<button onClick=${onClose}>Cancel</button><button class="primary" form="add-host" type="submit">Add host</button>`}>
    ${err && html`<div class="alert">${err}</div>`}
    ${run && !run.failed ? html`<ol class="steps" id="add-steps">${STEPS.map(([s, label], i) => html`<li class=${i < idx ? 'done' : i === idx ? 'now' : ''}><span class="s"></span><span>${label}${i === idx && run.message ? html` <span class="hint">— ${run.message}</span>` : ''}</span></li>`)}</ol>`
    : html`<form id="add-host" onSubmit=${submit}>
      <div class="note">The password is used once to install the controller's SSH key and is never stored.</div>
      <div class="grid g2" style="gap:0 14px">
        <label class="f"><span>Name</span><input name="name" required value=${f.name} onInput=${set('name')}/></label>
        <label class="f"><span>Cluster</span><${ClusterSelect} clusters=${clusters} value=${f.clusterUuid} onChange=${set('clusterUuid')}/></label>
        <label class="f"><span>Management IP</span><input name="managementIp" required value=${f.managementIp} onInput=${set('managementIp')} placeholder="10.0.0.21"/></label>
        <label class="f"><span>SSH port</span><input name="sshPort" value=${f.sshPort} onInput=${set('sshPort')}/></label>
        <label class="f"><span>User</span><input name="username" value=${f.username} onInput=${set('username')}/></label>
        <label class="f"><span>Password</span><input name="password" type="password" required value=${f.password} onInput=${set('password')}/></label>
      </div>
    </form>`}
  </${Modal}>`;
}

export function BootstrapToken({ clusters, onClose }) {
  const [cluster, setCluster] = useState('');
  const [ttl, setTtl] = useState('3600');
  const [tok, setTok] = useState(null);
  const [err, setErr] = useState('');
  const create = async () => {
    setErr('');
    try {
      const r = await api.act('POST', '/hosts/bootstrap-tokens', { params: { clusterUuid: cluster, ttlSeconds: Number(ttl) } });
      setTok(r.inventory);
    } catch (x) {
      setErr(x.message);
    }
  };
  const cmd = tok && [
    'npm run agent --', '--listen 0.0.0.0:7070', `--controller ${location.origin}`, `--bootstrap-token ${tok.token}`,
    ...(tok.caCertHash ? [`--ca-cert-hash ${tok.caCertHash}`] : []),
  ].join(' \\\n    ');
  return html`<${Modal} title="Register hosts with a bootstrap token" onClose=${onClose} footer=${tok ? html`<button class="primary" onClick=${onClose}>Done</button>` : html`<button onClick=${onClose}>Cancel</button><button class="primary" disabled=${!cluster} onClick=${create}>Create token</button>`}>
    ${err && html`<div class="alert">${err}</div>`}
    ${tok ? html`<div>
      <div class="note">Run this on each new host (the token is shown once; it expires ${tok.expiredDate}). The agent registers its host into <b>${clusters.get(tok.clusterUuid) || tok.clusterUuid}</b>${tok.caCertHash ? ' and pins this controller by its CA hash before sending anything secret' : ''}.</div>
      <pre class="cmd" id="agent-command">${cmd}</pre>
      <button onClick=${() => copy(cmd.replace(/ \\\n +/g, ' '))}>Copy command</button>
    </div>` : html`<div>
      <label class="f"><span>Cluster</span><${ClusterSelect} clusters=${clusters} value=${cluster} onChange=${setCluster}/></label>
      <label class="f"><span>Valid for</span><select value=${ttl} onChange=${(e) => setTtl(e.target.value)}><option value="3600">1 hour</option><option value="86400">1 day</option><option value="604800">7 days</option></select></label>
    </div>`}
  </${Modal}>`;
}
