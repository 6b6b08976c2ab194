//! Amazon: its Selling Partner API connector, SP-API notifications from SQS ([`sqs`]) or SNS
//! webhooks ([`webhook`], verified by [`sns`]), both translated by [`notification`].
//! Everything about this platform lives in this folder; it is registered once, in
//! [`crate::platform::ALL`].

pub mod connector;
pub mod notification;
pub mod sns;
pub mod sqs;
pub mod webhook;

pub use connector::*;

use switchyard::proto::v1::event::Payload;

use crate::{
    connector::Source,
    scheduler::{self, Context},
};

/// Its `amazon:sync-*` event types.
pub const SOURCE: Source =
    Source::new("amazon", Payload::AmazonSyncStarted, Payload::AmazonSyncStatus, Payload::AmazonSyncError);

/// Event types its webhook publishes that mean its data changed: each triggers a sync.
pub const NEWS: &[&str] = &["amazon:data-updated", "amazon:order-created", "amazon:order-updated"];

/// Checks its `[amazon]` ingest section; the tenant it syncs for.
pub fn check(section: &toml::Value) -> Result<String, String> {
    Ok(scheduler::section::<AmazonConfig>("amazon", section)?.tenant)
}

/// Starts its connector (on `cx`'s schedule) from its `[amazon]` section.
pub fn start(section: &toml::Value, cx: &Context) -> Result<scheduler::Tasks, String> {
    let c: AmazonConfig = scheduler::section("amazon", section)?;
    let mut tasks = Vec::new();
    if let Some(q) = &c.sqs {
        let poller = sqs::Poller::new(q.clone(), cx.http()?, &c.tenant, c.reorder_point);
        tasks.push(sqs::spawn(poller, cx.sink.clone(), cx.trigger.clone(), cx.stop.clone()));
    }
    tasks.push(cx.run(Amazon::new(c, cx.http()?, cx.state("amazon"))));
    Ok(tasks)
}
