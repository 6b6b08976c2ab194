//! Shopify: its Admin GraphQL connector and its webhook (every topic; orders become typed events).
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

/// Its `shopify:sync-*` event types.
pub const SOURCE: Source =
    Source::new("shopify", Payload::ShopifySyncStarted, Payload::ShopifySyncStatus, Payload::ShopifySyncError);

/// Event types its webhook publishes that mean its data changed: each triggers a sync.
pub const NEWS: &[&str] = &["shopify:data-updated", "shopify:order-created", "shopify:order-updated"];

/// Checks its `[shopify]` ingest section; the tenant it syncs for.
pub fn check(section: &toml::Value) -> Result<String, String> {
    Ok(scheduler::section::<ShopifyConfig>("shopify", section)?.tenant)
}

/// Starts its connector (on `cx`'s schedule) from its `[shopify]` section.
pub fn start(section: &toml::Value, cx: &Context) -> Result<scheduler::Tasks, String> {
    let c: ShopifyConfig = scheduler::section("shopify", section)?;
    Ok(vec![cx.run(Shopify::new(c, cx.http()?, cx.state("shopify")))])
}
