/**
 * The dashboard page and its script, as text (the build copies only what tsc
 * emits, and the project's type-check has no DOM types, so the browser code
 * lives in a string). The script is plain ES2020 for any current browser.
 *
 * What the page reads from the DOM is stable for tests and scripts:
 * `#node-id`, `#conn-state` (`connecting` | `live` | `disconnected`),
 * `#member-count`, `#up-count`, `#throughput-total` (this node's req/s, a
 * number), `#throughput-cluster` (the sum over the members whose feed the page
 * reaches), `#members tr[data-node=ID][data-status=STATUS]` with cells
 * `.id .status .addr .linked .rps`, and `#models tr[data-model=NAME]` with
 * `.rps .codes .p50 .p99 .queued .running .batch .restarts .errors`.
 */

export interface PagePaths {
  uplotJs: string;
  uplotCss: string;
  app: string;
}

const CSS = `
:root{color-scheme:light dark;--fg:#1f2937;--mute:#6b7280;--bg:#fff;--line:#e5e7eb}
@media (prefers-color-scheme:dark){:root{--fg:#e5e7eb;--mute:#9ca3af;--bg:#111827;--line:#374151}}
*{box-sizing:border-box}
body{margin:0;padding:12px 16px;font:14px/1.4 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:4px 18px;align-items:baseline;margin-bottom:8px}
h1{font-size:18px;margin:0}h2{font-size:14px;margin:14px 0 6px;color:var(--mute);font-weight:600}
.k{color:var(--mute)}.v{font-variant-numeric:tabular-nums;font-weight:600}
#conn-state{padding:0 6px;border-radius:4px;background:#fef3c7;color:#92400e}
#conn-state.live{background:#dcfce7;color:#166534}#conn-state.disconnected{background:#fee2e2;color:#991b1b}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{color:var(--mute);font-weight:600}
tr[data-status=up] .status{color:#16a34a}tr[data-status=suspect] .status,tr[data-status=joining] .status{color:#d97706}
tr[data-status=leaving] .status{color:#7c3aed}tr[data-status=down] .status{color:#dc2626}
tr.self .id::after{content:" (this node)";color:var(--mute);font-weight:400}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 24px}
.chart{min-height:260px}
`;

