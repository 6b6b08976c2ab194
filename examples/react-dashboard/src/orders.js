// "Orders today", read the way a panel backed by a REST call is: a TanStack query that the
// live events invalidate. Definition: the orders (Shopify and Amazon `order-created`, from
// webhooks and connectors alike) the bus received since local midnight, counted once per
// order id; revenue is summed per currency, exactly (decimal strings, never floats).
import { addDecimal } from '@switchyard/client';

export const ORDER_TYPES = ['shopify:order-created', 'amazon:order-created'];
export const ORDERS_TODAY = ['dashboard', 'orders'];

/** At most this many pages of history are read (1,000 events each). */
const MAX_PAGES = 20;

export async function fetchOrdersToday({ url, token }) {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const seen = new Map();
  let params = new URLSearchParams({ channels: 'dashboard', since: midnight.toISOString(), limit: '1000' });
  for (let page = 0; page < MAX_PAGES; page++) {
    const r = await fetch(`${url}/api/events?${params}`, { headers: { authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`orders: HTTP ${r.status}`);
    const body = await r.json();
    for (const item of body.events) {
      if (ORDER_TYPES.includes(item.type)) seen.set(`${item.type}/${item.event.key}`, item);
    }
    if (!body.events.length || body.next === body.headId) break;
    params = new URLSearchParams({ channels: 'dashboard', after: body.next, limit: '1000' });
  }
  const revenue = {};
  for (const item of seen.values()) {
    const order = item.event.shopifyOrderCreated ?? item.event.amazonOrderCreated;
    const total = order?.total;
    if (total?.amount) revenue[total.currency] = addDecimal(revenue[total.currency] ?? '0', total.amount);
  }
  return { count: seen.size, revenue };
}
