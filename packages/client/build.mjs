// The package ships the very files the bridge serves at /client.js and /client.d.ts: one
// source (bridge/assets/, the .d.ts generated from the catalog), copied here when packing.
import { copyFileSync } from 'node:fs';

for (const file of ['client.js', 'client.d.ts']) {
  copyFileSync(new URL(`../../bridge/assets/${file}`, import.meta.url), new URL(`./${file}`, import.meta.url));
}
