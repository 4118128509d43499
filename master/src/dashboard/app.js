// Mezzo dashboard: vanilla JS over the master's Mesos-shaped endpoints.
// Everything from the cluster is inserted with textContent (never
// innerHTML), so task names, labels and log lines cannot inject markup.
'use strict';

const REFRESH_MS = 2000;
const TAIL_BYTES = 16384;
let state = null;      // /master/state
let metrics = null;    // /metrics/snapshot
let filters = { q: '', st: '' };
let timer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(url + ': ' + r.status);
  return r.json();
}

const fmtNum = (x, d = 2) => (Math.round((x || 0) * 10 ** d) / 10 ** d).toString();
const fmtMem = (mb) => (mb >= 1024 ? fmtNum(mb / 1024, 1) + ' GB' : fmtNum(mb, 0) + ' MB');
const fmtTime = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : '');
const fmtDur = (secs) => {
  secs = Math.floor(secs || 0);
  const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${secs % 60}s`;
};
const enc = encodeURIComponent;

function allTasks() {
  const out = [];
  if (!state) return out;
  for (const f of [...(state.frameworks || []), ...(state.completed_frameworks || [])]) {
    for (const key of ['tasks', 'unreachable_tasks', 'completed_tasks']) {
      for (const t of f[key] || []) out.push({ t, f });
    }
  }
  out.sort((a, b) => startTime(b.t) - startTime(a.t));
  return out;
}
const startTime = (t) => ((t.statuses || [])[0] || {}).timestamp || 0;
const agentById = (id) => (state.slaves || []).find((a) => a.id === id);
const stateChip = (s) => el('span', { class: 'state ' + s, text: s });

function card(k, v, small) {
  return el('div', { class: 'card' }, el('div', { class: 'k', text: k }), el('div', { class: 'v' + (small ? ' small' : ''), text: String(v) }));
}

function bar(name, used, offered, total, fmt) {
  const pct = (x) => (total > 0 ? Math.min(100, (100 * x) / total) : 0);
  const u = el('div', { class: 'used' }), o = el('div', { class: 'offered' });
  u.style.width = pct(used) + '%';
  o.style.width = pct(offered) + '%';
  return el('div', { class: 'bar-row' },
    el('strong', { text: name }),
    el('div', { class: 'bar', title: `${name}: used ${fmt(used)}, offered ${fmt(offered)}, total ${fmt(total)}` }, u, o),
    el('span', { class: 'mono', text: `${fmt(used)} used / ${fmt(total)} (${fmtNum(pct(used), 1)}%)` }));
}

// ---------------------------------------------------------------- views

function viewOverview() {
  const m = metrics || {};
  const leader = state.leader_info || {};
  const counts = {};
  for (const { t } of allTasks()) counts[t.state] = (counts[t.state] || 0) + 1;
  let offered = { cpus: 0, mem: 0, disk: 0 };
  for (const a of state.slaves || []) for (const r of ['cpus', 'mem', 'disk']) offered[r] += (a.offered_resources || {})[r] || 0;
  const uis = (state.frameworks || []).filter((f) => f.webui_url);
  return el('div', {},
    el('h2', { text: 'Cluster overview' }),
    el('div', { class: 'cards' },
      card('Leader', state.leader ? state.leader.replace(/^master@/, '') : 'none', true),
      card('Master version', state.version + ' (mezzo ' + (state.mezzo_version || '') + ')', true),
      card('Uptime', fmtDur(m['master/uptime_secs'])),
      card('Agents (active / total)', `${state.activated_slaves || 0} / ${(state.slaves || []).length}`),
      card('Frameworks', (state.frameworks || []).length),
      card('Running tasks', counts.TASK_RUNNING || 0),
      card('Outstanding offers', m['master/outstanding_offers'] || 0)),
    el('h3', { text: 'Tasks by state' }),
    el('div', { class: 'chips', id: 'task-states' },
      Object.keys(counts).length ? Object.entries(counts).sort().map(([s, n]) =>
        el('a', { href: '#/tasks?state=' + enc(s), class: 'chip' }, stateChip(s), ' ', String(n))) : el('span', { class: 'muted', text: 'no tasks yet' })),
    el('h3', { text: 'Resources' }),
    el('div', { class: 'bars' },
      bar('CPUs', m['master/cpus_used'] || 0, offered.cpus, m['master/cpus_total'] || 0, (x) => fmtNum(x)),
      bar('Memory', m['master/mem_used'] || 0, offered.mem, m['master/mem_total'] || 0, fmtMem),
      bar('Disk', m['master/disk_used'] || 0, offered.disk, m['master/disk_total'] || 0, fmtMem),
      el('div', { class: 'legend' }, el('i', { class: 'used' }), 'used by tasks', el('i', { class: 'offered' }), 'offered')),
    el('h3', { text: 'Framework UIs' }),
    uis.length ? el('ul', {}, uis.map((f) => el('li', {}, el('a', { href: safeUrl(f.webui_url), target: '_blank', rel: 'noopener', text: f.name }), ' ', el('span', { class: 'muted mono', text: f.webui_url }))))
      : el('p', { class: 'muted', text: 'No framework registered a web UI (Marathon and batch set webui_url when they run).' }));
}

// Only http(s) links from frameworks' webui_url; anything else is shown, not linked.
function safeUrl(u) { return /^https?:\/\//i.test(u || '') ? u : '#/frameworks'; }

function viewAgents() {
  const rows = (state.slaves || []).map((a) => {
    const r = a.resources || {}, u = a.used_resources || {};
    return el('tr', {},
      el('td', { class: 'mono', text: a.id }),
      el('td', { text: `${a.hostname}:${a.port}` }),
      el('td', { text: `${fmtNum(u.cpus)} / ${fmtNum(r.cpus)}` }),
      el('td', { text: `${fmtMem(u.mem || 0)} / ${fmtMem(r.mem || 0)}` }),
      el('td', { text: `${fmtMem(u.disk || 0)} / ${fmtMem(r.disk || 0)}` }),
      el('td', { class: 'mono', text: r.ports || '' }),
      el('td', { class: a.active ? 'yes' : 'no', text: a.active ? 'active' : (a.reachable === false ? 'unreachable' : 'inactive') }),
      el('td', { text: fmtTime(a.registered_time) }),
      el('td', {}, a.port ? el('a', { href: `/agents/${enc(a.id)}/state`, text: 'state' }) : ''));
  });
  return el('div', {}, el('h2', { text: 'Agents' }),
    el('table', { id: 'agents-table' },
      el('thead', {}, el('tr', {}, ['ID', 'Host', 'CPUs (used / total)', 'Memory', 'Disk', 'Ports', 'Status', 'Registered', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'no agents registered' })))));
}

function viewFrameworks() {
  const mk = (f, active) => {
    const u = f.used_resources || {};
    return el('tr', {},
      el('td', { class: 'mono', text: f.id }),
      el('td', { text: f.name }),
      el('td', { text: f.role || '*' }),
      el('td', { text: f.user || '' }),
      el('td', { class: active && f.active ? 'yes' : 'no', text: active ? (f.active ? 'active' : 'disconnected') : 'completed' }),
      el('td', { text: String((f.tasks || []).length) }),
      el('td', { text: fmtNum(u.cpus) }),
      el('td', { text: fmtMem(u.mem || 0) }),
      el('td', { text: fmtTime(f.registered_time) }),
      el('td', {}, f.webui_url ? el('a', { href: safeUrl(f.webui_url), target: '_blank', rel: 'noopener', text: 'web UI' }) : ''));
  };
  const head = el('thead', {}, el('tr', {}, ['ID', 'Name', 'Role', 'User', 'Status', 'Active tasks', 'CPUs', 'Memory', 'Registered', 'UI'].map((h) => el('th', { text: h }))));
  return el('div', {}, el('h2', { text: 'Frameworks' }),
    el('table', { id: 'frameworks-table' }, head,
      el('tbody', {}, (state.frameworks || []).map((f) => mk(f, true)), (state.completed_frameworks || []).map((f) => mk(f, false)))));
}

function taskRows() {
  const q = filters.q.toLowerCase();
  return allTasks().filter(({ t, f }) =>
    (!filters.st || t.state === filters.st) &&
    (!q || [t.id, t.name, f.name, t.framework_id, t.slave_id].some((s) => (s || '').toLowerCase().includes(q))))
    .slice(0, 500)
    .map(({ t, f }) => {
      const a = agentById(t.slave_id);
      const r = t.resources || {};
      return el('tr', {},
        el('td', { class: 'mono' }, el('a', { href: `#/task/${enc(t.framework_id)}/${enc(t.id)}`, text: t.id })),
        el('td', { text: t.name || '' }),
        el('td', { text: f.name || t.framework_id }),
        el('td', { text: a ? a.hostname : t.slave_id }),
        el('td', {}, stateChip(t.state)),
        el('td', { text: fmtNum(r.cpus) }),
        el('td', { text: fmtMem(r.mem || 0) }),
        el('td', { text: fmtTime(startTime(t)) }));
    });
}

