// Must NOT compile: a field the Order payload does not have.
import { Switchyard } from '../../../bridge/assets/client.js';

new Switchyard().on('shopify:order-created', (e) => e.data.totl?.amount);
