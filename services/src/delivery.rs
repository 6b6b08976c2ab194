//! One external delivery (a webhook, a queue message) becomes one or more events. They share
//! the delivery's identity: the first event gets the delivery's key, the rest `key#1`, `key#2`…
//! Translation is deterministic, so a redelivery derives the same keys and is stored once —
//! whether it came back through the same route or another.

use switchyard::proto::v1::Event;

/// Sets every event's tenant and its idempotency key derived from `key` (none when `key` is empty).
pub fn stamp(events: &mut [Event], tenant: &str, key: &str) {
    for (i, e) in events.iter_mut().enumerate() {
        e.tenant = tenant.to_owned();
        e.idempotency_key = match (i, key) {
            (_, "") => String::new(),
            (0, k) => k.to_owned(),
            (i, k) => format!("{k}#{i}"),
        };
    }
}
