// The live operations dashboard served at `/`. Every figure on it comes from an event; a tile
// with no event yet says which source is missing and how to connect it, or, once the source has
// reported, what it said. Live orders count `shopify:order-created` from webhooks and from the
// connector alike, and say how many came each way.
//
// Opening or reloading the page starts from the bus's state (the latest snapshot of every
// key), so every figure shows at once; figures counted from facts (live orders) are kept with
// the id they are counted up to, and a reload adds only the facts after it. A source whose
// syncs fail keeps its last good figures, marked as such with the reason. Money is added as
// decimal strings, never as floating point.
import { Switchyard, addDecimal } from '/client.js';

const $ = (id) => document.getElementById(id);
const HOW = {
  shopify: 'Connect Shopify: set webhooks.shopify in the config (docs/webhooks.md) or run the Shopify connector (docs/connectors.md).',
  amazon: 'Connect Amazon: set webhooks.amazon for SNS (docs/webhooks.md) or run the Amazon connector (docs/connectors.md).',
  xero: 'Connect Xero: run the Xero connector with OAuth2 credentials (docs/connectors.md).',
  unleashed: 'Connect Unleashed: run the Unleashed connector with an API id and key (docs/connectors.md).',
};
const SOURCES = ['shopify', 'amazon', 'xero', 'unleashed'];

/** The event's payload (the client hands it over as `data`). */
const payload = (event) => event?.data ?? {};

