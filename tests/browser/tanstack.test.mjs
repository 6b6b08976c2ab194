// The TanStack Query helper (@switchyard/client/tanstack) with a real QueryClient
// (@tanstack/query-core) and the real server: a burst of 50 events is one refetch per key, a
// refresh-required event refetches only the sections it names, a snapshot is written into the
// cache with no refetch at all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { QueryClient, QueryObserver } from '@tanstack/query-core';
import { Switchyard } from '../../bridge/assets/client.js';
import { connectQueryClient, sections } from '../../packages/client/tanstack.js';
import { dataDir, publishEvents, start, stop, token, until } from './server.mjs';

let server;
const cleanups = [];
// Runs on failure too: an open EventSource would keep the test process alive retrying.
after(async () => {
  for (const fn of cleanups.reverse()) fn();
  if (server) await stop(server);
});

test('tanstack: 50 events are one refetch per key; sections refetch only what they name; snapshots fill the cache', async () => {
  const dir = dataDir();
  server = await start(dir);
  const pub = token(dir, 'acme', 'publish');
  const queryClient = new QueryClient();
  const fetches = new Map();
  cleanups.push(() => queryClient.clear());
  // Active queries, as mounted components hold them: each counts its fetches.
  for (const key of [['dashboard', 'executive'], ['dashboard', 'stock'], ['dashboard', 'orders'], ['dashboard', 'finance'], ['working-capital']]) {
    const id = JSON.stringify(key);
    const observer = new QueryObserver(queryClient, {
      queryKey: key,
      queryFn: async () => {
        fetches.set(id, (fetches.get(id) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 5));
        return { fetched: fetches.get(id) };
      },
      staleTime: Infinity,
    });
    cleanups.push(observer.subscribe(() => {}));
  }
  await until('every query fetched once', () => fetches.size === 5 && [...fetches.values()].every((n) => n === 1));

  const client = new Switchyard({
    url: server.http, token: token(dir, 'acme', 'subscribe'), channels: [], start: 'live', EventSource, storage: null,
  });
  const disconnect = connectQueryClient(client, queryClient, {
    invalidate: {
      'shopify:order-created': [['dashboard', 'executive'], ['dashboard', 'orders']],
      'dashboard:refresh-required': sections(['dashboard']),
    },
    set: { 'xero:sync-completed': (e) => [['working-capital'], e.data.workingCapital] },
  });
  cleanups.push(disconnect, () => client.stop());
  let seen = 0;
  client.on('*', () => seen++);
  client.start();
  await until('connected', () => client.state === 'connected');

  const orders = Array.from({ length: 50 }, (_, i) => ({
    type: 'shopify:order-created', key: `o${i}`, data: { orderId: `o${i}`, total: { amount: '10.00', currency: 'GBP' } },
  }));
  await publishEvents(server, pub, orders);
  await until('all 50 events delivered', () => seen === 50);
  // A refresh naming `stock` after the burst: windows flush in order, so once it has been
  // refetched every invalidation the burst caused has been made.
  await publishEvents(server, pub, [{ type: 'dashboard:refresh-required', key: 'all', data: { sections: ['stock'], reason: 'test' } }]);
  await until('stock refetched', () => fetches.get('["dashboard","stock"]') === 2);
  await until('the refetches settled', () => !queryClient.isFetching());
  assert.equal(fetches.get('["dashboard","executive"]'), 2, '50 events: one refetch of executive');
  assert.equal(fetches.get('["dashboard","orders"]'), 2, 'and one of orders');
  assert.equal(fetches.get('["dashboard","stock"]'), 2, 'stock refetched by the refresh only, never by an order');
  assert.equal(fetches.get('["dashboard","finance"]'), 1, 'a section not named is not refetched');

  await publishEvents(server, pub, [{ type: 'xero:sync-completed', key: 'xero', data: { workingCapital: { amount: '1234.50', currency: 'GBP' } } }]);
  await until('the snapshot in the cache', () => queryClient.getQueryData(['working-capital'])?.amount === '1234.50');
  assert.equal(fetches.get('["working-capital"]'), 1, 'written, not refetched');
});
