// The API reference, rendered from /zstack/v1/openapi.json (the document the server
// generates from its request schemas): no external viewer, no CDN.
import { html, useLoad } from '../ui.js';

export function ApiReference() {
  const [doc, err] = useLoad(() => fetch('/zstack/v1/openapi.json').then((r) => r.json()), []);
  if (!doc) return html`<div class="head"><h1>API reference</h1></div>${err ? html`<div class="alert">${err.message}</div>` : html`<div class="empty">Loading…</div>`}`;
  const groups = new Map();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) groups.set(op.tags[0], [...(groups.get(op.tags[0]) || []), { path, method, op }]);
  }
  return html`
    <div class="head"><h1>API reference</h1><span class="sub">${doc.info.title} · OpenAPI ${doc.openapi}</span><span class="spacer"></span><a href="/zstack/v1/openapi.json" download="hostkeeper-openapi.json">openapi.json</a></div>
    <div class="note">${doc.info.description} Authenticate with <code>${'Authorization: OAuth <session uuid>'}</code>. Errors: <code>{"error":{"code","description","details"}}</code>.</div>
    ${[...groups].map(([tag, ops]) => html`<h3>${tag}</h3>${ops.map(({ path, method, op }) => html`<details class="op">
      <summary><span class=${`m ${method}`}>${method.toUpperCase()}</span><span class="p">${path}</span><span class="sum">${op.summary}</span></summary>
      <div class="detail">
        <div class="hint">operationId <code>${op.operationId}</code></div>
        ${op.parameters.length > 0 && html`<table style="margin:8px 0"><thead><tr><th>Parameter</th><th>In</th><th>Description</th></tr></thead><tbody>${op.parameters.map((p) => html`<tr><td class="mono">${p.name}</td><td>${p.in}</td><td class="hint">${p.description || ''}</td></tr>`)}</tbody></table>`}
        ${op.requestBody && html`<div><b>Request body</b><pre>${JSON.stringify(op.requestBody.content['application/json'].schema, null, 2)}</pre></div>`}
        <div><b>Responses</b>: ${Object.entries(op.responses).map(([code, r]) => html`<div><code>${code}</code> <span class="hint">${r.description}</span></div>`)}</div>
      </div></details>`)}`)}`;
}