/** The page: a header of live figures, the member table, two charts and the model table. */
export function pageHtml(p: PagePaths): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>actorserve dashboard</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="${p.uplotCss}"><style>${CSS}</style>
<script defer src="${p.uplotJs}"></script><script type="module" src="${p.app}"></script>
</head><body>
<header><h1>actorserve <span id="node-id"></span></h1><span id="conn-state">connecting</span>
<span><span class="k">members</span> <span id="member-count" class="v">0</span></span>
<span><span class="k">up</span> <span id="up-count" class="v">0</span></span>
<span><span class="k">this node</span> <span id="throughput-total" class="v">0</span> <span class="k">req/s</span></span>
<span><span class="k">cluster</span> <span id="throughput-cluster" class="v">0</span> <span class="k">req/s</span></span></header>
<h2>Members</h2>
<table id="members"><thead><tr><th>node</th><th>status</th><th>address</th><th>linked</th><th>req/s</th></tr></thead><tbody></tbody></table>
<div class="grid"><section><h2>Throughput, req/s (answers to each node's clients), last 2 min</h2><div id="chart-throughput" class="chart"></div></section>
<section><h2>Latency at this node, ms (p50 / p99 over each second)</h2><div id="chart-latency" class="chart"></div></section></div>
<h2>Models on this node</h2>
<table id="models"><thead><tr><th>model</th><th>req/s</th><th>by code</th><th>p50 ms</th><th>p99 ms</th><th>queued</th><th>running</th><th>batch (mean)</th><th>restarts</th><th>errors (total)</th></tr></thead><tbody></tbody></table>
</body></html>
`;
}

/** The page's script. No template literals inside (this is one). */
export const APP_JS = String.raw`
const WINDOW = 120; // points kept per chart: 2 minutes at one snapshot a second
const FRESH_MS = 2500; // a member's figure older than this is not plotted
const PALETTE = ['#111827', '#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];
const FEED = '/v1/dashboard/ws';
const SCHEME = location.protocol === 'https:' ? 'wss://' : 'ws://';
const $ = (id) => document.getElementById(id);

let selfId = null;
let lastLocal = 0;
const nodeRps = new Map(); // node id -> { rps, at }
const peers = new Map(); // node id -> { ws }
const retryAt = new Map(); // node id -> earliest time to reopen its feed
const memberRows = new Map();
const modelRows = new Map();

const fmt = (n) => (n === null || n === undefined ? '\u2013' : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : String(Math.round(n * 100) / 100));
const codes = (o) => Object.keys(o).sort().map((k) => k + ' ' + fmt(o[k])).join(', ') || '\u2013';

class Chart {
  constructor(el, unit) {
    this.el = el; this.unit = unit; this.names = []; this.x = []; this.cols = new Map(); this.plot = null;
  }
  push(x, values) {
    let rebuild = !this.plot;
    for (const name of values.keys()) {
      if (!this.cols.has(name)) { this.cols.set(name, this.x.map(() => null)); this.names.push(name); rebuild = true; }
    }
    this.x.push(x);
    for (const [name, col] of this.cols) col.push(values.has(name) ? values.get(name) : null);
    if (this.x.length > WINDOW) { this.x.shift(); for (const col of this.cols.values()) col.shift(); }
    const data = [this.x].concat(this.names.map((n) => this.cols.get(n)));
    if (typeof uPlot !== 'function') return;
    if (rebuild) this.build(data); else this.plot.setData(data);
  }
  build(data) {
    if (this.plot) this.plot.destroy();
    const series = [{}].concat(this.names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: i === 0 ? 2 : 1.5, points: { show: false } })));
    this.plot = new uPlot({ width: this.width(), height: 220, scales: { x: { time: true } }, axes: [{}, { label: this.unit, size: 56 }], series }, data, this.el);
  }
  width() { return Math.max(320, this.el.clientWidth || 600); }
  resize() { if (this.plot) this.plot.setSize({ width: this.width(), height: 220 }); }
}

const throughput = new Chart($('chart-throughput'), 'req/s');
const latency = new Chart($('chart-latency'), 'ms');
addEventListener('resize', () => { throughput.resize(); latency.resize(); });

function freshRps(id, now) {
  const r = nodeRps.get(id);
  return r && now - r.at < FRESH_MS ? r.rps : null;
}

function row(map, tbody, key, attr, cells) {
  let tr = map.get(key);
  if (!tr) {
    tr = document.createElement('tr');
    tr.dataset[attr] = key;
    for (const c of cells) { const td = document.createElement('td'); td.className = c; tr.appendChild(td); }
    map.set(key, tr);
  }
  tbody.appendChild(tr); // in the snapshot's order
  return tr;
}

function prune(map, keep) {
  for (const [key, tr] of map) if (!keep.has(key)) { tr.remove(); map.delete(key); }
}

function set(tr, cls, text) {
  const td = tr.querySelector('.' + cls);
  if (td.textContent !== text) td.textContent = text;
}

function renderMembers(members, now) {
  const tbody = $('members').tBodies[0];
  let up = 0;
  for (const m of members) {
    const tr = row(memberRows, tbody, m.id, 'node', ['id', 'status', 'addr', 'linked', 'rps']);
    tr.dataset.status = m.status;
    tr.classList.toggle('self', m.id === selfId);
    set(tr, 'id', m.id);
    set(tr, 'status', m.status);
    set(tr, 'addr', m.addr);
    set(tr, 'linked', m.linked ? 'yes' : 'no');
    set(tr, 'rps', fmt(freshRps(m.id, now)));
    if (m.status === 'up') up++;
  }
  prune(memberRows, new Set(members.map((m) => m.id)));
  $('member-count').textContent = String(members.length);
  $('up-count').textContent = String(up);
}

