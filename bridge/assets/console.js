// The operator console: what the bus is doing now (GET /api/sse/status every 2 s, its
// `activity` part included) and a live event inspector (the browser client on every channel,
// and with a system token every tenant). Admin tokens only; the token stays in this tab's
// sessionStorage and never goes in a URL the server sees.
import { Switchyard } from '/client.js';

const $ = (id) => document.getElementById(id);
const KEY = 'switchyard:console:token';
const POLL_MS = 2000;
const MAX_EVENTS = 200;

let token = null;
let poller = null;
let client = null;
let paused = false;
let held = 0;
let previous = null; // the last status, for rates
const events = []; // newest first: { raw, type, tenant, id }
let selected = null;

/** Text in a new element; never HTML (event data and refusal reasons are not ours). */
function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function claims(t) {
  try {
    return JSON.parse(atob(t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return {};
  }
}

const time = (v) => (v ? new Date(v).toLocaleTimeString() : '—');
const when = (v) => (v ? new Date(v).toLocaleString() : '—');
const secs = (v) => (v === null || v === undefined ? '—' : v === '+Inf' ? '> 10 s' : v < 1 ? `≤ ${Math.round(v * 1000)} ms` : `≤ ${v} s`);
const bytes = (n) => (n === null || n === undefined ? '—' : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

function setState(state, text) {
  $('connection').dataset.state = state;
  $('connection-text').textContent = text;
}

function signedOut(message = '') {
  token = null;
  sessionStorage.removeItem(KEY);
  clearInterval(poller);
  client?.stop();
  client = null;
  $('console').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  setState('disconnected', 'signed out');
  $('token').focus();
}

async function signIn(t) {
  const r = await fetch('/api/sse/status', { headers: { authorization: `Bearer ${t}` } });
  if (r.status === 401) return signedOut('That token is not valid (or has expired).');
  if (r.status === 403) return signedOut('That token is not an admin token.');
  if (!r.ok) return signedOut(`The server answered ${r.status}.`);
  token = t;
  sessionStorage.setItem(KEY, t);
  $('signin').hidden = true;
  $('console').hidden = false;
  $('signout').hidden = false;
  render(await r.json());
  poller = setInterval(poll, POLL_MS);
  startInspector();
}

async function poll() {
  try {
    const r = await fetch('/api/sse/status', { headers: { authorization: `Bearer ${token}` } });
    if (r.status === 401 || r.status === 403) return signedOut('The token is no longer accepted; sign in again.');
    if (r.ok) render(await r.json());
  } catch {
    // The server is away; the inspector's state says so, and the next poll tries again.
  }
}

function tile(list, label, value) {
  const d = el('div');
  d.append(el('dt', label), el('dd', value));
  list.append(d);
}

function render(s) {
  const now = Date.now();
  const published = s.events?.published ?? 0;
  const rate = previous ? ((published - previous.published) * 1000) / Math.max(1, now - previous.at) : null;
  previous = { published, at: now };
  const a = s.activity ?? {};
  const d = a.delivery;
  const list = $('overview');
  list.replaceChildren();
  tile(list, 'Events published', published.toLocaleString());
  tile(list, 'Events per second', rate === null ? '…' : rate.toFixed(1));
  tile(list, 'SSE connections', s.connections?.current ?? 0);
  if (s.subscribers !== undefined) tile(list, 'Subscriptions', s.subscribers);
  if (d) {
    tile(list, 'SSE lag p50 / p99', `${secs(d.lag.sse.p50)} / ${secs(d.lag.sse.p99)}`);
    tile(list, 'gRPC lag p50 / p99', `${secs(d.lag.grpc.p50)} / ${secs(d.lag.grpc.p99)}`);
    tile(list, 'Log size', bytes(d.log.sizeBytes));
    tile(list, 'Commit p99', d.log.commit ? secs(d.log.commit.p99) : '—');
    tile(list, 'Tickets issued / refused', `${d.tickets.issued} / ${d.tickets.refused}`);
  }
  if (s.events?.evicted !== undefined) tile(list, 'Slow clients evicted', s.events.evicted);
  tile(list, 'Head id', s.log?.headId ?? '—');
  tile(list, 'Up', `${Math.floor((s.uptimeSecs ?? 0) / 60)} min`);
  renderConnections(s, d);
  renderConnectors(a.connectors ?? []);
  renderWebhooks(a.webhooks ?? []);
  renderOutbound(a.outbound ?? []);
}

function rows(id, items, empty, row) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (!items.length) {
    const tr = el('tr', undefined, { class: 'empty' });
    tr.append(el('td', empty, { colspan: String($(id).tHead.rows[0].cells.length) }));
    body.append(tr);
  }
  for (const item of items) body.append(row(item));
}

function tr(...cells) {
  const r = el('tr');
  for (const c of cells) r.append(c instanceof Node ? c : el('td', c));
  return r;
}

function renderConnections(s, d) {
  rows('subscriptions', d?.subscriptions ?? [], 'No subscription is open.', (x) =>
    tr(x.transport, x.channel, el('td', x.open, { class: 'num' })));
  const tenants = Object.entries(s.tenants ?? {});
  rows('tenants', tenants, 'No tenant has published yet.', ([name, t]) =>
    tr(name, el('td', t.connections, { class: 'num' }), el('td', t.published, { class: 'num' })));
  const names = $('tenant-names');
  names.replaceChildren(...tenants.map(([name]) => el('option', undefined, { value: name })));
  const channels = new Set(tenants.flatMap(([, t]) => Object.keys(t.byChannel ?? {})));
  const select = $('f-channel');
  const have = new Set([...select.options].map((o) => o.value));
  for (const c of [...channels].sort()) if (!have.has(c)) select.append(el('option', c, { value: c }));
}

function renderConnectors(list) {
  rows('connectors', list, 'No connector has reported a sync yet.', (c) => {
    const status = el('td', c.ok ? 'ok' : c.failingSince ? `failing since ${time(c.failingSince)}` : 'failed', { class: c.ok ? 'ok' : 'bad' });
    const error = c.ok ? '—' : `${c.code ? `${c.code}: ` : ''}${c.error}`;
    const took = c.durationSecs === null || c.durationSecs === undefined ? '—' : `${c.durationSecs.toFixed(1)} s`;
    return tr(c.tenant, c.source, status, when(c.lastSuccess), error, when(c.nextRun), el('td', took, { class: 'num' }));
  });
}

function renderWebhooks(list) {
  rows('webhooks', list, 'No webhook delivery yet.', (w) => {
    const good = w.outcome === 'stored' || w.outcome === 'answered';
    const outcome = el('td', w.outcome, { class: good ? 'ok' : 'bad' });
    const what = w.types.length ? `${w.types.join(', ')}${w.ids.length ? ` (id ${w.ids.join(', ')})` : ''}` : '—';
    return tr(time(w.atMs), w.source, outcome, w.tenant ?? '—', what, w.reason ?? '—');
  });
}

function renderOutbound(list) {
  rows('outbound', list, 'No outbound endpoint.', ({ tenant, endpoint: e }) => {
    const state = el('td', e.state, { class: e.state === 'healthy' ? 'ok' : 'bad' });
    const target = e.url ? new URL(e.url).host : (e.to ?? []).join(', ');
    const num = (v) => el('td', v, { class: 'num' });
    return tr(tenant, `${e.id} → ${target}`, e.kind, state, num(e.lag), num(e.owed), num(e.deadLettered), num(e.delivered), num(e.failedAttempts), e.lastError || '—');
  });
}

// ---- the inspector

function startInspector() {
  client?.stop();
  const channel = $('f-channel').value;
  const system = claims(token).tenant === '*';
  client = new Switchyard({
    channels: channel ? [channel] : [],
    token: () => token,
    tenant: system ? '*' : undefined,
    start: 'live',
    storage: null,
    fallbackAfter: Infinity,
  });
  client.onState((state) => setState(state, state === 'connected' ? 'live' : state));
  client.on('*', (event, raw) => received(event, raw));
  client.start();
}

function received(event, raw) {
  events.unshift({ raw: raw.data, type: event.type, tenant: event.tenant ?? '', id: event.id ?? raw.id });
  events.length = Math.min(events.length, MAX_EVENTS);
  if (paused) {
    if (matches(events[0])) held++;
    $('held').textContent = held ? `${held} new while paused` : '';
    return;
  }
  renderEvents();
}

function matches(e) {
  const tenant = $('f-tenant').value.trim();
  const type = $('f-type').value.trim();
  return (!tenant || e.tenant === tenant) && (!type || e.type.includes(type));
}

function renderEvents() {
  const list = $('events');
  const shown = events.filter(matches);
  list.replaceChildren();
  if (!shown.length) list.append(el('li', 'No event matches yet.', { class: 'empty' }));
  for (const e of shown) {
    const b = el('button', undefined, { type: 'button', 'data-id': e.id });
    if (selected === e) b.setAttribute('aria-current', 'true');
    b.append(el('strong', e.type), el('br'), el('span', `#${e.id} · ${e.tenant} · ${time(e.raw.publishedAt)}`, { class: 'meta' }));
    b.addEventListener('click', () => show(e));
    const li = el('li');
    li.append(b);
    list.append(li);
  }
}

function show(e) {
  selected = e;
  const trace = e.raw.trace?.traceparent?.split('-');
  const meta = $('detail-meta');
  meta.replaceChildren();
  const add = (k, v) => meta.append(el('dt', k), el('dd', v));
  add('Id', e.id);
  add('Type', e.type);
  add('Tenant', e.tenant);
  add('Source', e.raw.source || '—');
  add('Key', e.raw.key || '—');
  add('Published', when(e.raw.publishedAt));
  add('Trace id', trace ? trace[1] : 'none (not sampled)');
  $('detail-empty').hidden = true;
  const pre = $('detail-json');
  pre.hidden = false;
  pre.textContent = JSON.stringify(e.raw, null, 2);
  for (const b of $('events').querySelectorAll('button')) {
    if (b.dataset.id === String(e.id)) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
}

function setPaused(p) {
  paused = p;
  $('pause').setAttribute('aria-pressed', String(p));
  $('pause').textContent = p ? 'Resume' : 'Pause';
  if (!p) {
    held = 0;
    $('held').textContent = '';
    renderEvents();
  }
}

$('signin').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('token').value.trim());
});
$('signout').addEventListener('click', () => signedOut());
$('pause').addEventListener('click', () => setPaused(!paused));
$('f-tenant').addEventListener('input', renderEvents);
$('f-type').addEventListener('input', renderEvents);
$('f-channel').addEventListener('change', () => {
  events.length = 0;
  renderEvents();
  startInspector();
});
$('filters').addEventListener('submit', (e) => e.preventDefault());

// A token in the fragment (never sent to the server) is taken and cleared from the address bar.
const fromHash = location.hash.match(/token=([^&]+)/);
if (fromHash) history.replaceState(null, '', location.pathname);
const initial = fromHash ? decodeURIComponent(fromHash[1]) : sessionStorage.getItem(KEY);
if (initial) signIn(initial);
else signedOut();
