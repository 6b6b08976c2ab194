//! Shopify: its Admin GraphQL connector and its webhook (every topic; orders become typed events).
//! Everything about this platform lives in this folder; it is registered once, in
//! [`crate::platform::ALL`].

pub mod connector;
pub mod webhook;

pub use connector::*;
