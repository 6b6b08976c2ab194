// Compiles under --strict against the generated bridge/assets/client.d.ts: payloads are typed per event.
import { Switchyard } from '../../../bridge/assets/client.js';

const sy = new Switchyard({ channels: ['dashboard'], start: 'state' });
sy.on('shopify:order-created', (e) => {
  const amount: string | undefined = e.data.total?.amount;
  const key: string | undefined = e.key;
  const type: 'shopify:order-created' = e.type;
  return [amount, key, type];
});
sy.on('xero:sync-completed', (e) => e.data.workingCapital?.currency);
sy.on('workflow:completion', (e) => (e.data.final ? e.data.stage : undefined));
sy.on('acme:custom-thing', (e) => e.data);
sy.onStateEnd(({ asOf }) => asOf.length);
