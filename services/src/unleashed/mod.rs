//! Unleashed: its REST API connector and its webhook (changed records that trigger a sync).
//! Everything about this platform lives in this folder; it is registered once, in
//! [`crate::platform::ALL`].

pub mod connector;
pub mod webhook;

pub use connector::*;
