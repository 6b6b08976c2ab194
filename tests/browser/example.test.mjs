// The example app (examples/react-dashboard: React, TanStack Query, @switchyard/client) as a
// front-end team would ship it: built with its own esbuild options from the packed package
// installed into a fresh folder, served from the server's origin, run in Chromium against the
// real server. State on screen within 1 s, live updates, a job's progress bar, a burst of 50
// orders refetching the orders query once, a kill -9 and restart shown on the badge (with its
// countdown) and losing nothing, a reload that neither loses nor repeats an alert, and the
// polling fallback when streams are blocked.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { cpSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { launch } from './browser.mjs';
import { dataDir, publishEvents, start, stop, token, until } from './server.mjs';
import { installedApp } from './app.mjs';
import { buildOptions } from '../../examples/react-dashboard/build.mjs';

const EXAMPLE = new URL('../../examples/react-dashboard/', import.meta.url).pathname;
const MODULES = new URL('./node_modules/', import.meta.url).pathname;
let server;
let browser;
const dirs = [];
after(async () => {
  await browser?.close();
  if (server) await stop(server);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The example's sources in a fresh app holding the packed package, bundled by its options. */
async function bundleExample() {
  const { app } = installedApp(dirs);
  cpSync(join(EXAMPLE, 'src'), join(app, 'src'), { recursive: true });
  const out = await build({ ...buildOptions(app, { production: false }), write: false, nodePaths: [MODULES] });
  return out.outputFiles[0].text;
}

const order = (id, amount) => ({ type: 'shopify:order-created', key: id, data: { orderId: id, total: { amount, currency: 'GBP' } } });
const alert = (title) => ({ type: 'alert:warning', data: { title } });

// Runs in the page before the app: the badge's every status and countdown, told to the test
// (which outlives navigations), and when every tile first holds its figure.
function observe() {
  let last = null;
  new MutationObserver(() => {
    const badge = document.querySelector('[role=status]');
    if (badge) {
      const status = badge.getAttribute('data-status');
      const retry = badge.getAttribute('data-retry-in');
      const seen = retry ? `${status}:${retry}` : status;
      if (seen !== last) window.recordBadge((last = seen));
    }
    const tiles = [...document.querySelectorAll('[data-tile]')];
    if (!window.stateShownAt && tiles.length === 3 && tiles.every((t) => t.dataset.state === 'ready')) {
      window.stateShownAt = performance.now();
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
}

test('example: the React + TanStack dashboard from the packed package, through restarts, reloads and fallback', async () => {
  const script = await bundleExample();
  const dir = dataDir();
  server = await start(dir);
  const pub = token(dir, 'acme', 'publish');
  await publishEvents(server, pub, [
    { type: 'xero:sync-completed', key: 'xero', data: { workingCapital: { amount: '12345.67', currency: 'GBP' } } },
    { type: 'shopify:sync-completed', key: 'shopify', data: { totalOrders: 2, totalRevenue: { amount: '30.00', currency: 'GBP' } } },
    order('o1', '10.00'),
    order('o2', '20.00'),
    { type: 'import:job-progress', key: 'j1', data: { jobId: 'j1', stage: 'rows', percent: 40 } },
  ]);

  browser = await launch();
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const badges = [];
  await page.exposeFunction('recordBadge', (s) => badges.push(s));
  await page.addInitScript(observe);
  let fetches = 0;
  page.on('request', (r) => {
    if (r.url().includes('/api/events?') && r.url().includes('since=')) fetches++;
  });
  const html = readFileSync(join(EXAMPLE, 'index.html'), 'utf8');
  await page.route(`${server.http}/example/`, (route) => route.fulfill({ contentType: 'text/html', body: html }));
  await page.route(`${server.http}/example/app.js`, (route) => route.fulfill({ contentType: 'text/javascript', body: script }));
  const url = `${server.http}/example/#token=${encodeURIComponent(token(dir, 'acme', 'subscribe'))}`;
  const text = (sel) => page.textContent(sel);
  const alertTitles = () => page.$$eval('#alerts li', (lis) => lis.map((li) => li.textContent));
  const alertIds = () => page.$$eval('#alerts li', (lis) => lis.map((li) => li.dataset.id));

  // State on open: every tile within 1 s of navigation, the job's bar where it was.
  await page.goto(url);
  const shownAt = await until('every tile filled', () => page.evaluate(() => window.stateShownAt));
  console.log(`example: every tile on screen ${shownAt.toFixed(0)} ms after navigation`);
  assert.ok(shownAt < 1000, `state on screen within 1 s (${shownAt} ms)`);
  assert.equal(await text('[data-tile=working-capital] .figure'), '12345.67 GBP');
  assert.equal(await text('[data-tile=shopify-today] .figure'), '2 orders, 30.00 GBP');
  await until('the orders query', async () => (await text('[data-tile=orders-today] .figure')) === '2 orders, 30.00 GBP');
  await until('the job bar', async () => (await page.getAttribute('[data-job=j1] progress', 'value')) === '40');
  await until('live', async () => (await page.getAttribute('#connection', 'data-status')) === 'connected');
  // The query read once on mount, and once more when the stream's state part completed.
  await until('the orders query settled', () => fetches === 2);

  // Live: alerts as they come, a figure updated, the job to its end.
  await publishEvents(server, pub, [
    alert('a0'),
    alert('a1'),
    { type: 'xero:sync-completed', key: 'xero', data: { workingCapital: { amount: '20000.00', currency: 'GBP' } } },
    { type: 'import:job-progress', key: 'j1', data: { jobId: 'j1', stage: 'rows', percent: 80 } },
  ]);
  await until('live alerts', async () => (await alertTitles()).join() === 'a1,a0');
  await until('the figure updated', async () => (await text('[data-tile=working-capital] .figure')) === '20000.00 GBP');
  await until('the bar moved', async () => (await page.getAttribute('[data-job=j1] progress', 'value')) === '80');
  await publishEvents(server, pub, [{ type: 'import:job-completed', key: 'j1', data: { jobId: 'j1', processedItems: '10' } }]);
  await until('the job done', async () => (await page.getAttribute('[data-job=j1]', 'data-phase')) === 'completed');

  // A burst of 50 orders: the orders query is refetched once. (One more order after it: had the
  // burst refetched twice, the count would be one more than it is.)
  await publishEvents(server, pub, Array.from({ length: 50 }, (_, i) => order(`b${i}`, '1.00')));
  await until('the burst counted', async () => (await text('[data-tile=orders-today] .figure')) === '52 orders, 80.00 GBP');
  await publishEvents(server, pub, [order('o53', '1.00')]);
  await until('one more order', async () => (await text('[data-tile=orders-today] .figure')) === '53 orders, 81.00 GBP');
  assert.equal(fetches, 4, 'one refetch for the burst of 50, one for the order after it');

  // kill -9, then a restart on the same address: reconnecting with a countdown, then live, and
  // nothing published meanwhile is lost or repeated.
  server.proc.kill('SIGKILL');
  await once(server.proc, 'exit');
  await until('a retry countdown on the badge', () => badges.some((b) => /^reconnecting:[1-9]/.test(b)));
  server = await start(dir, server.addr);
  await publishEvents(server, pub, [alert('a2'), alert('a3')]);
  await until('live again', async () => (await page.getAttribute('#connection', 'data-status')) === 'connected');
  await until('the alerts after the restart', async () => (await alertTitles()).join() === 'a3,a2,a1,a0');
  const ids = await alertIds();
  assert.equal(new Set(ids).size, 4, `each alert once: ${ids}`);

  // Away and back (a reload with events published while no page was open): the state again,
  // and exactly the alerts published meanwhile.
  await page.goto('about:blank');
  await publishEvents(server, pub, [alert('a4'), alert('a5'), order('o54', '1.00')]);
  await page.goto(url);
  const again = await until('every tile filled again', () => page.evaluate(() => window.stateShownAt));
  assert.ok(again < 1000, `state on screen within 1 s after the reload (${again} ms)`);
  await until('the alerts published while away', async () => (await alertTitles()).join() === 'a5,a4');
  await until('the orders query after the reload', async () => (await text('[data-tile=orders-today] .figure')) === '54 orders, 82.00 GBP');
  assert.equal(await text('[data-tile=working-capital] .figure'), '20000.00 GBP');

  // Streams blocked (a proxy that buffers them): the client polls, and the badge says so.
  await page.route('**/api/sse/subscribe?**', (route) => route.abort());
  await page.goto('about:blank');
  await page.goto(url);
  await until('polling', async () => (await page.getAttribute('#connection', 'data-status')) === 'fallback-polling');
  await publishEvents(server, pub, [alert('a6')]);
  await until('an alert by polling', async () => (await alertTitles()).includes('a6'), 20000);

  const statuses = new Set(badges.map((b) => b.split(':')[0]));
  for (const s of ['connecting', 'connected', 'reconnecting', 'fallback-polling']) {
    assert.ok(statuses.has(s), `the badge showed ${s}: ${badges.join(' ')}`);
  }
  assert.deepEqual(errors, [], 'no page errors');
});
