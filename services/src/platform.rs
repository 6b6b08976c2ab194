//! The platforms Switchyard knows, in one list. A platform is one folder (`shopify/`, ...) with
//! its connector and its webhook; this list is where it is registered, and everything that
//! serves platforms generically (the webhook route and handler, config sections, the OpenAPI
//! document) reads it.

use std::sync::Arc;

use crate::{
    amazon, shopify, unleashed,
    webhook::{ConfigError, Doc, Env, WebhookSource},
    xero,
};

/// One platform.
pub struct Platform {
    /// Its name in paths (`/api/webhooks/<name>`), config sections and event types (`<name>:*`).
    pub name: &'static str,
    pub webhook: Webhook,
}

/// A platform's webhook: how it is described, and how its `[webhooks.<name>]` section
/// becomes a [`WebhookSource`].
pub struct Webhook {
    pub doc: Doc,
    pub build: BuildWebhook,
}

/// Reads `[webhooks.<name>]` into the platform's configured source.
pub type BuildWebhook = fn(&toml::Value, &Env) -> Result<Arc<dyn WebhookSource>, ConfigError>;

/// Every platform. Adding one: a folder like `shopify/`, and a line here.
pub const ALL: &[Platform] = &[
    Platform { name: "shopify", webhook: Webhook { doc: shopify::webhook::DOC, build: shopify::webhook::build } },
    Platform { name: "xero", webhook: Webhook { doc: xero::webhook::DOC, build: xero::webhook::build } },
    Platform { name: "unleashed", webhook: Webhook { doc: unleashed::webhook::DOC, build: unleashed::webhook::build } },
    Platform { name: "amazon", webhook: Webhook { doc: amazon::webhook::DOC, build: amazon::webhook::build } },
];

/// The platform named `name`.
pub fn get(name: &str) -> Option<&'static Platform> {
    ALL.iter().find(|p| p.name == name)
}
