// dnsguard dashboard: plain JS, no dependencies. Every value from the server is
// put in the page as text (never as HTML). State changes carry the session's CSRF
// token in X-CSRF-Token.
'use strict';

const $ = (sel) => document.querySelector(sel);
let csrf = null;
let groupsCache = [];

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const svg = ['svg', 'rect', 'line', 'text', 'g', 'circle', 'title', 'path'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

function fmt(n) {
  if (n === null || n === undefined) return '–';
  if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(n >= 1e5 ? 0 : 1) + 'k';
  return n.toLocaleString();
}

function pad(n) { return String(n).padStart(2, '0'); }
function timeOf(ms, withDate) {
  const d = new Date(ms);
  const t = pad(d.getHours()) + ':' + pad(d.getMinutes());
  return withDate ? (d.getMonth() + 1) + '/' + d.getDate() + ' ' + t : t;
}
function timeSec(ms) { const d = new Date(ms); return timeOf(ms, Date.now() - ms > 86400000) + ':' + pad(d.getSeconds()); }

const QTYPES = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 64: 'SVCB', 65: 'HTTPS', 255: 'ANY' };
const qtype = (n) => QTYPES[n] || ('TYPE' + n);

let toastTimer = null;
function toast(msg, isError) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = 'toast' + (isError ? ' error' : '');
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 7000 : 3500);
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf || '';
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = '/login'; throw new Error('logged out'); }
  const type = r.headers.get('content-type') || '';
  const data = type.startsWith('application/json') ? await r.json() : await r.text();
  if (!r.ok) throw new Error((data && data.error) || String(data).trim() || r.statusText);
  return data;
}

async function ndjson(path) {
  const text = await api('GET', path);
  return String(text).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined && v !== false) u.set(k, v);
  return u.toString();
}

// ------------------------------------------------------------------- theme

function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t; else delete document.documentElement.dataset.theme;
}
function currentDark() {
  const t = document.documentElement.dataset.theme;
  if (t) return t === 'dark';
  return matchMedia('(prefers-color-scheme: dark)').matches;
}
applyTheme(localStorage.getItem('dnsguard-theme'));

// ---------------------------------------------------------------- overview

let period = '24h';

