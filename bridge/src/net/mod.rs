//! The network edge below HTTP: how connections are accepted, guarded against clients that stop
//! reading, capped while they have not yet sent a request, and served until shutdown
//! ([`listener`]), with TLS on top ([`tls`]).

pub mod listener;
pub mod tls;
