// Builds the example into dist/ (index.html and app.js): `npm install && npm run build`.
//
// `buildOptions` is exported so the browser test builds this app the same way, from the packed
// package installed into a fresh folder.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** esbuild's options for the app rooted at `root`. */
export function buildOptions(root, { production = true } = {}) {
  return {
    entryPoints: [join(root, 'src/main.jsx')],
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    minify: production,
    define: { 'process.env.NODE_ENV': production ? '"production"' : '"development"' },
    outfile: join(root, 'dist/app.js'),
    logLevel: 'warning',
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = dirname(fileURLToPath(import.meta.url));
  const { build } = await import('esbuild');
  await build(buildOptions(root));
  mkdirSync(join(root, 'dist'), { recursive: true });
  copyFileSync(join(root, 'index.html'), join(root, 'dist/index.html'));
  console.log('built dist/index.html and dist/app.js');
}
