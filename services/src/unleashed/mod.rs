//! Unleashed: its REST API connector and its webhook (changed records that trigger a sync).
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

/// Its `unleashed:sync-*` event types.
pub const SOURCE: Source =
    Source::new("unleashed", Payload::UnleashedSyncStarted, Payload::UnleashedSyncStatus, Payload::UnleashedSyncError);

/// Event types its webhook publishes that mean its data changed: each triggers a sync.
pub const NEWS: &[&str] = &["unleashed:data-updated"];

/// Checks its `[unleashed]` ingest section; the tenant it syncs for.
pub fn check(section: &toml::Value) -> Result<String, String> {
    Ok(scheduler::section::<UnleashedConfig>("unleashed", section)?.tenant)
}

/// Starts its connector (on `cx`'s schedule) from its `[unleashed]` section.
pub fn start(section: &toml::Value, cx: &Context) -> Result<scheduler::Tasks, String> {
    let c: UnleashedConfig = scheduler::section("unleashed", section)?;
    Ok(vec![cx.run(Unleashed::new(c, cx.http()?, cx.state("unleashed")))])
}
