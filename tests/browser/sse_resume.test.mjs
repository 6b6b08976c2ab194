// Two SSE clients not written here — Chromium's EventSource and the `eventsource` npm
// package — receive events, are cut off by a server restart, reconnect on their own and
// resume by Last-Event-ID with nothing lost and nothing repeated.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { dataDir, start, stop, token, publish, until } from './server.mjs';
import { SHOTS, launch } from './browser.mjs';

const servers = [];
after(async () => Promise.all(servers.map(stop)));

test('Chromium EventSource resumes across a server restart', async () => {
  const dir = dataDir();
  let server = await start(dir);
  servers.push(server);
  const sub = token(dir, 'acme', 'subscribe');
  const pub = token(dir, 'acme', 'publish');
  const browser = await launch();
  try {
    const context = await browser.newContext();
    // EventSource cannot set headers: the token rides in the HttpOnly cookie, sent on every reconnect.
    await context.addCookies([{ name: 'switchyard_token', value: sub, url: server.http, httpOnly: true }]);
    const page = await context.newPage();
    await page.goto(`${server.http}/healthz`);
    await page.evaluate(() => {
      window.got = [];
      window.states = [];
      const es = new EventSource('/api/sse/alerts');
      es.addEventListener('alert:info', (e) => window.got.push(Number(e.lastEventId)));
      es.onopen = () => window.states.push('open');
      es.onerror = () => window.states.push('error');
    });
    await until('the stream to open', () => page.evaluate(() => window.states.includes('open')));
    const first = await publish(server, pub, 'before-', 20);
    await until('20 events', async () => (await page.evaluate(() => window.got.length)) >= 20);
    await page.screenshot({ path: `${SHOTS}chromium-eventsource-connected.png` });

    await stop(server);
    server = await start(dir, server.addr);
    servers.push(server);
    // Published while the browser is still reconnecting.
    const second = await publish(server, pub, 'after-', 20);
    await until('40 events', async () => (await page.evaluate(() => window.got.length)) >= 40);
    const got = await page.evaluate(() => window.got);
    assert.deepEqual(got, [...first, ...second].map(Number), 'every event once, in order, across the restart');
    assert.ok((await page.evaluate(() => window.states)).includes('error'), 'the browser saw the cut');
    await page.screenshot({ path: `${SHOTS}chromium-eventsource-resumed.png` });
  } finally {
    await browser.close();
  }
});

test('the eventsource npm package resumes across a server restart', async () => {
  const dir = dataDir();
  let server = await start(dir);
  servers.push(server);
  const sub = token(dir, 'acme', 'subscribe');
  const pub = token(dir, 'acme', 'publish');
  const got = [];
  const es = new EventSource(`${server.http}/api/sse/alerts`, {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, authorization: `Bearer ${sub}` } }),
  });
  es.addEventListener('alert:info', (e) => got.push(Number(e.lastEventId)));
  try {
    await until('the stream to open', () => es.readyState === EventSource.OPEN);
    const first = await publish(server, pub, 'before-', 25);
    await until('25 events', () => got.length >= 25);
    await stop(server);
    server = await start(dir, server.addr);
    servers.push(server);
    const second = await publish(server, pub, 'after-', 25);
    await until('50 events', () => got.length >= 50);
    assert.deepEqual(got, [...first, ...second].map(Number));
  } finally {
    es.close();
  }
});
