//! The platforms Switchyard knows, in one list. A platform is one folder (`shopify/`, ...) with
//! its connector and its webhook; this list is where it is registered, and everything that
//! serves platforms generically (the webhook route and handler, config sections, the OpenAPI
//! document) reads it.

use std::sync::Arc;

use crate::{
    amazon,
    connector::Source,
    scheduler::{Context, Tasks},
    shopify, unleashed,
    webhook::{ConfigError, Doc, Env, Imitation, WebhookSource},
    xero,
};

/// A platform folder's registration: its `SOURCE`, `NEWS`, `check`, `start` and
/// `webhook::{DOC, build, IMITATION}`.
macro_rules! platform {
    ($p:ident) => {
        Platform {
            name: $p::SOURCE.name(),
            source: $p::SOURCE,
            news: $p::NEWS,
            connector: ConnectorEntry { check: $p::check, start: $p::start },
            webhook: Webhook { doc: $p::webhook::DOC, build: $p::webhook::build, imitation: $p::webhook::IMITATION },
        }
    };
}

/// One platform.
pub struct Platform {
    /// Its name in paths (`/api/webhooks/<name>`), config sections (`[<name>]` for ingest,
    /// `[webhooks.<name>]`) and event types (`<name>:*`).
    pub name: &'static str,
    /// Its `<name>:sync-*` event types.
    pub source: Source,
    /// Event types its webhook publishes that mean its data changed (each triggers a sync).
    pub news: &'static [&'static str],
    pub connector: ConnectorEntry,
    pub webhook: Webhook,
}

/// A platform's connector, from its `[<name>]` ingest section.
pub struct ConnectorEntry {
    /// Checks the section (before anything starts); the tenant it syncs for.
    pub check: fn(&toml::Value) -> Result<String, String>,
    /// Starts it: its tasks, stopped by `Context::stop`.
    pub start: fn(&toml::Value, &Context) -> Result<Tasks, String>,
}

/// A platform's webhook: how it is described, and how its `[webhooks.<name>]` section
/// becomes a [`WebhookSource`].
pub struct Webhook {
    pub doc: Doc,
    pub build: BuildWebhook,
    /// For `switchyard webhook sign|send`; `None` where only the platform can sign (SNS).
    pub imitation: Option<Imitation>,
}

/// Reads `[webhooks.<name>]` into the platform's configured source.
pub type BuildWebhook = fn(&toml::Value, &Env) -> Result<Arc<dyn WebhookSource>, ConfigError>;

/// Every platform, registered by the folder that is all of it. Adding one: a folder like
/// `shopify/`, its `pub mod` in lib.rs, and its line here.
pub const ALL: &[Platform] = &[platform!(shopify), platform!(xero), platform!(unleashed), platform!(amazon)];

/// The platform named `name`.
pub fn get(name: &str) -> Option<&'static Platform> {
    ALL.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use switchyard::catalog::Catalog;

    /// News types are matched by name against committed events: a misspelt one would never
    /// trigger a sync, silently. Each must be a catalog type of its own platform.
    #[test]
    fn every_platforms_news_is_a_catalog_type_of_that_platform() {
        for p in super::ALL.iter() {
            for name in p.news {
                assert!(Catalog::global().by_name(name).is_some(), "{}: {name} is not in the catalog", p.name);
                assert!(name.starts_with(&format!("{}:", p.name)), "{}: {name} is another platform's", p.name);
            }
        }
    }
}
