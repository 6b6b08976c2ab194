// Starts and stops the real `switchyard` binary for browser tests, on loopback.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export const BIN = process.env.SWITCHYARD_BIN ?? new URL('../../target/debug/switchyard', import.meta.url).pathname;

export function dataDir() {
  return mkdtempSync(join(tmpdir(), 'switchyard-browser-'));
}

/** Starts `switchyard serve`; resolves with { proc, http, grpc } once it printed its addresses. */
export async function start(dir, httpAddr = '127.0.0.1:0', extra = []) {
  const proc = spawn(BIN, ['serve', '--data-dir', dir, '--grpc-addr', '127.0.0.1:0', '--http-addr', httpAddr, ...extra], {
    env: { ...process.env, SWITCHYARD_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: proc.stdout });
  for await (const line of lines) {
    const m = line.match(/^switchyard: grpc=(\S+) http=(\S+)/);
    if (m) {
      lines.on('line', () => {});
      return { proc, grpc: m[1], http: `http://${m[2]}`, addr: m[2] };
    }
  }
  throw new Error('switchyard exited before printing its addresses');
}

/** SIGTERM and wait: open streams are told to reconnect. */
export async function stop(server) {
  if (server.proc.exitCode !== null) return;
  server.proc.kill('SIGTERM');
  await once(server.proc, 'exit');
}

export function token(dir, tenant, role) {
  return execFileSync(BIN, ['token', '--tenant', tenant, '--role', role, '--data-dir', dir]).toString().trim();
}

/** Publishes `events` as one batch; returns their ids. */
export async function publishEvents(server, tok, events) {
  const r = await fetch(`${server.http}/api/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  if (r.status !== 201) throw new Error(`publish: ${r.status} ${await r.text()}`);
  return (await r.json()).ids;
}

/** Publishes alerts titled `${prefix}${i}` as one batch; returns their ids. */
export function publish(server, tok, prefix, n) {
  return publishEvents(server, tok, Array.from({ length: n }, (_, i) => ({ type: 'alert:info', data: { title: `${prefix}${i}` } })));
}

/** Polls `check` until it returns truthy, or throws after `ms`. */
export async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
