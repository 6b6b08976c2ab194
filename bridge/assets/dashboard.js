// The live operations dashboard served at `/`. Every figure on it comes from an event; a tile
// with no event yet says which source is missing and how to connect it.
//
// Opening or reloading the page starts from the bus's state (the latest snapshot of every
// key), so every figure shows at once; figures counted from facts (live orders) are kept with
// the id they are counted up to, and a reload adds only the facts after it.
import { Switchyard } from '/client.js';

const $ = (id) => document.getElementById(id);
const HOW = {
  shopify: 'Connect Shopify: set webhooks.shopify in the config (docs/webhooks.md) or run the Shopify connector (docs/connectors.md).',
  amazon: 'Connect Amazon: set webhooks.amazon for SNS (docs/webhooks.md) or run the Amazon connector (docs/connectors.md).',
  xero: 'Connect Xero: run the Xero connector with OAuth2 credentials (docs/connectors.md).',
  unleashed: 'Connect Unleashed: run the Unleashed connector with an API id and key (docs/connectors.md).',
};

/** The event's payload (the client hands it over as `data`). */
const payload = (event) => event?.data ?? {};

const money = (m) => (m && m.amount !== undefined ? `${Number(m.amount).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${m.currency ?? ''}`.trim() : '—');
const num = (v) => Number(v ?? 0).toLocaleString();

// ---- tiles ----
const TILES = [
  { id: 'shopify-orders', title: 'Shopify orders (live)', source: 'shopify' },
  { id: 'shopify-revenue', title: 'Shopify revenue (last sync)', source: 'shopify' },
  { id: 'amazon-orders', title: 'Amazon orders', source: 'amazon' },
  { id: 'amazon-inventory', title: 'FBA inventory', source: 'amazon' },
  { id: 'working-capital', title: 'Working capital (Xero)', source: 'xero' },
  { id: 'stock', title: 'Stock (Unleashed)', source: 'unleashed' },
  { id: 'production', title: 'Production (Unleashed)', source: 'unleashed' },
];
const series = new Map();