function viewTasks() {
  const states = [...new Set(allTasks().map(({ t }) => t.state))].sort();
  if (filters.st && !states.includes(filters.st)) states.push(filters.st);
  const tbody = el('tbody', { id: 'tasks-body' });
  const fill = () => { tbody.replaceChildren(...taskRows()); if (!tbody.children.length) tbody.appendChild(el('tr', {}, el('td', { colspan: 8, class: 'muted', text: 'no matching tasks' }))); };
  const search = el('input', { id: 'task-search', type: 'search', placeholder: 'Search id, name, framework, agent…', value: filters.q,
    oninput: (e) => { filters.q = e.target.value; fill(); } });
  const select = el('select', { id: 'task-state', onchange: (e) => { filters.st = e.target.value; fill(); } },
    el('option', { value: '', text: 'All states' }), states.map((s) => el('option', { value: s, text: s })));
  select.value = filters.st;
  fill();
  return el('div', {}, el('h2', { text: 'Tasks' }), el('div', { class: 'toolbar' }, search, select),
    el('table', { id: 'tasks-table' },
      el('thead', {}, el('tr', {}, ['ID', 'Name', 'Framework', 'Agent', 'State', 'CPUs', 'Memory', 'Started'].map((h) => el('th', { text: h })))),
      tbody));
}