// ---- money: decimal strings (added exactly by addDecimal), shown with grouping ----
function grouped(amount) {
  const s = String(amount ?? '');
  const neg = s.startsWith('-');
  const [int, frac = ''] = s.replace(/^-/, '').split('.');
  const g = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${neg ? '-' : ''}${g}.${frac.padEnd(2, '0')}`;
}
const money = (m) => (m && m.amount !== undefined ? `${grouped(m.amount)} ${m.currency ?? ''}`.trim() : '—');
/** Money per currency, never summed across currencies. */
const monies = (list) => (list?.length ? list.map(money).join(' · ') : 'no sales');
const num = (v) => Number(v ?? 0).toLocaleString();
const clock = (t) => (t ? new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '—');
const unavailable = (p, figure) => (p.unavailable ?? []).find((u) => u.figure.split(', ').includes(figure));

// ---- tiles ----
const TILES = [
  { id: 'shopify-orders', title: 'Shopify orders (live)', source: 'shopify' },
  { id: 'shopify-today', title: 'Shopify today', source: 'shopify' },
  { id: 'amazon-orders', title: 'Amazon today', source: 'amazon' },
  { id: 'amazon-inventory', title: 'FBA inventory', source: 'amazon' },
  { id: 'working-capital', title: 'Working capital (Xero)', source: 'xero' },
  { id: 'xero-profit', title: 'Revenue, month to date (Xero)', source: 'xero' },
  { id: 'stock', title: 'Stock (Unleashed)', source: 'unleashed' },
  { id: 'production', title: 'Production today (Unleashed)', source: 'unleashed' },
];
const series = new Map();

for (const t of TILES) {
  const el = document.createElement('article');
  el.className = 'tile';
  el.id = `tile-${t.id}`;
  el.dataset.source = t.source;
  el.setAttribute('aria-labelledby', `tile-${t.id}-h`);
  el.innerHTML = `<h3 id="tile-${t.id}-h"></h3><p class="empty"></p>`;
  el.querySelector('h3').textContent = t.title;
  el.querySelector('.empty').textContent = `No ${t.source} data yet. ${HOW[t.source]}`;
  $('tiles').append(el);
}

function setTile(id, value, detail, point) {
  const el = $(`tile-${id}`);
  const h = el.querySelector('h3').outerHTML;
  const s = series.get(id) ?? [];
  if (point !== undefined && Number.isFinite(point)) s.push(point);
  while (s.length > 30) s.shift();
  series.set(id, s);
  el.innerHTML = `${h}<p class="value"></p><p class="detail"></p><p class="stale-note" hidden></p>${sparkline(s)}`;
  el.querySelector('.value').textContent = value;
  el.querySelector('.detail').textContent = detail;
  el.classList.add('updated');
  setTimeout(() => el.classList.remove('updated'), 1200);
  markStale(el.dataset.source);
}

function sparkline(values) {
  if (values.length < 2) return '';
  const min = Math.min(...values);
  const span = Math.max(...values) - min || 1;
  const pts = values.map((v, i) => `${((i / (values.length - 1)) * 100).toFixed(1)},${(30 - ((v - min) / span) * 28).toFixed(1)}`);
  return `<svg viewBox="0 0 100 32" preserveAspectRatio="none" role="img" aria-label="recent values"><polyline points="${pts.join(' ')}"/></svg>`;
}

// Live order counters, per currency: from order events only, never guessed. Kept in this tab's
// sessionStorage with the id of the last order counted, so a reload neither loses nor recounts.
const LIVE_KEY = 'switchyard:dashboard:live';
const live = restoreLive() ?? { shopify: { count: 0, totals: {} }, amazon: { count: 0 }, upTo: 0 };
live.shopify.via ??= {};
function restoreLive() {
  try {
    return JSON.parse(sessionStorage.getItem(LIVE_KEY) ?? 'null');
  } catch {
    return null;
  }
}
/** Whether an order fact is new to the counters (and marks it counted). */
function countOnce(raw) {
  const id = Number.parseInt(raw?.id ?? '', 10);
  if (Number.isFinite(id) && id <= live.upTo) return false;
  if (Number.isFinite(id)) live.upTo = id;
  return true;
}
function saveLive() {
  try {
    sessionStorage.setItem(LIVE_KEY, JSON.stringify(live));
  } catch {
    // Storage disabled: the counters start again on reload.
  }
}
/** Where order events came from, as the tile says it: `webhook:shopify` → "by webhook". */
const VIA = { webhook: 'by webhook', connector: 'by the connector' };
function showLive() {
  const shop = live.shopify;
  if (shop.count === 0 && !sources.get('shopify')) return;
  const totals = Object.entries(shop.totals).map(([currency, amount]) => ({ amount, currency }));
  const rank = (from) => (from in VIA ? Object.keys(VIA).indexOf(from) : 9);
  const via = Object.entries(shop.via).sort(([a], [b]) => rank(a) - rank(b)).map(([from, n]) => `${num(n)} ${VIA[from] ?? `from ${from}`}`);
  const detail = shop.count === 0 ? ['no new order since this tab opened', 'webhooks and the connector both count'] : [monies(totals), ...via, 'since this tab opened'];
  setTile('shopify-orders', num(shop.count), detail.join(' · '));
}

// ---- sources: their sync health, and their last good figures when failing ----
const sources = new Map();
function touchSource(name, status) {
  sources.set(name, status);
  renderSources();
  markStale(name);
  if (name === 'shopify') showLive();
  for (const el of document.querySelectorAll(`.tile[data-source="${name}"] .empty`)) {
    // Never "no data, connect it" for a source that has reported: say what it did say.
    el.textContent = status.text ? `${name}: ${status.text}; this figure comes with its next sync.` : status.ok ? `${name} synced; this figure comes with its next sync.` : `${name}: ${sourceText(status).text}`;
  }
}
function sourceText(s) {
  if (s.ok) return { text: `synced ${clock(s.lastSuccess ?? s.at)}`, error: false };
  const since = s.lastSuccess ? `last good figures at ${clock(s.lastSuccess)}` : 'no good figures yet';
  return { text: `${since}, sync failing: ${s.error || 'unknown error'}`, error: true };
}
function renderSources() {
  $('sources').replaceChildren(
    ...SOURCES.map((n) => {
      const li = document.createElement('li');
      const s = sources.get(n);
      li.dataset.source = n;
      if (!s) {
        li.innerHTML = `<strong></strong> <span class="empty">not connected</span>`;
      } else {
        const { text, error } = s.text ? { text: s.text, error: false } : sourceText(s);
        li.innerHTML = `<strong></strong> <span></span>`;
        li.querySelector('span').textContent = text;
        li.querySelector('span').className = error ? 'error' : '';
        li.dataset.state = error ? 'failing' : 'ok';
      }
      li.querySelector('strong').textContent = n[0].toUpperCase() + n.slice(1);
      return li;
    }),
  );
}
/** Tiles of a failing source keep their figures, marked with when they were last good and why. */
function markStale(name) {
  const s = sources.get(name);
  // A sync status says `ok` only when true (proto3 JSON leaves false out); a text is just news.
  const failing = Boolean(s) && s.text === undefined && !s.ok;
  for (const el of document.querySelectorAll(`.tile[data-source="${name}"]`)) {
    el.classList.toggle('stale', Boolean(failing) && el.querySelector('.value') !== null);
    const note = el.querySelector('.stale-note');
    if (!note) continue;
    note.hidden = !failing;
    if (failing) note.textContent = sourceText(s).text;
  }
}
renderSources();

// ---- alerts, toasts (calm: live events only, a few at a time), jobs, stores, production ----
let settled = false;
const MAX_TOASTS = 3;
let hiddenToasts = 0;

function toast(level, text, event, link) {
  addAlert(level, text, event, link);
  // Only what happens while the page is open: never the state or the history it loaded.
  if (!settled) return;
  const at = Date.parse(event.publishedAt ?? '');
  if (Number.isFinite(at) && Date.now() - at > 120000) return;
  // Critical alerts always show (they stay until dismissed); the rest queue behind "+N more".
  if (level !== 'critical' && $('toasts').querySelectorAll('.toast:not(.critical)').length >= MAX_TOASTS) {
    hiddenToasts++;
    renderMore();
    return;
  }
  const el = document.createElement('div');
  el.className = `toast ${level}`;
  el.setAttribute('role', level === 'critical' ? 'alert' : 'status');
  el.innerHTML = '<p></p><button type="button">Dismiss</button>';
  el.querySelector('p').textContent = text;
  el.querySelector('button').setAttribute('aria-label', `Dismiss: ${text}`);
  el.querySelector('button').addEventListener('click', () => {
    el.remove();
    renderMore();
  });
  $('toasts').prepend(el);
  // Critical alerts stay until dismissed; low-stock and warnings stay long enough to read.
  if (level !== 'critical') setTimeout(() => { el.remove(); renderMore(); }, level === 'warning' ? 12000 : 8000);
}

function renderMore() {
  let more = $('toast-more');
  const shown = $('toasts').querySelectorAll('.toast:not(.critical)').length;
  if (shown < MAX_TOASTS) hiddenToasts = 0;
  if (hiddenToasts === 0) {
    more?.remove();
    return;
  }
  if (!more) {
    more = document.createElement('button');
    more.id = 'toast-more';
    more.type = 'button';
    more.className = 'toast-more';
    more.addEventListener('click', () => {
      hiddenToasts = 0;
      more.remove();
      $('alerts-h').scrollIntoView();
      $('alerts').focus();
    });
    $('toasts').append(more);
  }
  more.textContent = `+${hiddenToasts} more in Alerts`;
}

const listed = new Set();
function addAlert(level, text, event, link) {
  // The same alert can arrive twice (the last hour read at open, and a reload's replay).
  if (event.id) {
    if (listed.has(event.id)) return;
    listed.add(event.id);
  }
  const list = $('alerts');
  list.querySelector('.empty')?.remove();
  const li = document.createElement('li');
  li.className = level;
  li.innerHTML = '<span></span> <time></time>';
  li.querySelector('span').textContent = text;
  if (link && /^https?:\/\//.test(link)) {
    const a = document.createElement('a');
    a.href = link;
    a.rel = 'noopener noreferrer';
    a.target = '_blank';
    a.textContent = 'Open';
    li.append(' ', a);
  }
  const at = new Date(event.publishedAt ?? Date.now());
  li.querySelector('time').textContent = at.toLocaleTimeString();
  li.querySelector('time').dateTime = at.toISOString();
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

// One row per job (its key), showing its latest state. A finished job stays a short while, then
// moves to a collapsed list of the most recent few: the panel shows what is running.
const jobs = new Map();
const FINISHED_STAYS_MS = 60 * 1000;
const RECENT_JOBS = 10;
function job(id, percent, label, status = 'running', event = {}) {
  if (!id) return;
  $('jobs').querySelector('.empty')?.remove();
  let li = jobs.get(id);
  if (!li) {
    $('jobs-recent').querySelector(`li[data-job="${CSS.escape(id)}"]`)?.remove();
    li = document.createElement('li');
    li.innerHTML = '<label><span></span><progress max="100"></progress></label>';
    li.dataset.job = id;
    jobs.set(id, li);
    $('jobs').append(li);
  }
  li.dataset.status = status;
  const suffix = status === 'running' ? `${percent}%` : status;
  li.querySelector('span').textContent = `${label} — ${suffix}`;
  li.querySelector('progress').value = percent;
  clearTimeout(li.leave);
  if (status !== 'running') {
    const at = Date.parse(event.publishedAt ?? '');
    const age = Number.isFinite(at) ? Date.now() - at : 0;
    const retire = () => retireJob(id, li);
    if (age >= FINISHED_STAYS_MS) retire();
    else li.leave = setTimeout(retire, FINISHED_STAYS_MS - age);
  }
  showRecent();
}
function retireJob(id, li) {
  jobs.delete(id);
  $('jobs-recent').prepend(li);
  while ($('jobs-recent').children.length > RECENT_JOBS) $('jobs-recent').lastChild.remove();
  if (jobs.size === 0) $('jobs').innerHTML = '<li class="empty">No job is running.</li>';
  showRecent();
}
function showRecent() {
  const n = $('jobs-recent').children.length;
  $('jobs-recent-box').hidden = n === 0;
  $('jobs-recent-count').textContent = String(n);
}

/** A keyed list (stores, assemblies): one row per key, newest first, at most `max`. */
function keyedRow(listId, key, text, order, state, max = 12) {
  const list = $(listId);
  list.querySelector('.empty')?.remove();
  let li = list.querySelector(`li[data-key="${CSS.escape(key)}"]`);
  if (!li) {
    li = document.createElement('li');
    li.dataset.key = key;
  }
  li.textContent = text;
  li.dataset.order = String(order);
  li.dataset.state = state ?? '';
  const rows = [...list.children].filter((r) => r !== li);
  rows.push(li);
  rows.sort((a, b) => Number(b.dataset.order) - Number(a.dataset.order));
  list.replaceChildren(...rows.slice(0, max));
}

// ---- wiring ----
function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('switchyard:token', decodeURIComponent(m[1]));
    // Keep the token out of the address bar, history and screenshots.
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem('switchyard:token');
}

const token = readToken();
if (!token) $('signin').hidden = false;

const params = new URLSearchParams(location.search);
const CHANNELS = ['dashboard', 'alerts', 'inventory', 'production', 'working-capital', 'workflow', 'forecast'];
const client = new Switchyard({
  channels: CHANNELS,
  token: token ?? undefined,
  start: 'state',
  heartbeatMs: Number(params.get('heartbeatMs') ?? 15000),
  // `?transport=polling` (or a browser without EventSource) polls /api/events.
  EventSource: params.get('transport') === 'polling' ? null : globalThis.EventSource,
});
window.switchyard = client;

client.onState((state) => {
  const el = $('connection');
  el.dataset.state = state;
  $('connection-text').textContent = client.transport === 'polling' && state === 'connected' ? 'connected (polling)' : state;
});
client.onGap(() => addAlert('warning', 'Some history was no longer available; the current figures were reloaded, but alerts from that time are missing.', {}));
client.onStateEnd(({ asOf }) => {
  if (!settled) recentAlerts();
  document.body.dataset.asOf = asOf;
  settled = true;
  showLive();
});

/** Alerts are facts, not state: the list starts with the last hour's, read once (no toasts). */
async function recentAlerts() {
  const since = new Date(Date.now() - 3600 * 1000).toISOString();
  const r = await fetch(`/api/events?channels=alerts&limit=50&since=${encodeURIComponent(since)}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  }).catch(() => null);
  if (!r?.ok) return;
  const LEVEL = { 'alert:critical': 'critical', 'alert:warning': 'warning' };
  for (const item of (await r.json()).events ?? []) {
    const p = Object.entries(item.event).find(([k]) => k.startsWith('alert'))?.[1];
    if (p) addAlert(LEVEL[item.type] ?? 'info', [p.title, p.message].filter(Boolean).join(': '), item.event, p.link);
  }
}

