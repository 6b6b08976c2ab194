// The dashboard: figures from snapshots (state on open, then live), a panel backed by a query
// that events invalidate, running jobs with their progress, the alerts as they happen, and the
// connection badge.
import { useEffect, useState } from 'react';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { ConnectionStatus, useEvents, useJob, useSnapshot, useSwitchyard } from '@switchyard/client/react';
import { connectQueryClient, sections } from '@switchyard/client/tanstack';
import { ORDERS_TODAY, ORDER_TYPES, fetchOrdersToday } from './orders.js';

export function App({ api }) {
  useLiveQueries();
  return (
    <>
      <header>
        <h1>Operations</h1>
        <ConnectionStatus id="connection" />
      </header>
      <section className="tiles">
        <WorkingCapital />
        <ShopifyToday />
        <OrdersToday api={api} />
      </section>
      <Jobs />
      <Alerts />
    </>
  );
}

/** Events that make a query stale invalidate it; a burst refetches each key once. */
function useLiveQueries() {
  const { client } = useSwitchyard();
  const queryClient = useQueryClient();
  useEffect(() => {
    const disconnect = connectQueryClient(client, queryClient, {
      invalidate: {
        ...Object.fromEntries(ORDER_TYPES.map((type) => [type, [ORDERS_TODAY]])),
        // `sections: ['orders']` → ['dashboard', 'orders']; none named → every ['dashboard', …].
        'dashboard:refresh-required': sections(['dashboard']),
      },
    });
    // A query read from history before the stream caught up may miss what was published in
    // between: once the stream's state part is complete (on open, after a gap), read it again.
    const offStateEnd = client.onStateEnd(() => queryClient.invalidateQueries({ queryKey: ORDERS_TODAY }));
    return () => {
      disconnect();
      offStateEnd();
    };
  }, [client, queryClient]);
}

function Tile({ id, title, ready, children }) {
  return (
    <div className="tile" data-tile={id} data-state={ready ? 'ready' : 'waiting'}>
      <h2>{title}</h2>
      <div className="figure">{children}</div>
    </div>
  );
}

const money = (m) => (m?.amount ? `${m.amount} ${m.currency}` : '—');

function WorkingCapital() {
  const xero = useSnapshot('xero:sync-completed', 'xero');
  const wc = xero?.data.workingCapital;
  return (
    <Tile id="working-capital" title="Working capital (Xero)" ready={!!xero}>
      {xero ? money(wc) : 'Waiting for Xero…'}
    </Tile>
  );
}

function ShopifyToday() {
  const shopify = useSnapshot('shopify:sync-completed', 'shopify');
  const d = shopify?.data;
  return (
    <Tile id="shopify-today" title="Shopify today" ready={!!shopify}>
      {d ? `${d.totalOrders ?? 0} orders, ${money(d.totalRevenue)}` : 'Waiting for Shopify…'}
    </Tile>
  );
}

function OrdersToday({ api }) {
  const q = useQuery({ queryKey: ORDERS_TODAY, queryFn: () => fetchOrdersToday(api) });
  const revenue = Object.entries(q.data?.revenue ?? {}).map(([c, a]) => `${a} ${c}`).join(', ');
  return (
    <Tile id="orders-today" title="Orders received today" ready={q.isSuccess}>
      {q.isError ? 'Unavailable' : q.data ? `${q.data.count} orders${revenue ? `, ${revenue}` : ''}` : 'Loading…'}
    </Tile>
  );
}

const JOB_TYPES = ['import', 'export'].flatMap((f) =>
  ['job-started', 'job-progress', 'job-completed', 'job-failed'].map((t) => `${f}:${t}`),
);
/** Finished jobs stay listed this long. */
const KEEP_DONE_MS = 10_000;

function Jobs() {
  const [ids, setIds] = useState([]);
  useEvents(JOB_TYPES, (e) => setIds((list) => (list.includes(e.key) ? list : [...list, e.key].slice(-20))));
  const forget = (id) => setIds((list) => list.filter((x) => x !== id));
  return (
    <section>
      <h2>Jobs</h2>
      {ids.length === 0 ? <p>No jobs running.</p> : ids.map((id) => <JobBar key={id} id={id} onGone={forget} />)}
    </section>
  );
}

function JobBar({ id, onGone }) {
  const job = useJob(id);
  useEffect(() => {
    if (!job?.done) return;
    const timer = setTimeout(() => onGone(id), KEEP_DONE_MS);
    return () => clearTimeout(timer);
  }, [job?.done, id, onGone]);
  if (!job) return null;
  return (
    <div data-job={id} data-phase={job.phase}>
      <progress max="100" value={job.percent} /> {id}: {job.error ?? job.stage ?? job.phase} ({job.percent} %)
    </div>
  );
}

const ALERT_TYPES = ['alert:critical', 'alert:warning', 'alert:info'];

function Alerts() {
  const [alerts, setAlerts] = useState([]);
  useEvents(ALERT_TYPES, (e) => setAlerts((list) => [e, ...list].slice(0, 50)));
  return (
    <section>
      <h2>Alerts</h2>
      <ol id="alerts">
        {alerts.map((a) => (
          <li key={a.id} data-id={a.id} data-level={a.type.slice(6)}>
            {a.data.title}
          </li>
        ))}
      </ol>
    </section>
  );
}
