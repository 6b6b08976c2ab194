// The React test app (20 snapshot hooks, an events hook, a job and the badge under StrictMode)
// and its bundle from the packed package: shared by react.test.mjs and memory.bench.mjs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { installedApp } from './app.mjs';

export const MODULES = new URL('./node_modules/', import.meta.url).pathname;

const APP = `
import { StrictMode, createElement as h, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { SwitchyardProvider, useSnapshot, useEvents, useJob, ConnectionStatus } from '@switchyard/client/react';

// Count the page's connections: opened ever, and open now.
const Native = window.EventSource;
window.opened = 0;
window.live = 0;
window.EventSource = class extends Native {
  constructor(...args) { super(...args); window.opened++; window.live++; this.counted = true; }
  close() { if (this.counted) { this.counted = false; window.live--; } super.close(); }
};

function Health({ i }) {
  const e = useSnapshot('system:health-check', 'c' + i);
  return h('li', { 'data-health': i }, e ? e.data.component + '=' + e.data.status : '…');
}
function Alerts() {
  const [titles, setTitles] = useState([]);
  useEvents('alert:info', (e) => setTitles((t) => [...t, e.data.title]));
  return h('ol', { id: 'alerts' }, titles.map((t, i) => h('li', { key: i }, t)));
}
function Job() {
  const j = useJob('j1');
  const progress = useSnapshot('import:job-progress', 'j1');
  return h('p', { id: 'job', 'data-progress': progress ? progress.data.percent : 'none' },
    j ? j.phase + ' ' + j.percent + (j.done ? ' done' : '') : 'none');
}
function App() {
  return h('div', null,
    h(ConnectionStatus, { id: 'badge' }),
    h('ul', null, Array.from({ length: 20 }, (_, i) => h(Health, { key: i, i }))),
    h(Alerts), h(Job));
}
const root = createRoot(document.getElementById('root'));
const params = new URLSearchParams(location.search);
root.render(h(StrictMode, null, h(SwitchyardProvider, {
  options: { token: params.get('token'), channels: [], maxDelayMs: 500, initialDelayMs: 100 },
}, h(App))));
// When every snapshot is on screen: ms since navigation began.
new MutationObserver((_, obs) => {
  if (document.querySelectorAll('[data-health]').length === 20 &&
      [...document.querySelectorAll('[data-health]')].every((li) => li.textContent !== '…')) {
    window.stateShownAt = performance.now();
    obs.disconnect();
  }
}).observe(document.body, { subtree: true, childList: true, characterData: true });
window.unmount = () => root.unmount();
`;

/** The packed package installed into a fresh app, and the app bundled as a user's would be. */
export async function bundle(dirs, { production = false } = {}) {
  const { app } = installedApp(dirs);
  writeFileSync(join(app, 'main.js'), APP);
  const out = await build({
    entryPoints: [join(app, 'main.js')],
    bundle: true,
    write: false,
    format: 'esm',
    minify: true,
    nodePaths: [MODULES],
    define: { 'process.env.NODE_ENV': production ? '"production"' : '"development"' },
    logLevel: 'silent',
  });
  return { app, script: out.outputFiles[0].text };
}


export const health = (i, status) => ({ type: 'system:health-check', key: `c${i}`, data: { component: `c${i}`, status } });
