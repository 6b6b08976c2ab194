// Headless Chromium for the browser tests (Debian's chromium, no outside connections), where
// their screenshots go, and the switchyard setup the dashboard and console tests share: a
// server whose Shopify webhook maps SHOP to tenant acme, and `switchyard webhook send`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { BIN, dataDir, start, stop, token } from './server.mjs';

export const SHOTS = new URL('../artifacts/', import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

/** Headless Chromium as the machine notes prescribe (root, no background networking). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

export const SHOP = 'acme-uk.myshopify.com';
const SECRET = 'shpss_test';

/**
 * One browser for a test file and the servers it starts: `setup()` starts a server with the
 * Shopify webhook configured; `track` adds a server started otherwise (a restart); `close`
 * (in the file's `after`) closes the browser and stops every server.
 */
export function harness() {
  const servers = [];
  let browser;
  return {
    async setup() {
      const dir = dataDir();
      const config = join(dir, 'switchyard.toml');
      // Outbound endpoints may target loopback (the console test's endpoint is refused there).
      const outbound = '[outbound]\nallow_http_hosts = ["127.0.0.1"]\nallow_private_hosts = ["127.0.0.1"]\n';
      writeFileSync(config, `${outbound}[webhooks.shopify]\nsecrets = ["${SECRET}"]\n[webhooks.shopify.shops]\n"${SHOP}" = "acme"\n`);
      const extra = ['--config', config];
      const server = await start(dir, '127.0.0.1:0', extra);
      servers.push(server);
      browser ??= await launch();
      return { dir, extra, server, browser, sub: token(dir, 'acme', 'subscribe'), pub: token(dir, 'acme', 'publish') };
    },
    track(server) {
      servers.push(server);
    },
    async close() {
      await browser?.close();
      await Promise.all(servers.map(stop));
    },
  };
}

/** `switchyard webhook send` of a Shopify order; its output (`200 …`, or `401 …` with a wrong secret). */
export function sendOrder(server, secret = SECRET) {
  try {
    return execFileSync(BIN, ['webhook', 'send', 'shopify', 'orders/create', '--secret', secret, '--shop', SHOP,
      '--url', server.http], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    return e.stdout.toString();
  }
}