function renderModels(models) {
  const tbody = $('models').tBodies[0];
  for (const m of models) {
    const tr = row(modelRows, tbody, m.model, 'model', ['model', 'rps', 'codes', 'p50', 'p99', 'queued', 'running', 'batch', 'restarts', 'errors']);
    set(tr, 'model', m.model);
    set(tr, 'rps', fmt(m.rps));
    set(tr, 'codes', codes(m.rpsByCode));
    set(tr, 'p50', fmt(m.p50Ms));
    set(tr, 'p99', fmt(m.p99Ms));
    set(tr, 'queued', String(m.queued));
    set(tr, 'running', String(m.running));
    set(tr, 'batch', fmt(m.batchMean));
    set(tr, 'restarts', String(m.restarts));
    set(tr, 'errors', codes(m.errors));
  }
  prune(modelRows, new Set(models.map((m) => m.model)));
}

// Every other live member's own feed, for the cluster's throughput; a feed
// that fails is retried no sooner than 5 s later.
function syncPeers(members, now) {
  const want = new Map();
  for (const m of members) {
    if (m.id !== selfId && (m.status === 'up' || m.status === 'joining' || m.status === 'suspect') && /^[A-Za-z0-9._\-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/.test(m.addr)) want.set(m.id, m.addr);
  }
  for (const [id, p] of peers) {
    if (want.get(id) !== p.addr) { peers.delete(id); p.ws.close(); nodeRps.delete(id); }
  }
  for (const [id, addr] of want) {
    if (peers.has(id) || (retryAt.get(id) || 0) > now) continue;
    let ws;
    try { ws = new WebSocket(SCHEME + addr + FEED); } catch (e) { retryAt.set(id, now + 5000); continue; }
    const p = { ws, addr };
    peers.set(id, p);
    ws.onmessage = (e) => {
      let s;
      try { s = JSON.parse(e.data); } catch (err) { return; }
      if (s && s.t === 'snapshot' && s.node === id && s.windowMs > 0) nodeRps.set(id, { rps: s.rps, at: Date.now() });
    };
    ws.onclose = () => {
      if (peers.get(id) !== p) return;
      peers.delete(id);
      nodeRps.delete(id);
      retryAt.set(id, Date.now() + 5000);
    };
  }
}

function onSnapshot(s) {
  if (!s || s.t !== 'snapshot' || s.v !== 1) return;
  const now = Date.now();
  lastLocal = now;
  if ($('conn-state').className !== 'live') setConn('live');
  selfId = s.node;
  $('node-id').textContent = s.node;
  if (s.windowMs > 0) nodeRps.set(s.node, { rps: s.rps, at: now });
  syncPeers(s.members, now);
  renderMembers(s.members, now);
  renderModels(s.models);
  $('throughput-total').textContent = fmt(s.rps);

  const x = s.time / 1000;
  const perNode = new Map();
  let total = 0;
  for (const m of s.members) {
    const r = freshRps(m.id, now);
    if (r !== null) total += r;
    if (r !== null || throughput.cols.has(m.id)) perNode.set(m.id, r);
  }
  $('throughput-cluster').textContent = fmt(total);
  throughput.push(x, new Map([['cluster', total]].concat([...perNode])));
  const lat = new Map();
  for (const m of s.models) { lat.set(m.model + ' p50', m.p50Ms); lat.set(m.model + ' p99', m.p99Ms); }
  latency.push(x, lat);
}

function setConn(state) {
  const el = $('conn-state');
  el.textContent = state;
  el.className = state;
}

function connect() {
  setConn('connecting');
  const ws = new WebSocket(SCHEME + location.host + FEED);
  ws.onopen = () => setConn('live');
  ws.onmessage = (e) => {
    try { onSnapshot(JSON.parse(e.data)); } catch (err) { console.error(err); }
  };
  ws.onclose = () => { setConn('disconnected'); setTimeout(connect, 2000); };
}

// A feed that stops talking without closing (a frozen node) shows as stale.
setInterval(() => { if (lastLocal && Date.now() - lastLocal > 5000) setConn('disconnected'); }, 1000);
connect();
`;