function findExecutor(agentState, fid, tid) {
  for (const f of agentState.frameworks || []) {
    if (f.id !== fid) continue;
    for (const e of [...(f.executors || []), ...(f.completed_executors || [])]) if (e.id === tid) return e;
  }
  return null;
}

async function tail(base, path) {
  const size = (await getJSON(`${base}/files/read?path=${enc(path)}&offset=-1`)).offset;
  const off = Math.max(0, size - TAIL_BYTES);
  const chunk = await getJSON(`${base}/files/read?path=${enc(path)}&offset=${off}&length=${TAIL_BYTES}`);
  return (off > 0 ? '…\n' : '') + chunk.data;
}

function viewTask(fid, tid) {
  const found = allTasks().find(({ t }) => t.framework_id === fid && t.id === tid);
  if (!found) return el('p', { class: 'muted', text: `Task ${tid} is not known to the master.` });
  const { t, f } = found;
  const a = agentById(t.slave_id);
  const box = el('div', { id: 'sandbox' }, el('p', { class: 'muted', text: 'Loading sandbox…' }));
  const r = t.resources || {};
  const info = el('div', { class: 'cards' }, card('Task', t.id, true), card('State', t.state, true), card('Framework', f.name || fid, true),
    card('Agent', a ? `${a.hostname}:${a.port}` : t.slave_id, true), card('Resources', `${fmtNum(r.cpus)} cpus, ${fmtMem(r.mem || 0)}`, true));
  loadSandbox(box, a, fid, tid);
  return el('div', {}, el('h2', { text: 'Task ' + t.id }), info,
    el('h3', { text: 'Status history' }),
    el('table', {}, el('tbody', {}, (t.statuses || []).map((s) => el('tr', {}, el('td', {}, stateChip(s.state)), el('td', { text: fmtTime(s.timestamp) }))))),
    el('h3', { text: 'Sandbox' }), box);
}

