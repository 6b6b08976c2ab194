//! # switchyard-services: ingestion connectors
//!
//! Each connector polls one platform's real API, computes the figures the dashboards show, and
//! publishes catalog events to the EventBus. Nothing here invents a number: every figure in an
//! event is computed from an upstream response, and a failed call becomes a `*:sync-error`.
//!
//! ## Layout
//! - [`connector`]: the shared shape (a [`connector::Connector`] syncs once inside a
//!   [`connector::Run`]) and [`connector::SyncError`].
//! - [`scheduler`]: runs each connector on its interval with jitter, one sync at a time per
//!   connector, immediately (debounced) when a webhook for its source arrives.
//! - [`jobs`]: a reusable job-progress reporter (`workflow:*` events on `jobs/<run id>`).
//! - [`http`]: the HTTPS client every connector uses: timeouts, 429 with Retry-After, 5xx backoff.
//! - [`sink`]: where events go (the EventBus over gRPC).
//! - [`delivery`]: one external delivery → events sharing its idempotency key.
//! - [`state`]: cursors and tokens persisted per connector, written atomically.
//! - [`money`]: exact decimal sums of platform amounts; [`period`]: today, rolling 24 h and month
//!   to date in the tenant's timezone, the periods every figure is defined over.
//! - [`shopify`], [`xero`], [`amazon`], [`unleashed`]: one folder per platform, with its
//!   connector and its webhook source; [`platform::ALL`] registers them.
//! - [`webhook`]: what a platform's webhook is to the bridge ([`webhook::WebhookSource`]: verify
//!   on raw bytes, translate) and the HMAC helpers every scheme shares.
//! - [`config`]: `switchyard-ingest --config FILE`.

pub mod amazon;
pub mod config;
pub mod connector;
pub mod delivery;
pub mod http;
pub mod jobs;
pub mod money;
pub mod period;
pub mod platform;
pub mod scheduler;
pub mod shopify;
pub mod sink;
pub mod state;
pub mod unleashed;
pub mod webhook;
pub mod xero;
