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
