// The operator console in real headless Chromium against the real binary: signing in by
// keyboard with an admin token (and being refused with a subscribe one); live counts; a
// signed webhook and a forged one in the deliveries table; a failing connector's status; the
// live event inspector (every tenant, filter by type, pause, the JSON and its trace id, all by
// keyboard); and the same page at phone width. Screenshots go to tests/artifacts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { token, until } from './server.mjs';
import { SHOTS, harness, sendOrder } from './browser.mjs';

const h = harness();
after(() => h.close());

async function publish(server, tok, events) {
  const r = await fetch(`${server.http}/api/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  assert.equal(r.status, 201, await r.text());
}

const text = (page, sel) => page.textContent(sel);

async function signInByKeyboard(page, tok) {
  await page.locator('#token').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'token', 'the token field has focus');
  await page.keyboard.type(tok);
  await page.keyboard.press('Enter');
}

test('console: admin sign-in, live counts, webhooks, connectors and the event inspector, by keyboard', async () => {
  const { dir, server, browser, sub } = await h.setup();
  const admin = token(dir, '*', 'admin');
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(`${server.http}/console`);

  // A subscribe token is refused with a reason; an admin one opens the console.
  await signInByKeyboard(page, sub);
  await until('the refusal', async () => /not an admin token/.test(await text(page, '#signin-error')));
  await page.fill('#token', '');
  await page.focus('#token');
  await signInByKeyboard(page, admin);
  await until('live', async () => (await page.getAttribute('#connection', 'data-state')) === 'connected');
  assert.equal(await page.isHidden('#signin'), true);
  await page.screenshot({ path: `${SHOTS}console-empty.png`, fullPage: true });

  // An outbound endpoint whose receiver refuses connections: its attempts fail, visibly.
  const ep = await fetch(`${server.http}/api/outbound/endpoints?tenant=acme`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: 'http://127.0.0.1:9/hook', types: ['alert:*'] }),
  });
  assert.equal(ep.status, 201, await ep.text());

  // Two tenants publish; a real signed webhook and a forged one arrive.
  const pub = token(dir, 'acme', 'publish');
  const beta = token(dir, 'beta', 'publish');
  await publish(server, pub, [{ type: 'alert:info', data: { title: 'acme hello' } }]);
  await publish(server, beta, [{ type: 'alert:warning', data: { title: 'beta hello' } }]);
  assert.match(sendOrder(server), /^200 /);
  assert.match(sendOrder(server, 'shpss_wrong'), /^401 /);
  // A connector reports a failed run (as connectors publish it).
  const next = new Date(Date.now() + 15000).toISOString();
  await publish(server, admin, [{ type: 'xero:sync-status', key: 'xero', tenant: 'acme', source: 'connector:xero', data: {
    ok: false, code: 'rate_limited', error: 'Xero balance sheet: still HTTP 429 after 4 attempts',
    failingSince: new Date().toISOString(), nextRun: next, duration: '2.5s', runId: 'run-7' } }]);

  // The inspector shows events of both tenants, the webhook's order among them.
  await until('four events in the inspector', async () => (await page.locator('#events button').count()) >= 4, 10000);
  const list = await text(page, '#events');
  for (const want of ['alert:info', 'alert:warning', 'shopify:order-created', 'xero:sync-status']) assert.match(list, new RegExp(want));
  assert.match(list, /beta/);
  // Within one poll the tables follow.
  await until('the webhook rows', async () => /invalid_signature/.test(await text(page, '#webhooks')), 5000);
  const hooks = await text(page, '#webhooks');
  assert.match(hooks, /shopify.*stored.*acme.*shopify:order-created/s);
  assert.match(hooks, /invalid_signature/);
  await until('the connector row', async () => /rate_limited/.test(await text(page, '#connectors')), 5000);
  const connector = await text(page, '#connectors');
  assert.match(connector, /acme.*xero.*failing since.*rate_limited: Xero balance sheet: still HTTP 429/s);
  assert.match(connector, /2\.5 s/);
  await until('the outbound row', async () => /retrying/.test(await text(page, '#outbound')), 5000);
  assert.match(await text(page, '#outbound'), /acme.*ep_[0-9a-f]{16} → 127\.0\.0\.1:9.*webhook.*retrying.*error sending request/s);
  const overview = await text(page, '#overview');
  assert.ok(Number(overview.match(/Events published(\d+)/)[1]) >= 4, overview);
  assert.match(overview, /SSE connections1/, "the inspector's own stream");
  assert.match(await text(page, '#subscriptions'), /sse\*1/);
  assert.match(await text(page, '#tenants'), /beta/);

  // Keyboard: Tab from the type filter reaches the pause button; Tab onward reaches the newest
  // event; Enter shows its JSON and trace id.
  await page.focus('#f-type');
  await page.keyboard.type('alert');
  await until('only alerts', async () => {
    const types = await page.locator('#events button strong').allTextContents();
    return types.length === 2 && types.every((t) => t.startsWith('alert:'));
  });
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'pause');
  await page.keyboard.press('Space');
  assert.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true');
  await publish(server, pub, [{ type: 'alert:info', data: { title: 'while paused' } }]);
  await until('held while paused', async () => /1 new while paused/.test(await text(page, '#held')), 5000);
  assert.equal(await page.locator('#events button').count(), 2, 'nothing new is shown while paused');
  await page.keyboard.press('Space');
  await until('shown after resuming', async () => (await page.locator('#events button').count()) === 3);
  await page.locator('#events button').first().focus();
  await page.keyboard.press('Enter');
  await until('the detail', async () => !(await page.isHidden('#detail-json')));
  const json = JSON.parse(await text(page, '#detail-json'));
  assert.equal(json.alertInfo.title, 'while paused');
  assert.equal(json.tenant, 'acme');
  assert.match(await text(page, '#detail-meta'), /Trace idnone \(not sampled\)/);
  await page.screenshot({ path: `${SHOTS}console-live.png`, fullPage: true });

  // A traced event shows its trace id; the tenant filter narrows to one tenant.
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  await publish(server, pub, [{ type: 'alert:critical', data: { title: 'traced' },
    trace: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } }]);
  await until('the traced event', async () => /traced|alert:critical/.test(await text(page, '#events')), 5000);
  await page.locator('#events button', { hasText: 'alert:critical' }).click();
  await until('its trace id', async () => (await text(page, '#detail-meta')).includes(`Trace id${traceId}`));
  await page.fill('#f-type', '');
  await page.fill('#f-tenant', 'beta');
  await until('only beta', async () => {
    const metas = await page.locator('#events button .meta').allTextContents();
    return metas.length === 1 && metas[0].includes('beta');
  });
  await page.fill('#f-tenant', '');

  // The channel filter subscribes to that channel only: an alert arrives, a sync status does not.
  await page.selectOption('#f-channel', 'alerts');
  await until('the alert', async () => {
    await publish(server, admin, [
      { type: 'xero:sync-status', key: 'xero', tenant: 'acme', source: 'connector:xero', data: { ok: true, lastSuccess: new Date().toISOString() } },
      { type: 'alert:info', tenant: 'acme', data: { title: 'on alerts' } },
    ]);
    await new Promise((r) => setTimeout(r, 200));
    return (await page.locator('#events button').count()) >= 1;
  }, 10000);
  assert.match(await text(page, '#events'), /alert:info/);
  assert.doesNotMatch(await text(page, '#events'), /xero:sync-status/);
  await page.selectOption('#f-channel', '');

  // Phone width: the same page, no horizontal scrolling (tables scroll inside their box).
  await page.setViewportSize({ width: 390, height: 844 });
  // (Live from now on: published until the restarted inspector shows one.)
  await until('events again', async () => {
    await publish(server, pub, [{ type: 'alert:info', data: { title: 'at phone width' } }]);
    await new Promise((r) => setTimeout(r, 200));
    return (await page.locator('#events button').count()) >= 1;
  }, 10000);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
  await page.screenshot({ path: `${SHOTS}console-phone.png`, fullPage: true });

  // Signing out forgets the token.
  await page.click('#signout');
  assert.equal(await page.isVisible('#signin'), true);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('switchyard:console:token')), null);
  await page.close();
});
