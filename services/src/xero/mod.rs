//! Xero: its Accounting API connector and its webhook (thin change notices that trigger a sync).
//! Everything about this platform lives in this folder; it is registered once, in
//! [`crate::platform::ALL`].

pub mod connector;
pub mod webhook;

pub use connector::*;

use switchyard::proto::v1::event::Payload;

use crate::{
    connector::Source,
    scheduler::{self, Context},
};

/// Its `xero:sync-*` event types.
pub const SOURCE: Source =
    Source::new("xero", Payload::XeroSyncStarted, Payload::XeroSyncStatus, Payload::XeroSyncError);

/// Event types its webhook publishes that mean its data changed: each triggers a sync.
pub const NEWS: &[&str] = &["xero:data-updated"];

/// Checks its `[xero]` ingest section; the tenant it syncs for.
pub fn check(section: &toml::Value) -> Result<String, String> {
    Ok(scheduler::section::<XeroConfig>("xero", section)?.tenant)
}

/// Starts its connector (on `cx`'s schedule) from its `[xero]` section.
pub fn start(section: &toml::Value, cx: &Context) -> Result<scheduler::Tasks, String> {
    let c: XeroConfig = scheduler::section("xero", section)?;
    Ok(vec![cx.run(Xero::new(c, cx.http()?, cx.state("xero")))])
}
