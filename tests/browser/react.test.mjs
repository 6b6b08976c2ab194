// The React bindings (@switchyard/client/react) as an app would use them: the packed package
// installed into a fresh app, bundled with esbuild beside React 19, run in Chromium under
// StrictMode against the real server. 20 snapshot hooks, an events hook, a job hook and the
// badge share one connection; a restart is seen as reconnecting → connected and loses nothing;
// unmounting closes the connection.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { launch } from './browser.mjs';
import { dataDir, publishEvents, start, stop, token, until } from './server.mjs';
import { PACKAGE, typecheck } from './app.mjs';
import { MODULES, bundle, health } from './react_app.mjs';

let server;
let browser;
const dirs = [];
after(async () => {
  await browser?.close();
  if (server) await stop(server);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});


test('react: 20 snapshot hooks, events, a job and the badge on one connection under StrictMode; a restart loses nothing', async () => {
  const { script } = await bundle(dirs);
  const dir = dataDir();
  server = await start(dir);
  const pub = token(dir, 'acme', 'publish');
  await publishEvents(server, pub, Array.from({ length: 20 }, (_, i) => health(i, 'ok')));

  browser = await launch();
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The app is served from the server's origin, as a deployed front end behind one host would be.
  await page.route(`${server.http}/app*`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<div id="root"></div><script type="module" src="/app.js"></script>' }));
  await page.route(`${server.http}/app.js`, (route) => route.fulfill({ contentType: 'text/javascript', body: script }));
  await page.goto(`${server.http}/app?token=${encodeURIComponent(token(dir, 'acme', 'subscribe'))}`);

  const shownAt = await until('every snapshot on screen', () => page.evaluate(() => window.stateShownAt));
  console.log(`react: 20 snapshots on screen ${shownAt.toFixed(0)} ms after navigation`);
  assert.ok(shownAt < 1000, `state on screen within 1 s (${shownAt} ms)`);
  assert.equal(await page.textContent('[data-health="7"]'), 'c7=ok');
  await until('the badge says live', async () => (await page.getAttribute('#badge', 'data-status')) === 'connected');
  // StrictMode mounted, unmounted and mounted the provider: still one connection, never two.
  assert.deepEqual(await page.evaluate(() => [window.opened, window.live]), [1, 1], 'one connection for 23 hooks');

  // Live: events in order, a snapshot update, a job to its end.
  await publishEvents(server, pub, [
    { type: 'alert:info', data: { title: 'a0' } },
    { type: 'alert:info', data: { title: 'a1' } },
    health(3, 'degraded'),
    { type: 'import:job-progress', key: 'j1', data: { jobId: 'j1', stage: 'rows', percent: 40 } },
  ]);
  await until('live events shown', async () => (await page.textContent('#alerts')) === 'a0a1');
  await until('the snapshot updated', async () => (await page.textContent('[data-health="3"]')) === 'c3=degraded');
  await until('the job running', async () => (await page.textContent('#job')) === 'running 40');
  assert.equal(await page.getAttribute('#job', 'data-progress'), '40', 'its progress snapshot');

  // A restart on the same address: reconnecting, then connected, and nothing published while
  // the page was away is lost.
  await stop(server);
  await until('the badge says reconnecting', async () => (await page.getAttribute('#badge', 'data-status')) === 'reconnecting');
  server = await start(dir, server.addr);
  await publishEvents(server, pub, [
    { type: 'alert:info', data: { title: 'a2' } },
    { type: 'import:job-completed', key: 'j1', data: { jobId: 'j1', processedItems: '10' } },
  ]);
  await until('the badge says live again', async () => (await page.getAttribute('#badge', 'data-status')) === 'connected');
  await until('the alert after the restart', async () => (await page.textContent('#alerts')) === 'a0a1a2');
  await until('the job done', async () => (await page.textContent('#job')) === 'completed 100 done');
  assert.equal(await page.getAttribute('#job', 'data-progress'), 'none', 'an ended job has no progress snapshot, as on the server');
  assert.equal(await page.textContent('[data-health="3"]'), 'c3=degraded', 'state kept across the reconnect');

  // Unmounting the provider closes its connection.
  await page.evaluate(() => window.unmount());
  await until('the connection closed', () => page.evaluate(() => window.live === 0));
  assert.deepEqual(errors, [], 'no page errors');
});

test('react: the bindings are small', () => {
  const source = readFileSync(join(PACKAGE, 'react.js'));
  const out = execFileSync(join(MODULES, '.bin/esbuild'), ['--minify', '--format=esm', '--loader=js'], { input: source });
  const size = gzipSync(out).length;
  console.log(`react bindings: ${out.length} B minified, ${size} B gzipped`);
  assert.ok(size <= 3 * 1024, `≤ 3 KiB gzipped (${size} B)`);
});

test('react and tanstack: the hooks and the query rules are typed by the catalog', async () => {
  const { app } = await bundle(dirs);
  // The app's React types (a React app has them; the package does not install them).
  symlinkSync(join(MODULES, '@types'), join(app, 'node_modules/@types'));
  const check = (name, source) => typecheck(app, name, source);
  const ok = check('ok.ts', `
    import { useSnapshot, useEvents, useJob, useConnection } from '@switchyard/client/react';
    export function Panel() {
      const wc: string | undefined = useSnapshot('xero:sync-completed', 'xero')?.data.workingCapital?.amount;
      useEvents(['shopify:order-created'], (e) => { const name: string | undefined = e.data.name; void name; });
      const percent: number | undefined = useJob('j1')?.percent;
      const status: 'fallback-polling' | 'connected' | string = useConnection().status;
      return [wc, percent, status];
    }
    import { connectQueryClient, sections } from '@switchyard/client/tanstack';
    import type { Switchyard } from '@switchyard/client';
    export const wire = (sy: Switchyard, qc: { invalidateQueries(f: { queryKey: readonly unknown[] }): unknown; setQueryData(k: readonly unknown[], d: unknown): unknown }) =>
      connectQueryClient(sy, qc, {
        invalidate: { 'shopify:order-created': [['orders']], 'dashboard:refresh-required': sections() },
        set: { 'xero:sync-completed': (e) => [['working-capital'], e.data.workingCapital?.amount] },
      });
  `);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  const field = check('field.ts', `
    import { useSnapshot } from '@switchyard/client/react';
    export const f = () => useSnapshot('xero:sync-completed', 'xero')?.data.workingCaptial;
  `);
  assert.notEqual(field.status, 0, 'a misspelt payload field is a type error');
  assert.match(field.stdout, /Property 'workingCaptial' does not exist/);
});
