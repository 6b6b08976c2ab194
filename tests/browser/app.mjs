// A fresh app with the packed package installed, as a front-end team would have it.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PACKAGE = new URL('../../packages/client/', import.meta.url).pathname;

/** `npm pack`, then a fresh app with the tarball installed (no network: it has no dependencies,
 * and React is an optional peer). `dirs` collects the work folder for the caller to remove. */
export function installedApp(dirs) {
  const work = mkdtempSync(join(tmpdir(), 'switchyard-package-'));
  dirs.push(work);
  const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: PACKAGE }).toString());
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'an-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', join(work, packed[0].filename)], { cwd: app });
  return { app, files: packed[0].files.map((f) => f.path).sort() };
}

const TSC = new URL('./node_modules/typescript/bin/tsc', import.meta.url).pathname;

/** Writes `source` as `name` in `app` and type-checks it under --strict, as the app's build would. */
export function typecheck(app, name, source) {
  writeFileSync(join(app, name), source);
  return spawnSync(process.execPath, [TSC, '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022',
    '--moduleResolution', 'bundler', '--lib', 'es2022,dom', join(app, name)], { encoding: 'utf8', cwd: app });
}
