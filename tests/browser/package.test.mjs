// The npm package a front-end team would install (packages/client): packed with `npm pack`,
// installed into a fresh app, imported by its name, type-checked under --strict by name, and
// run against the real server. The tarball's client.js is byte for byte what the server serves.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { dataDir, publish, start, stop, token } from './server.mjs';
import { PACKAGE, installedApp, typecheck } from './app.mjs';

const EVENTSOURCE = new URL('./node_modules/eventsource/dist/index.js', import.meta.url).href;
const servers = [];
const dirs = [];
after(async () => {
  for (const s of servers) await stop(s);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('the packed package installs into a fresh app and works there by its name', async () => {
  const { app, files } = installedApp(dirs);
  assert.deepEqual(files, ['CHANGELOG.md', 'README.md', 'client.d.ts', 'client.js', 'package.json', 'publisher.d.ts', 'publisher.js', 'react.d.ts', 'react.js', 'tanstack.d.ts', 'tanstack.js']);
  const installed = JSON.parse(readFileSync(join(app, 'node_modules/@switchyard/client/package.json'), 'utf8'));
  assert.deepEqual(installed.dependencies ?? {}, {}, 'no runtime dependencies');

  const dir = dataDir();
  const server = await start(dir);
  servers.push(server);
  // One source: the package's client is what the server serves.
  const served = await (await fetch(`${server.http}/client.js`)).text();
  assert.equal(readFileSync(join(app, 'node_modules/@switchyard/client/client.js'), 'utf8'), served);

  // The app imports the package by name and receives events live (EventSource from the
  // `eventsource` package, as a Node user would pass it).
  const sub = token(dir, 'acme', 'subscribe');
  writeFileSync(join(app, 'main.mjs'), `
    import { Switchyard } from '@switchyard/client';
    import { EventSource } from ${JSON.stringify(EVENTSOURCE)};
    const sy = new Switchyard({ url: process.argv[2], token: process.argv[3], channels: ['alerts'], EventSource, storage: null });
    const seen = [];
    sy.on('alert:info', (e) => {
      seen.push(e.data.title);
      if (seen.length === 3) { console.log(JSON.stringify(seen)); sy.stop(); process.exit(0); }
    });
    sy.onState((s) => { if (s === 'connected') console.error('connected'); });
    sy.start();
    setTimeout(() => { console.log(JSON.stringify(seen)); process.exit(1); }, 15000);
  `);
  const child = (await import('node:child_process')).spawn(process.execPath, ['main.mjs', server.http, sub], { cwd: app });
  let out = '';
  child.stdout.on('data', (b) => (out += b));
  await new Promise((resolve) => child.stderr.on('data', (b) => String(b).includes('connected') && resolve()));
  await publish(server, token(dir, 'acme', 'publish'), 'from-the-package-', 3);
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, out);
  assert.deepEqual(JSON.parse(out), ['from-the-package-0', 'from-the-package-1', 'from-the-package-2']);
});

test('the installed package type-checks a typed use by its name and refuses misspelt names and fields', () => {
  const { app } = installedApp(dirs);
  const check = (name, source) => typecheck(app, name, source);
  const ok = check('ok.ts', `
    import { Switchyard } from '@switchyard/client';
    const sy = new Switchyard({ channels: ['dashboard'] });
    sy.on('shopify:order-created', (e) => { const amount: string | undefined = e.data.total?.amount; void amount; });
  `);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  // A custom type name is allowed (tenants publish their own), but its payload is unknown: a
  // misspelt catalog name cannot be used as if it were the real one, nor a misspelt field.
  const name = check('name.ts', `
    import { Switchyard } from '@switchyard/client';
    new Switchyard({}).on('shopify:order-craeted', (e) => e.data.total);
  `);
  assert.notEqual(name.status, 0, 'a misspelt event name gives an unknown payload');
  assert.match(name.stdout, /'e\.data' is of type 'unknown'/);
  const field = check('field.ts', `
    import { Switchyard } from '@switchyard/client';
    new Switchyard({}).on('shopify:order-created', (e) => e.data.totl);
  `);
  assert.notEqual(field.status, 0, 'a misspelt payload field is a type error');
  assert.match(field.stdout, /Property 'totl' does not exist on type 'Order'/);
});

test('the publisher from the package: typed events, a lost answer stored once, 503 retried, a refusal named', async () => {
  const { app } = installedApp(dirs);
  const dir = dataDir();
  const server = await start(dir);
  servers.push(server);
  const [pub, sub] = [token(dir, 'acme', 'publish'), token(dir, 'acme', 'subscribe')];
  writeFileSync(join(app, 'publish.mjs'), `
    import { Publisher, PublishError } from '@switchyard/client/publisher';
    const [url, token] = process.argv.slice(2);
    const out = {};
    // The first answer is lost after the server stored the event; the retry carries the same key.
    let lose = true, calls = 0;
    const lossy = async (...args) => { calls++; const r = await fetch(...args); if (lose) { lose = false; throw new Error('connection reset'); } return r; };
    const p = new Publisher({ url, token, fetch: lossy, sleep: async () => {} });
    out.lost = await p.publish('alert:info', { title: 'once-only' });
    out.lostCalls = calls;
    // Two 503s with Retry-After, then the real server.
    let unavailable = 2; const waits = [];
    const busy = async (...args) => unavailable-- > 0 ? new Response('{"error":{"code":"unavailable","message":"busy"}}', { status: 503, headers: { 'retry-after': '2' } }) : fetch(...args);
    out.retried = await new Publisher({ url, token, fetch: busy, sleep: async (ms) => { waits.push(ms); } }).publish('alert:info', { title: 'after-503' });
    out.waits = waits;
    out.batch = await new Publisher({ url, token }).publishBatch([
      { type: 'alert:info', data: { title: 'batch-0' } },
      { type: 'alert:warning', data: { title: 'batch-1' }, key: 'k1' },
    ]);
    try {
      await new Publisher({ url, token }).publish('alert:info', { nope: 1 });
    } catch (e) {
      out.refused = { isPublishError: e instanceof PublishError, status: e.status, code: e.code, field: e.field, message: e.message };
    }
    console.log(JSON.stringify(out));
  `);
  const out = JSON.parse(execFileSync(process.execPath, ['publish.mjs', server.http, pub], { cwd: app }).toString());
  assert.equal(out.lostCalls, 2, 'the lost answer was retried once');
  assert.equal(out.lost.duplicate, true, 'the retry found the stored event by its idempotency key');
  assert.deepEqual(out.waits, [2000, 2000], 'Retry-After is a floor on every wait');
  assert.equal(out.batch.ids.length, 2);
  assert.equal(out.refused.isPublishError, true);
  assert.equal(out.refused.status, 400, 'a refusal is not retried');
  assert.match(out.refused.code, /^[a-z_]+$/, JSON.stringify(out.refused));
  assert.match(out.refused.message, /nope/, 'the message names the field');
  console.log(`refused: ${JSON.stringify(out.refused)}`);
  // What the history holds: each event once.
  const page = await (await fetch(`${server.http}/api/events?channels=alerts&limit=100`, { headers: { authorization: `Bearer ${sub}` } })).json();
  const titles = page.events.map((e) => Object.values(e.event).find((v) => v && typeof v === 'object' && 'title' in v)?.title);
  assert.deepEqual(titles, ['once-only', 'after-503', 'batch-0', 'batch-1']);
  assert.equal(page.events.find((e) => e.type === 'alert:info')?.id, out.lost.id, 'the duplicate answer names the stored id');

  // The publisher's types come from the catalog: a misspelt payload field does not compile.
  const check = (name, source) => typecheck(app, name, source);
  const ok = check('pub-ok.ts', `
    import { Publisher } from '@switchyard/client/publisher';
    const p = new Publisher({ url: 'http://127.0.0.1:1', token: 't' });
    void p.publish('shopify:order-created', { orderId: '1', total: { amount: '10.00', currency: 'GBP' } }, { key: '1' });
  `);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  const bad = check('pub-bad.ts', `
    import { Publisher } from '@switchyard/client/publisher';
    void new Publisher().publish('shopify:order-created', { totl: { amount: '10.00', currency: 'GBP' } });
  `);
  assert.notEqual(bad.status, 0, 'a misspelt payload field is a type error');
  assert.match(bad.stdout, /totl/);
});