async function loadSandbox(box, agent, fid, tid) {
  if (!agent || !agent.port) { box.replaceChildren(el('p', { class: 'muted', text: 'The agent has no HTTP API address.' })); return; }
  const base = `/agents/${enc(agent.id)}`;
  try {
    const ex = findExecutor(await getJSON(`${base}/state`), fid, tid);
    if (!ex) { box.replaceChildren(el('p', { class: 'muted', text: 'The agent no longer has this task\'s sandbox.' })); return; }
    const dir = ex.directory;
    const entries = await getJSON(`${base}/files/browse?path=${enc(dir)}`);
    const list = el('table', { id: 'sandbox-files' }, el('thead', {}, el('tr', {}, ['Mode', 'Size', 'Modified', 'Path'].map((h) => el('th', { text: h })))),
      el('tbody', {}, entries.map((e) => el('tr', {},
        el('td', { class: 'mono', text: e.mode }), el('td', { text: String(e.size) }), el('td', { text: fmtTime(e.mtime) }),
        el('td', { class: 'mono' }, e.mode.startsWith('d') ? e.path.split('/').pop() + '/' :
          el('a', { href: `${base}/files/download?path=${enc(e.path)}`, text: e.path.split('/').pop() }))))));
    const logs = [];
    for (const name of ['stdout', 'stderr']) {
      if (!entries.some((e) => e.path.endsWith('/' + name))) continue;
      let text;
      try { text = await tail(base, dir + '/' + name); } catch (err) { text = String(err); }
      logs.push(el('h3', {}, name + ' ', el('a', { href: `${base}/files/download?path=${enc(dir + '/' + name)}`, text: '(download)' })),
        el('pre', { class: 'log', id: 'log-' + name, text: text || '(empty)' }));
    }
    box.replaceChildren(el('p', { class: 'mono muted', text: dir }), list, ...logs);
  } catch (err) {
    box.replaceChildren(el('p', { class: 'no', text: 'Cannot read the sandbox: ' + err.message }));
  }
}

// ---------------------------------------------------------------- router

function route() {
  const h = location.hash.replace(/^#/, '') || '/';
  const [path, query] = h.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  if (params.has('state')) filters.st = params.get('state');
  return { name: parts[0] || 'overview', parts, params };
}

function render(full) {
  if (!state) return;
  const r = route();
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === (r.name === 'task' ? 'tasks' : r.name));
  const main = document.getElementById('main');
  if (r.name === 'tasks' && !full && document.getElementById('tasks-body')) {
    // Keep the search box (and its focus) while refreshing the rows.
    const body = document.getElementById('tasks-body');
    body.replaceChildren(...taskRows());
    return;
  }
  if (r.name === 'task' && !full) {
    return; // the sandbox view refreshes its own logs below
  }
  let view;
  switch (r.name) {
    case 'agents': view = viewAgents(); break;
    case 'frameworks': view = viewFrameworks(); break;
    case 'tasks': view = viewTasks(); break;
    case 'task': view = viewTask(r.parts[1], r.parts[2]); break;
    default: view = viewOverview();
  }
  main.replaceChildren(view);
}

async function refresh(full) {
  const status = document.getElementById('status');
  try {
    [state, metrics] = await Promise.all([getJSON('/master/state'), getJSON('/metrics/snapshot')]);
    status.textContent = 'updated ' + new Date().toLocaleTimeString();
    status.classList.remove('err');
    render(full);
  } catch (err) {
    status.textContent = 'cannot reach the master: ' + err.message;
    status.classList.add('err');
  }
}

async function refreshLogs() {
  const r = route();
  if (r.name !== 'task' || !state) return;
  const box = document.getElementById('sandbox');
  const t = allTasks().find(({ t }) => t.framework_id === r.parts[1] && t.id === r.parts[2]);
  if (box && t) loadSandbox(box, agentById(t.t.slave_id), r.parts[1], r.parts[2]);
}

window.addEventListener('hashchange', () => render(true));
refresh(true);
timer = setInterval(() => { refresh(false); refreshLogs(); }, REFRESH_MS);