for (const t of TILES) {
  const el = document.createElement('article');
  el.className = 'tile';
  el.id = `tile-${t.id}`;
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
  el.innerHTML = `${h}<p class="value"></p><p class="detail"></p>${sparkline(s)}`;
  el.querySelector('.value').textContent = value;
  el.querySelector('.detail').textContent = detail;
  el.classList.add('updated');
  setTimeout(() => el.classList.remove('updated'), 1200);
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
function totalsText(totals) {
  return Object.entries(totals).map(([c, v]) => money({ amount: v, currency: c })).join(' + ') || 'no totals';
}

// ---- sources, alerts, toasts, jobs ----
const sources = new Map();
function touchSource(name, text, error = false, at = new Date()) {
  sources.set(name, { text, error, at });
  $('sources').replaceChildren(
    ...['shopify', 'amazon', 'xero', 'unleashed'].map((n) => {
      const li = document.createElement('li');
      const s = sources.get(n);
      if (!s) {
        li.innerHTML = `<strong></strong> <span class="empty">not connected</span>`;
      } else {
        li.innerHTML = `<strong></strong> <span></span> <time></time>`;
        li.querySelector('span').textContent = s.text;
        li.querySelector('span').className = s.error ? 'error' : '';
        li.querySelector('time').textContent = s.at.toLocaleTimeString();
        li.querySelector('time').dateTime = s.at.toISOString();
      }
      li.querySelector('strong').textContent = n[0].toUpperCase() + n.slice(1);
      li.dataset.source = n;
      return li;
    }),
  );
}
touchSource('none', '');

function recent(event) {
  // History replayed on first load fills tiles but does not raise toasts.
  const at = Date.parse(event.publishedAt ?? '');
  return !Number.isFinite(at) || Date.now() - at < 120000;
}

function toast(level, text, event) {
  addAlert(level, text, event);
  if (!recent(event)) return;
  const el = document.createElement('div');
  el.className = `toast ${level}`;
  el.setAttribute('role', level === 'critical' ? 'alert' : 'status');
  el.innerHTML = '<p></p><button type="button">Dismiss</button>';
  el.querySelector('p').textContent = text;
  el.querySelector('button').setAttribute('aria-label', `Dismiss: ${text}`);
  el.querySelector('button').addEventListener('click', () => el.remove());
  $('toasts').append(el);
  // Critical alerts stay until dismissed; low-stock and warnings stay long enough to read.
  if (level !== 'critical') setTimeout(() => el.remove(), level === 'warning' ? 12000 : 8000);
}

function addAlert(level, text, event) {
  const list = $('alerts');
  list.querySelector('.empty')?.remove();
  const li = document.createElement('li');
  li.className = level;
  li.innerHTML = '<span></span> <time></time>';
  li.querySelector('span').textContent = text;
  const at = new Date(event.publishedAt ?? Date.now());
  li.querySelector('time').textContent = at.toLocaleTimeString();
  li.querySelector('time').dateTime = at.toISOString();
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

// One row per job (its key), showing its latest state; finished jobs leave after a while.
const jobs = new Map();
const FINISHED_STAYS_MS = 5 * 60 * 1000;
function job(id, percent, label, status = 'running', event = {}) {
  if (!id) return;
  $('jobs').querySelector('.empty')?.remove();
  let li = jobs.get(id);
  if (!li) {
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
    li.leave = setTimeout(() => {
      li.remove();
      jobs.delete(id);
      if (jobs.size === 0) $('jobs').innerHTML = '<li class="empty">No job is running.</li>';
    }, Math.max(0, FINISHED_STAYS_MS - age));
  }
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
const client = new Switchyard({
  channels: ['dashboard', 'alerts', 'inventory', 'production', 'working-capital', 'workflow', 'forecast'],
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
  document.body.dataset.asOf = asOf;
  showLive();
});

function showLive() {
  if (live.shopify.count > 0) setTile('shopify-orders', num(live.shopify.count), `${totalsText(live.shopify.totals)} · since this tab opened`);
  if (live.amazon.count > 0) setTile('amazon-orders', num(live.amazon.count), 'since this tab opened');
}

client.on('shopify:order-created', (e, raw) => {
  const o = payload(e);
  if (!countOnce(raw)) return;
  live.shopify.count++;
  const total = Number(o.total?.amount ?? NaN);
  if (Number.isFinite(total)) {
    const c = o.total.currency ?? '';
    live.shopify.totals[c] = (live.shopify.totals[c] ?? 0) + total;
  }
  saveLive();
  setTile('shopify-orders', num(live.shopify.count), `${totalsText(live.shopify.totals)} · last ${o.name || o.orderId} (${o.store})`, total);
  touchSource('shopify', `order ${o.name || o.orderId} received`, false, new Date(e.publishedAt ?? Date.now()));
  toast('info', `New Shopify order ${o.name || o.orderId}: ${money(o.total)} (${o.store})`, e);
});
client.on('shopify:sync-completed', (e) => {
  const p = payload(e);
  setTile('shopify-revenue', money(p.totalRevenue), `${num(p.totalOrders)} orders · net ${money(p.totalNetRevenue)} · ${p.successCount ?? 0}/${p.totalStores ?? 0} stores`, Number(p.totalRevenue?.amount));
  touchSource('shopify', 'synced', false, new Date(e.publishedAt ?? Date.now()));
});
for (const type of ['amazon:order-created', 'amazon:order-updated']) {
  client.on(type, (e, raw) => {
    const o = payload(e);
    if (!countOnce(raw)) return;
    if (type === 'amazon:order-created') live.amazon.count++;
    saveLive();
    setTile('amazon-orders', num(live.amazon.count), `last ${o.orderId} · ${o.fulfillmentStatus || 'status unknown'}`, live.amazon.count);
    touchSource('amazon', `order ${o.orderId} ${type.endsWith('created') ? 'received' : 'updated'}`, false, new Date(e.publishedAt ?? Date.now()));
  });
}
client.on('amazon:sync-completed', (e) => {
  const p = payload(e);
  setTile('amazon-orders', num(p.totalOrders), `${money(p.totalRevenue)} · ${num(p.unshippedOrders)} unshipped`, Number(p.totalOrders));
  setTile('amazon-inventory', `${num(p.totalUnits)} units`, `${num(p.totalSkus)} SKUs · ${num(p.lowStockSkus)} low · ${num(p.inboundShipments)} inbound`, Number(p.totalUnits));
  touchSource('amazon', 'synced', false, new Date(e.publishedAt ?? Date.now()));
});
client.on('xero:sync-completed', (e) => {
  const p = payload(e);
  setTile('working-capital', money(p.workingCapital), `receivables ${money(p.receivables)} · payables ${money(p.payables)}`, Number(p.workingCapital?.amount));
  touchSource('xero', 'synced', false, new Date(e.publishedAt ?? Date.now()));
});
client.on('xero:data-updated', (e) => {
  const p = payload(e);
  touchSource('xero', `${p.resource} ${p.action} (refresh pending)`, false, new Date(e.publishedAt ?? Date.now()));
});
client.on('unleashed:sync-completed', (e) => {
  const p = payload(e);
  setTile('stock', money(p.stockValue), `${num(p.stockItems)} items · ${num(p.lowStockItems)} below minimum`, Number(p.stockValue?.amount));
  setTile('production', `${num(p.activeAssemblies)} active`, `${num(p.completedToday)} completed today · yield ${p.yieldPercent ?? '—'}% · utilisation ${p.utilizationPercent ?? '—'}%`, Number(p.activeAssemblies));
  touchSource('unleashed', 'synced', false, new Date(e.publishedAt ?? Date.now()));
});
for (const source of ['shopify', 'amazon', 'xero', 'unleashed']) {
  client.on(`${source}:sync-error`, (e) => {
    const p = payload(e);
    touchSource(source, `sync failed: ${p.error}`, true, new Date(e.publishedAt ?? Date.now()));
    toast('warning', `${source} sync failed: ${p.error}`, e);
  });
  client.on(`${source}:sync-started`, (e) => touchSource(source, 'syncing…', false, new Date(e.publishedAt ?? Date.now())));
}
for (const [type, level] of [['alert:critical', 'critical'], ['alert:warning', 'warning'], ['alert:info', 'info']]) {
  client.on(type, (e) => {
    const p = payload(e);
    toast(level, [p.title, p.message].filter(Boolean).join(': '), e);
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
  toast(Number(p.criticalIssues) > 0 ? 'critical' : 'warning', `${p.count} assemblies short of plan`, e);
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
