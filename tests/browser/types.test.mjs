// The generated client.d.ts types payloads per event: a correct use compiles under --strict,
// a misspelt payload field does not (tsc from npm, no network).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const TSC = new URL('./node_modules/typescript/bin/tsc', import.meta.url).pathname;
/** Type-checks tests/browser/types/`file`; its import of bridge/assets/client.js resolves to the client.d.ts beside it. */
function tsc(file) {
  const src = new URL(`./types/${file}`, import.meta.url).pathname;
  return spawnSync(process.execPath, [TSC, '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022',
    '--moduleResolution', 'bundler', '--lib', 'es2022,dom', src], { encoding: 'utf8' });
}

test('typed handlers compile under --strict', () => {
  const out = tsc('ok.ts');
  assert.equal(out.status, 0, out.stdout + out.stderr);
});

test('a misspelt payload field is a type error', () => {
  const out = tsc('bad.ts');
  assert.notEqual(out.status, 0);
  assert.match(out.stdout, /Property 'totl' does not exist on type 'Order'/);
});