/** Order news shows a source as connected until its first sync status arrives. */
function orderNews(source, text) {
  if (!sources.get(source) || sources.get(source).text) touchSource(source, { text });
}

client.on('shopify:order-created', (e, raw) => {
  const o = payload(e);
  orderNews('shopify', `order ${o.name || o.orderId} received`);
  if (!countOnce(raw)) return;
  live.shopify.count++;
  const from = (e.source ?? '').split(':')[0] || 'unknown';
  live.shopify.via[from] = (live.shopify.via[from] ?? 0) + 1;
  if (o.total?.amount !== undefined) {
    const c = o.total.currency ?? '';
    live.shopify.totals[c] = addDecimal(live.shopify.totals[c] ?? '0', o.total.amount);
  }
  saveLive();
  showLive();
  toast('info', `New Shopify order ${o.name || o.orderId}: ${money(o.total)} (${o.store})`, e);
});
client.on('shopify:sync-completed', (e) => {
  const p = payload(e);
  const today = p.today ?? {};
  const day = p.last24h ?? {};
  const failed = p.failedStores?.length ? ` · ${p.failedStores.length} store(s) failing` : '';
  setTile('shopify-today', monies(today.revenue), `${num(today.orders)} orders today · ${num(day.orders)} in 24 h · net ${monies(today.netRevenue)} · ${p.successCount ?? 0}/${p.totalStores ?? 0} stores${failed}`, today.orders);
  for (const store of p.failedStores ?? []) keyedRow('stores', store, `${store}: sync failing (last good figures kept)`, 0, 'failing');
});
client.on('shopify:store-synced', (e) => {
  const p = payload(e);
  const today = p.today ?? {};
  const name = p.storeName || p.storeId;
  keyedRow('stores', p.storeId, `${name}: ${num(today.orders)} orders today · ${monies(today.revenue)} · ${num(p.last24h?.orders)} in 24 h`, Number(e.id ?? 0), 'ok');
});
for (const type of ['amazon:order-created', 'amazon:order-updated']) {
  client.on(type, (e) => {
    const o = payload(e);
    orderNews('amazon', `order ${o.orderId} ${type.endsWith('created') ? 'received' : 'updated'}`);
    if (type === 'amazon:order-created') toast('info', `New Amazon order ${o.orderId}: ${money(o.total)}`, e);
  });
}
client.on('amazon:sync-completed', (e) => {
  const p = payload(e);
  const today = p.today ?? {};
  setTile('amazon-orders', `${num(today.orders)} orders`, `${monies(today.revenue)} · ${num(p.unshippedOrders)} to ship · ${num(p.pendingOrders)} pending payment`, today.orders);
  const inbound = unavailable(p, 'inbound_shipments') ? 'inbound unavailable' : `${num(p.inboundShipments)} inbound`;
  const units = p.totalUnits === undefined ? 'units unavailable' : `${num(p.totalUnits)} units`;
  setTile('amazon-inventory', units, `${num(p.fulfillableUnits)} fulfillable · ${num(p.totalSkus)} SKUs · ${num(p.lowStockSkus)} low · ${inbound}`, Number(p.fulfillableUnits));
});
client.on('xero:sync-completed', (e) => {
  const p = payload(e);
  setTile('working-capital', money(p.workingCapital), `excl. bank ${money(p.workingCapitalExcludingBank)} · receivables ${money(p.receivables)} · payables ${money(p.payables)}`, Number(p.workingCapital?.amount));
  if (unavailable(p, 'revenue')) {
    setTile('xero-profit', 'unavailable', unavailable(p, 'revenue').reason);
  } else {
    setTile('xero-profit', money(p.revenue), `net profit ${money(p.netProfit)} · since ${p.period?.from?.slice(0, 10) ?? '—'}`, Number(p.revenue?.amount));
  }
});
client.on('xero:data-updated', (e) => {
  const p = payload(e);
  if (!sources.get('xero')) touchSource('xero', { text: `${p.resource} ${p.action} (refresh pending)` });
});
client.on('unleashed:sync-completed', (e) => {
  const p = payload(e);
  setTile('stock', money(p.stockValue), `${num(p.stockItems)} items · ${num(p.lowStockItems)} below minimum`, Number(p.stockValue?.amount));
  const completed = p.completedToday === undefined ? 'completed today unavailable' : `${num(p.completedToday)} completed today`;
  setTile('production', `${num(p.activeAssemblies)} active`, `${completed} · yield ${p.yieldPercent || '—'}% · ${num(p.overdueAssemblies)} overdue · ${num(p.qualityAlerts)} quality alerts · utilisation ${p.utilizationPercent || '—'}%`, Number(p.activeAssemblies));
});
client.on('unleashed:production-updated', (e) => {
  const p = payload(e);
  const qty = p.status === 'Completed' ? ` (${num(p.producedQuantity)} of ${num(p.plannedQuantity)})` : ` (${num(p.plannedQuantity)} planned)`;
  keyedRow('production', e.key, `${p.assemblyNumber || p.assemblyId} ${p.product}: ${p.status}${qty}`, Number(e.id ?? 0), p.status);
});
for (const source of SOURCES) {
  client.on(`${source}:sync-status`, (e) => touchSource(source, { ...payload(e), at: e.publishedAt }));
  client.on(`${source}:sync-error`, (e) => {
    const p = payload(e);
    toast('warning', `${source} sync failed${p.scope && p.scope !== 'all' ? ` (${p.scope})` : ''}: ${p.error}`, e);
  });
}
for (const [type, level] of [['alert:critical', 'critical'], ['alert:warning', 'warning'], ['alert:info', 'info']]) {
  client.on(type, (e) => {
    const p = payload(e);
    toast(level, [p.title, p.message].filter(Boolean).join(': '), e, p.link);
  });
}
for (const type of ['amazon:low-stock-alert', 'unleashed:low-stock-alert', 'shopify:low-stock-alert']) {
  client.on(type, (e) => {
    const p = payload(e);
    const items = (p.items ?? []).slice(0, 3).map((i) => `${i.sku || i.name} (${i.onHand})`).join(', ');
    toast(Number(p.criticalItems) > 0 ? 'critical' : 'warning', `${p.count} item(s) below reorder point: ${items}`, e);
  });
}
client.on('unleashed:quality-alert', (e) => {
  const p = payload(e);
  const issues = p.issues ?? [];
  const text = issues.slice(0, 3).map((i) => `${i.assemblyId} ${i.kind === 'short' ? `short: ${i.produced} of ${i.planned}` : i.kind}`).join(', ');
  toast(Number(p.criticalIssues) > 0 ? 'critical' : 'warning', `Yield shortfall on ${p.count} assemblies: ${text}`, e, issues.find((i) => i.link)?.link);
});
// Refetch only what the event names (its sections are channels), from the current state.
client.on('dashboard:refresh-required', (e) => {
  const sections = (payload(e).sections ?? []).filter((s) => CHANNELS.includes(s));
  if (settled && sections.length) client.refreshState(sections).catch(() => {});
});

const jobLabel = (type, p) => `${p.workflowId || p.jobId || p.runId || type} ${p.stage ? `· ${p.stage}` : ''}`.trim();
for (const type of ['workflow:progress', 'forecast:progress']) {
  client.on(type, (e) => {
    const p = payload(e);
    job(e.key, Number(p.percent ?? 0), jobLabel(type, p), 'running', e);
  });
}
client.on('workflow:completion', (e) => {
  const p = payload(e);
  // A stage completing is progress; only the final completion ends the job.
  if (p.final) job(e.key, 100, jobLabel('workflow', p), 'completed', e);
});
client.on('forecast:complete', (e) => job(e.key, 100, jobLabel('forecast', payload(e)), 'completed', e));
for (const type of ['workflow:error', 'forecast:error']) {
  client.on(type, (e) => {
    const p = payload(e);
    const row = jobs.get(e.key);
    job(e.key, Number(row?.querySelector('progress').value ?? 0), jobLabel(type, p), `failed: ${p.error ?? p.message ?? 'error'}`, e);
  });
}

showLive();
client.start();
