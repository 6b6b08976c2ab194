// Memory of one page holding the React test app (20 snapshot hooks, an events hook, a job hook
// and the badge, React in production mode) while live updates arrive: a bench, not a test
// (`node memory.bench.mjs`; BENCH_MINUTES, default 60; BENCH_RATE events/s, default 10).
//
// Every second BENCH_RATE events: snapshot updates across the 20 keys, and every 10 s a new job
// (started, progress, completed: the hub keeps the 1,000 most recent). Once a minute the page's
// garbage is collected and its JS heap read through the DevTools protocol (JSHeapUsedSize), with
// the DOM node and listener counts. Flat means the last samples are within noise of the first
// ones after warm-up.
import { rmSync } from 'node:fs';
import { launch } from './browser.mjs';
import { dataDir, publishEvents, start, stop, token, until } from './server.mjs';
import { bundle, health } from './react_app.mjs';

const minutes = Number(process.env.BENCH_MINUTES ?? 60);
const rate = Number(process.env.BENCH_RATE ?? 10);
const dirs = [];
const { script } = await bundle(dirs, { production: true });
const dir = dataDir();
const server = await start(dir);
const browser = await launch();
try {
  const pub = token(dir, 'acme', 'publish');
  await publishEvents(server, pub, Array.from({ length: 20 }, (_, i) => health(i, 'ok')));
  const page = await browser.newPage();
  await page.route(`${server.http}/app*`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<div id="root"></div><script type="module" src="/app.js"></script>' }));
  await page.route(`${server.http}/app.js`, (route) => route.fulfill({ contentType: 'text/javascript', body: script }));
  await page.goto(`${server.http}/app?token=${encodeURIComponent(token(dir, 'acme', 'subscribe'))}`);
  await until('every snapshot on screen', () => page.evaluate(() => window.stateShownAt));
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const sample = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    return { heap: m.JSHeapUsedSize, nodes: m.Nodes, listeners: m.JSEventListeners };
  };
  const samples = [];
  const began = Date.now();
  let sent = 0;
  let job = 0;
  for (let second = 0; second < minutes * 60; second++) {
    const batch = Array.from({ length: rate }, (_, i) => health((sent + i) % 20, `s${sent + i}`));
    if (second % 10 === 0) {
      const key = `job${job++}`;
      batch.push({ type: 'import:job-started', key, data: { jobId: key } },
        { type: 'import:job-progress', key, data: { jobId: key, stage: 'rows', percent: 50 } },
        { type: 'import:job-completed', key, data: { jobId: key, processedItems: '1' } });
    }
    await publishEvents(server, pub, batch);
    sent += batch.length;
    if (second % 60 === 0) {
      const s = { minute: second / 60, ...(await sample()) };
      samples.push(s);
      console.log(`minute ${s.minute}: heap ${(s.heap / 1024).toFixed(0)} KiB, ${s.nodes} nodes, ${s.listeners} listeners`);
    }
    const due = began + (second + 1) * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
  }
  const last = { minute: minutes, ...(await sample()) };
  samples.push(last);
  const shown = await page.textContent('[data-health="0"]');
  console.log(`minute ${minutes}: heap ${(last.heap / 1024).toFixed(0)} KiB, ${last.nodes} nodes, ${last.listeners} listeners`);
  console.log(`${sent} events published over ${minutes} min at ${rate}/s; page shows "${shown}"; ` +
    `heap from ${(samples[1]?.heap / 1024).toFixed(0)} KiB (minute 1) to ${(last.heap / 1024).toFixed(0)} KiB`);
} finally {
  await browser.close();
  await stop(server);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}