let lastSeries = null;
function drawChart(series) {
  lastSeries = series;
  const svg = clear($('#chart'));
  const wrap = $('#chart-wrap');
  const W = wrap.clientWidth || 800, H = wrap.clientHeight || 240;
  svg.dataset.width = W;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pts = series.points;
  const left = 40, right = 8, top = 10, bottom = 22;
  const total = pts.reduce((a, p) => a + p.total, 0);
  const blocked = pts.reduce((a, p) => a + p.blocked, 0);
  svg.dataset.total = total;
  svg.dataset.blocked = blocked;
  if (!pts.length || total === 0) {
    svg.append(h('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'No queries in this period yet'));
    return;
  }
  const max = Math.max(1, ...pts.map((p) => p.total));
  const step = niceStep(max / 4);
  const nice = step * 4;
  const iw = W - left - right, ih = H - top - bottom;
  for (let i = 0; i <= 4; i++) {
    const y = top + ih - (ih * i) / 4;
    svg.append(h('line', { x1: left, x2: W - right, y1: y, y2: y, class: 'grid' }));
    svg.append(h('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, fmt(step * i)));
  }
  const bw = iw / pts.length;
  const gap = bw > 6 ? Math.min(3, bw * 0.2) : 0;
  const multiDay = series.until_ms - series.since_ms > 86400000 * 1.5;
  const labelEvery = Math.ceil(pts.length / Math.max(2, Math.floor(iw / 70)));
  pts.forEach((p, i) => {
    const x = left + i * bw + gap / 2;
    const hTot = (p.total / nice) * ih;
    const hBl = (p.blocked / nice) * ih;
    const tip = `${timeOf(p.start_ms, multiDay)} — ${p.total} queries, ${p.blocked} blocked`;
    if (p.total > 0) {
      svg.append(h('rect', { x, y: top + ih - hTot, width: Math.max(1, bw - gap), height: Math.max(0, hTot - hBl), class: 'bar-allowed', rx: bw > 8 ? 2 : 0 }, h('title', {}, tip)));
    }
    if (p.blocked > 0) {
      svg.append(h('rect', { x, y: top + ih - hBl, width: Math.max(1, bw - gap), height: hBl, class: 'bar-blocked', rx: bw > 8 ? 2 : 0 }, h('title', {}, tip)));
    }
    if (i % labelEvery === 0) {
      svg.append(h('text', { x: x + bw / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis' }, timeOf(p.start_ms, multiDay)));
    }
  });
}

// The smallest of 1, 2, 5, 10, 20, 50, … at least v (integer counts per tick).
function niceStep(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawDonut(share) {
  const svg = clear($('#share-donut'));
  const r = 15.915, c = 2 * Math.PI * r;
  svg.append(h('circle', { cx: 18, cy: 18, r, fill: 'none', 'stroke-width': 5, class: 'track' }));
  svg.append(h('circle', { cx: 18, cy: 18, r, fill: 'none', 'stroke-width': 5, class: 'arc', 'stroke-dasharray': `${(share * c).toFixed(2)} ${c.toFixed(2)}` }));
}

function barList(el, items, onClick) {
  clear(el);
  if (!items.length) { el.append(h('li', { class: 'empty-note' }, 'Nothing yet')); return; }
  const max = items[0].count || 1;
  for (const it of items) {
    const fill = h('span', { class: 'fill' });
    fill.style.width = Math.max(2, (100 * it.count) / max) + '%';
    const key = onClick ? h('button', { class: 'qname k', title: it.key, onclick: (e) => onClick(it.key, e) }, it.key) : h('span', { class: 'k', title: it.key }, it.key);
    el.append(h('li', {}, fill, key, h('span', { class: 'n' }, fmt(it.count))));
  }
}

async function loadOverview() {
  const [stats, series, lists] = await Promise.all([
    api('GET', '/api/v1/stats?' + qs({ since: period, top: 8 })),
    api('GET', '/api/v1/timeseries?' + qs({ since: period })),
    api('GET', '/api/v1/lists'),
  ]);
  $('#stat-total').textContent = fmt(stats.total);
  $('#stat-blocked').textContent = fmt(stats.blocked);
  $('#stat-share').textContent = (100 * stats.blocked_share).toFixed(1) + '%';
  $('#stat-flagged').textContent = fmt(stats.flagged);
  $('#stat-cached').textContent = fmt(stats.cached);
  $('#stat-latency').textContent = stats.total ? (stats.avg_latency_us / 1000).toFixed(1) + ' ms' : '–';
  $('#stat-limited').textContent = fmt(stats.rate_limited || 0);
  drawDonut(stats.blocked_share);
  drawChart(series);
  barList($('#top-domains'), stats.top_domains, openRulePop);
  barList($('#top-blocked'), stats.top_blocked, openRulePop);
  barList($('#top-clients'), stats.top_clients, (c) => { $('#log-client').value = c; location.hash = '#/log'; });
  const box = clear($('#overview-lists'));
  if (!lists.length) box.append(h('div', { class: 'empty-note' }, 'No lists configured'));
  for (const l of lists) {
    const cls = !l.enabled ? 'dot off' : (l.missing || l.last_error) ? 'dot bad' : 'dot';
    box.append(h('div', { class: 'list-pill', title: l.last_error || l.source }, h('span', { class: cls }),
      h('span', { class: 'k' }, l.name), h('span', { class: 'muted' }, l.enabled ? fmt(l.entries) + ' entries' : 'disabled')));
  }
}

// --------------------------------------------------------------- query log

let logCursor = null, logOldest = null, liveTimer = null;

function logParams() {
  const v = $('#log-verdict').value;
  return {
    since: $('#log-since').value,
    domain: $('#log-domain').value.trim(),
    client: $('#log-client').value.trim(),
    blocked: v === 'blocked', allowed: v === 'allowed', flagged: v === 'flagged',
  };
}

function logRow(e, isNew) {
  const verdict = h('span', { class: 'badge ' + e.verdict }, e.verdict);
  return h('tr', { class: isNew ? 'new' : null },
    h('td', { title: new Date(e.time_ms).toISOString() }, timeSec(e.time_ms)),
    h('td', { title: e.client }, e.client_name || e.client),
    h('td', {}, h('button', { class: 'qname', 'data-name': e.name, title: 'Allow or deny ' + e.name, onclick: (ev) => openRulePop(e.name, ev, e.group) }, e.name)),
    h('td', {}, qtype(e.qtype)),
    h('td', {}, verdict, e.flagged ? h('span', { class: 'badge flag', title: e.rule }, e.level ? 'tunnel · ' + e.level : 'tunnel') : null),
    h('td', { class: 'rule hide-sm', title: [e.list, e.rule].filter(Boolean).join(': ') }, [e.list, e.rule].filter(Boolean).join(': '),
      e.ede ? ' ' : null, e.ede ? h('span', { class: 'badge ede', title: `Extended DNS Error ${e.ede.code} (${e.ede.name})${e.ede.text ? ': ' + e.ede.text : ''}` }, 'EDE ' + e.ede.code + ' ' + e.ede.name) : null),
    h('td', { class: 'num hide-sm' }, (e.latency_us / 1000).toFixed(1)));
}

async function loadLog(more) {
  const params = { ...logParams(), limit: 100, format: 'json' };
  if (more && logOldest) params.until = new Date(logOldest).toISOString();
  const entries = await ndjson('/api/v1/querylog?' + qs(params));
  const body = $('#log-table tbody');
  if (!more) clear(body);
  for (const e of entries) body.append(logRow(e, false));
  if (entries.length) logOldest = entries[entries.length - 1].time_ms;
  $('#log-older').hidden = entries.length < 100;
  $('#log-count').textContent = body.children.length + ' entries shown';
  if (!more) {
    const f = await api('GET', '/api/v1/querylog/follow?' + qs(logParams()));
    logCursor = f.cursor;
  }
}

async function followTick() {
  if (!logCursor) return;
  try {
    const f = await api('GET', '/api/v1/querylog/follow?' + qs({ ...logParams(), after: logCursor }));
    logCursor = f.cursor;
    const body = $('#log-table tbody');
    for (const e of f.entries) body.insertBefore(logRow(e, true), body.firstChild);
    while (body.children.length > 500) body.removeChild(body.lastChild);
    $('#log-count').textContent = body.children.length + ' entries shown';
  } catch (err) { /* transient: try again next tick */ }
}

function setLive(on) {
  clearInterval(liveTimer);
  liveTimer = on ? setInterval(followTick, 2000) : null;
}

// The allow/deny popover, opened from a name anywhere.
let popName = null;
async function openRulePop(name, ev, group) {
  popName = name;
  if (!groupsCache.length) groupsCache = await api('GET', '/api/v1/groups');
  const sel = clear($('#rule-group'));
  for (const g of groupsCache) sel.append(h('option', { value: g.name, selected: g.name === (group || 'default') }, g.name));
  $('#rule-name').textContent = name;
  const pop = $('#rule-pop');
  pop.hidden = false;
  const r = ev && ev.target ? ev.target.getBoundingClientRect() : { left: 20, bottom: 80 };
  pop.style.left = Math.max(8, Math.min(r.left, innerWidth - pop.offsetWidth - 8)) + 'px';
  pop.style.top = Math.min(r.bottom + 6, innerHeight - pop.offsetHeight - 8) + 'px';
}

async function ruleAction(action) {
  const group = $('#rule-group').value;
  try {
    await api('POST', '/api/v1/groups/' + encodeURIComponent(group) + '/rules', { action, entry: popName });
    toast(`${action === 'allow' ? 'Allowed' : 'Denied'} ${popName} for ${group}`);
    $('#rule-pop').hidden = true;
    groupsCache = [];
  } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ alerts

let alertsPeriod = '24h';

// A confidence level as a badge (nothing for flags logged before levels).
function levelBadge(level) {
  return level ? h('span', { class: 'badge level-' + level, title: level + ' confidence' }, level) : null;
}

// A reason shown once, not spelled out on every row: the kinds of evidence (or
// the start of the text) as a toggle that opens the full text.
function reasonToggle(text, kinds) {
  const short = kinds && kinds.length ? kinds.join(' · ') : (text.length > 48 ? text.slice(0, 47) + '…' : text);
  if (short === text) return h('span', { class: 'reason-short' }, text);
  return h('details', { class: 'reason', title: text }, h('summary', {}, short), h('div', { class: 'reason-text' }, text));
}

function alertRows(el, items, what) {
  clear(el);
  if (!items.length) { el.append(h('div', { class: 'empty-note' }, 'No flags — nothing looks like a tunnel.')); return; }
  for (const a of items.slice(0, 20)) {
    // Scores are in units of the flag threshold (1 = flagged); 5 or more fills the meter.
    const m = h('i'); m.style.width = Math.min(100, a.max_score * 20) + '%';
    el.append(h('div', { class: 'alert-row' },
      h('div', { class: 'row' }, h('b', {}, a.key, ' ', levelBadge(a.max_level)), h('span', { class: 'muted' }, `${a.count} ${a.count === 1 ? 'flag' : 'flags'} · score ${a.max_score.toFixed(2)} · ${timeOf(a.last_ms, true)}`)),
      h('div', { class: 'meter' }, m),
      h('div', { class: 'reasons' }, (a.kinds || []).join(' · ')),
      a.reasons.length ? h('details', { class: 'reason' }, h('summary', {}, 'why'), ...a.reasons.map((r) => h('div', { class: 'reason-text' }, r))) : null,
      h('div', { class: 'reasons' }, what + ': ' + a.clients_or_domains.join(', '))));
  }
}

async function loadAlerts() {
  const a = await api('GET', '/api/v1/alerts?' + qs({ since: alertsPeriod }));
  $('#alerts-total').textContent = fmt(a.total);
  alertRows($('#alerts-domains'), a.domains, 'clients');
  alertRows($('#alerts-clients'), a.clients, 'domains');
  const body = clear($('#alerts-recent'));
  for (const e of a.recent) {
    body.append(h('tr', {}, h('td', {}, timeSec(e.time_ms)), h('td', { title: e.client }, e.client_name || e.client),
      h('td', {}, h('button', { class: 'qname', onclick: (ev) => openRulePop(e.name, ev, e.group) }, e.name)),
      h('td', { class: 'num' }, e.tunnel_score.toFixed(2)),
      h('td', {}, levelBadge(e.level)),
      h('td', { class: 'rule hide-sm' }, reasonToggle(e.rule.replace(/^tunnel: /, ''), e.kinds))));
  }
  // The review of the period (the same data as `dnsguard report`).
  const r = await api('GET', '/api/v1/report?' + qs({ since: alertsPeriod, top: 10 }));
  $('#review-period').textContent = alertsPeriod;
  const rv = clear($('#alerts-review'));
  const block = (title, lines) => h('div', {}, h('h3', {}, title),
    lines.length ? h('ul', {}, ...lines.map((l) => h('li', {}, l))) : h('div', { class: 'empty-note' }, 'none'));
  rv.append(
    block('Top clients', r.top_clients.map((c) => `${c.client} (${c.group || 'default'}): ${fmt(c.queries)} queries, ${fmt(c.blocked)} blocked`)),
    block('New domains', r.new_domains.map((n) => `${n.client}: ${n.domains.slice(0, 8).join(', ')}${n.domains.length > 8 ? ' …' : ''}`)),
    block('Blocked by category', r.blocked_by_category.map((c) => `${c.key}: ${fmt(c.count)}`)),
    block('Bypass attempts', r.bypass.map((b) => `${b.client} ${b.name} (${b.via}) × ${b.count}`)));
  // Egress alerts raised since start (new domains, exfil, bypass, tunnel).
  const raised = await api('GET', '/api/v1/alerts/recent');
  const eb = clear($('#alerts-egress'));
  for (const e of raised) {
    eb.append(h('tr', {}, h('td', {}, timeSec(e.time_ms)), h('td', {}, e.type), h('td', {}, levelBadge(e.level)), h('td', { title: e.client }, e.client_name || e.client),
      h('td', {}, h('button', { class: 'qname', onclick: (ev) => openRulePop(e.name, ev, e.group) }, e.name)),
      h('td', { class: 'hide-sm' }, e.group), h('td', { class: 'rule hide-sm' }, reasonToggle(e.reason))));
  }
}

// ------------------------------------------------------------------- lists

function ago(secs) {
  if (!secs) return 'never';
  const d = Date.now() / 1000 - secs;
  if (d < 90) return 'just now';
  if (d < 5400) return Math.round(d / 60) + ' min ago';
  if (d < 129600) return Math.round(d / 3600) + ' h ago';
  return Math.round(d / 86400) + ' days ago';
}

async function loadLists() {
  const lists = await api('GET', '/api/v1/lists');
  const box = clear($('#lists-cards'));
  for (const l of lists) {
    const url = /^https?:/.test(l.source);
    box.append(h('div', { class: 'card', 'data-list': l.name },
      h('div', { class: 'row' }, h('span', { class: 'title' }, l.name),
        h('span', { class: 'badge ' + (l.kind === 'allow' ? 'allowlisted' : 'blocked') }, l.kind)),
      h('div', { class: 'src' }, l.source),
      h('div', { class: 'kv' }, h('span', {}, h('b', {}, fmt(l.entries)), ' entries'), h('span', {}, h('b', {}, fmt(l.invalid)), ' invalid'),
        h('span', { class: 'muted' }, l.enabled ? (l.missing ? 'missing' : 'loaded') : 'disabled')),
      url ? h('div', { class: 'muted small' }, 'Updated ' + ago(l.updated_at)) : null,
      l.last_error ? h('div', { class: 'err' }, l.last_error) : null,
      l.invalid_samples.length ? h('div', { class: 'muted small' }, 'e.g. line ' + l.invalid_samples[0][0] + ': ' + l.invalid_samples[0][1]) : null,
      h('div', { class: 'muted small' }, 'groups: ' + l.groups.join(', ')),
      h('div', { class: 'row' }, h('span'), h('button', { class: 'ghost', onclick: () => removeList(l.name) }, 'Remove'))));
  }
  if (!lists.length) box.append(h('div', { class: 'empty-note' }, 'No lists yet.'));
}

async function removeList(name) {
  if (!confirm('Remove list ' + name + '?')) return;
  try { await api('DELETE', '/api/v1/lists/' + encodeURIComponent(name)); toast('Removed ' + name); loadLists(); } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ groups

function chipList(g, kind) {
  const box = h('div', { class: 'chips' });
  for (const entry of g[kind]) {
    box.append(h('span', { class: 'chip ' + kind }, entry, h('button', { title: 'Remove', onclick: async () => {
      try { await api('DELETE', '/api/v1/groups/' + encodeURIComponent(g.name) + '/rules', { action: kind, entry }); loadGroups(); } catch (e) { toast(e.message, true); }
    } }, '✕')));
  }
  if (!g[kind].length) box.append(h('span', { class: 'muted small' }, 'none'));
  const input = h('input', { placeholder: kind === 'allow' ? 'github.com' : 'tracker.example' });
  const add = h('form', { class: 'inline-add', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    try { await api('POST', '/api/v1/groups/' + encodeURIComponent(g.name) + '/rules', { action: kind, entry: input.value.trim() }); loadGroups(); } catch (e) { toast(e.message, true); }
  } }, input, h('button', { class: 'ghost', type: 'submit' }, '+'));
  return [h('div', { class: 'sub' }, kind), box, add];
}

// The lists applying to a group; those it gets without being named (the DoH
// resolver list on allowlist-only groups) say so.
function groupLists(g) {
  const implicit = g.implicit_lists || [];
  const items = g.lists.map((l, i) => [i ? ', ' : '', implicit.includes(l)
    ? h('span', { class: 'implicit-list', title: 'Applies to every allowlist-only group (default-deny, learn or enforce) without being named: an agent using its own DNS-over-HTTPS/TLS resolver would escape every rule.' }, l + ' (allowlist-only groups)')
    : l]);
  return h('div', { class: 'muted small group-lists' }, 'Lists: ', ...(items.length ? items : ['none']));
}

async function loadGroups() {
  const groups = await api('GET', '/api/v1/groups');
  groupsCache = groups;
  const box = clear($('#groups-cards'));
  for (const g of groups) {
    const clients = h('input', { value: g.clients.join(', '), placeholder: g.name === 'default' ? 'everyone else' : '10.0.0.0/24' });
    const mode = h('select', {}, ...['null', 'nxdomain', 'nodata', 'refused', 'custom'].map((m) => h('option', { selected: m === g.block_mode }, m)));
    const dd = h('input', { type: 'checkbox', checked: g.default_deny });
    const save = async () => {
      const body = { ...g, clients: clients.value.split(/[\s,]+/).filter(Boolean), block_mode: mode.value, default_deny: dd.checked };
      delete body.implicit; delete body.lists; delete body.implicit_lists; delete body.name;
      try { await api('PUT', '/api/v1/groups/' + encodeURIComponent(g.name), body); toast('Saved ' + g.name); loadGroups(); } catch (e) { toast(e.message, true); }
    };
    box.append(h('div', { class: 'card', 'data-group': g.name },
      h('div', { class: 'row' }, h('span', { class: 'title' }, g.name), g.default_deny ? h('span', { class: 'badge blocked' }, 'default-deny') : null),
      h('label', {}, 'Clients', clients),
      groupLists(g),
      ...chipList(g, 'allow'), ...chipList(g, 'deny'),
      h('div', { class: 'row' }, h('label', {}, 'Block mode', mode), h('label', { class: 'check' }, dd, 'default-deny')),
      h('div', { class: 'row' },
        g.name === 'default' ? h('span') : h('button', { class: 'ghost', onclick: async () => {
          if (!confirm('Delete group ' + g.name + '?')) return;
          try { await api('DELETE', '/api/v1/groups/' + encodeURIComponent(g.name)); loadGroups(); } catch (e) { toast(e.message, true); }
        } }, 'Delete'),
        h('button', { class: 'primary', onclick: save }, 'Save'))));
  }
}

// ------------------------------------------------------------------- check

async function runCheck(name) {
  const r = await api('GET', '/api/v1/check?' + qs({ name, client: $('#check-client').value.trim(), type: $('#check-type').value, resolve: $('#check-resolve').checked }));
  const box = clear($('#check-result'));
  box.hidden = false;
  const byStep = { refused: 'Refused (client not allowed)', canary: 'NXDOMAIN (bypass canary)', tunnel: 'Refused (tunnel)', local: 'Answered locally', 'cname-blocked': 'Blocked through its CNAME target', rebinding: 'Blocked (rebinding)', 'answer-blocked': 'Blocked by an answer rule', failed: 'SERVFAIL' };
  const label = byStep[r.decision] || { pass: 'Resolves (no rule)', allowed: 'Allowed', blocked: 'Blocked', 'not-allowlisted': 'Blocked (not on the allowlist)' }[r.action];
  const cls = /blocked|refused|tunnel|rebinding|canary|failed/.test(r.decision) ? 'blocked' : r.action;
  box.append(...[h('div', { class: 'big ' + cls, id: 'check-verdict' }, label),
    h('div', {}, 'Group ', h('b', {}, r.group || '-'), ' · client ', r.client),
    r.answer ? h('div', {}, 'Answer ', h('code', {}, r.answer)) : null,
    r.source ? h('div', {}, 'Rule from ', h('b', {}, r.source), r.line ? ' line ' + r.line : '', r.rule ? ': ' : '', r.rule ? h('code', {}, r.rule) : null) : null,
    r.note ? h('div', { class: 'muted' }, r.note) : null,
    h('div', { class: 'muted small' }, h('code', {}, r.text))].filter(Boolean));
}

// ---------------------------------------------------------------- settings

async function loadSettings() {
  const s = await api('GET', '/api/v1/settings');
  $('#set-upstreams').value = (s.upstreams || []).join('\n');
  $('#set-strategy').value = s.strategy;
  $('#set-block-mode').value = s.block_mode;
  $('#set-retention').value = s.retention_days;
  $('#set-privacy').value = s.privacy;
  $('#set-info').textContent = `Mode ${s.mode} · DNS on ${(s.listen || []).join(', ')} · config ${s.config_path || '(embedded default: read only)'}`;
  await loadEncrypted();
}

// The served certificate and the encrypted endpoints; the .mobileconfig link.
async function loadEncrypted() {
  const e = await api('GET', '/api/v1/encrypted');
  $('#enc-none').hidden = !!e;
  $('#enc-info').hidden = !e;
  if (!e) return;
  $('#enc-sha256').textContent = e.sha256;
  $('#enc-pin').textContent = e.spki_pin;
  for (const [id, list] of [['#enc-dot', e.dot], ['#enc-doh', e.doh], ['#enc-doq', e.doq]]) {
    const dd = clear($(id));
    if (!list.length) dd.append(h('span', { class: 'muted' }, 'off'));
    list.forEach((u, i) => dd.append(i ? ' ' : '', h('code', {}, u)));
  }
  profileLink();
}

function profileLink() {
  const q = new URLSearchParams({ proto: $('#enc-proto').value });
  const client = $('#enc-client').value.trim().toLowerCase();
  const name = $('#enc-name').value.trim();
  if (client) q.set('client', client);
  if (name && $('#enc-proto').value === 'tls') q.set('server_name', name);
  $('#enc-mobileconfig').href = '/api/v1/mobileconfig?' + q;
}

// ------------------------------------------------------------------ router

const pages = { overview: loadOverview, log: () => loadLog(false), alerts: loadAlerts, lists: loadLists, groups: loadGroups, check: async () => {}, settings: loadSettings };

async function route() {
  const page = (location.hash.replace(/^#\//, '') || 'overview').split('?')[0];
  const name = pages[page] ? page : 'overview';
  document.querySelectorAll('.page').forEach((p) => { p.hidden = p.id !== 'page-' + name; });
  document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('on', a.dataset.page === name));
  $('#rule-pop').hidden = true;
  if (name !== 'log') { setLive(false); $('#log-live').checked = false; }
  try { await pages[name](); } catch (e) { if (e.message !== 'logged out') toast(e.message, true); }
  document.body.dataset.page = name;
  document.body.dataset.ready = String(Date.now());
}

function seg(el, cb) {
  el.addEventListener('click', (ev) => {
    const b = ev.target.closest('button'); if (!b) return;
    el.querySelectorAll('button').forEach((x) => x.classList.toggle('on', x === b));
    cb(b.dataset.since);
  });
}

// A secondary of a pair: what comes from the primary cannot be edited here.
async function loadCluster() {
  const c = await api('GET', '/api/v1/cluster');
  if (c.role !== 'secondary') return;
  const b = $('#cluster-banner');
  b.textContent = `Secondary of ${c.primary} (${c.primary_up ? 'primary up' : 'primary not reachable: serving the last good state'}). ` +
    `Replicated from the primary, change them there: ${c.replicated.join(', ')}.` + (c.last_error ? ` Last error: ${c.last_error}` : '');
  b.hidden = false;
}

async function init() {
  const s = await api('GET', '/api/v1/session');
  csrf = s.csrf;
  loadCluster().catch((e) => toast(e.message, true));
  $('#theme-toggle').addEventListener('click', () => {
    const t = currentDark() ? 'light' : 'dark';
    localStorage.setItem('dnsguard-theme', t); applyTheme(t);
    if (!$('#page-overview').hidden) loadOverview();
  });
  $('#logout').addEventListener('click', async () => { await api('POST', '/api/v1/logout'); location.href = '/login'; });
  seg($('#period'), (p) => { period = p; loadOverview().catch((e) => toast(e.message, true)); });
  seg($('#alerts-period'), (p) => { alertsPeriod = p; loadAlerts().catch((e) => toast(e.message, true)); });
  $('#log-filters').addEventListener('submit', (ev) => { ev.preventDefault(); loadLog(false).catch((e) => toast(e.message, true)); });
  $('#log-older').addEventListener('click', () => loadLog(true).catch((e) => toast(e.message, true)));
  $('#log-live').addEventListener('change', (ev) => setLive(ev.target.checked));
  $('#rule-allow').addEventListener('click', () => ruleAction('allow'));
  $('#rule-deny').addEventListener('click', () => ruleAction('deny'));
  $('#rule-close').addEventListener('click', () => { $('#rule-pop').hidden = true; });
  $('#rule-check').addEventListener('click', () => { $('#check-name').value = popName; location.hash = '#/check'; runCheck(popName).catch((e) => toast(e.message, true)); });
  $('#lists-update').addEventListener('click', async (ev) => {
    ev.target.disabled = true;
    try { const r = await api('POST', '/api/v1/lists/update'); toast('Updated: ' + Object.entries(r).map(([k, v]) => k + ' ' + v).join(', ') || 'no URL lists'); loadLists(); } catch (e) { toast(e.message, true); }
    ev.target.disabled = false;
  });
  $('#list-add').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const groups = $('#list-groups').value.split(/[\s,]+/).filter(Boolean);
    try {
      const r = await api('POST', '/api/v1/lists', { name: $('#list-name').value.trim(), source: $('#list-source').value.trim(), kind: $('#list-kind').value, groups });
      toast(r.warning ? 'Added, but ' + r.warning : 'Added ' + $('#list-name').value, !!r.warning);
      ev.target.reset(); loadLists();
    } catch (e) { toast(e.message, true); }
  });
  $('#group-add').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = $('#group-name').value.trim();
    try {
      await api('PUT', '/api/v1/groups/' + encodeURIComponent(name), { clients: $('#group-clients').value.split(/[\s,]+/).filter(Boolean), default_deny: $('#group-deny').checked });
      toast('Added group ' + name); ev.target.reset(); loadGroups();
    } catch (e) { toast(e.message, true); }
  });
  $('#check-form').addEventListener('submit', (ev) => { ev.preventDefault(); runCheck($('#check-name').value.trim()).catch((e) => toast(e.message, true)); });
  for (const id of ['#enc-client', '#enc-proto', '#enc-name']) $(id).addEventListener('input', profileLink);
  $('#enc-profile').addEventListener('submit', (ev) => ev.preventDefault());
  $('#settings-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('PUT', '/api/v1/settings', {
        upstreams: $('#set-upstreams').value.split('\n').map((x) => x.trim()).filter(Boolean),
        strategy: $('#set-strategy').value, block_mode: $('#set-block-mode').value,
        retention_days: Number($('#set-retention').value), privacy: $('#set-privacy').value,
      });
      toast(r.restart_required.length ? 'Saved; applies after restart: ' + r.restart_required.join(', ') : 'Saved and applied');
    } catch (e) { toast(e.message, true); }
  });
  new ResizeObserver(() => { if (lastSeries && !$('#page-overview').hidden) drawChart(lastSeries); }).observe($('#chart-wrap'));
  setInterval(() => { if (!$('#page-overview').hidden && !document.hidden) loadOverview().catch(() => {}); }, 30000);
  addEventListener('hashchange', route);
  route();
}

init().catch((e) => toast(e.message, true));
