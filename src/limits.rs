//! Caps on open streaming subscriptions: in total, per tenant, per token, shared by every
//! transport (SSE, polling's streams, gRPC `Subscribe`), so a token cannot step around its SSE
//! cap by opening gRPC streams instead. A [`Slot`] holds one subscription's place and frees it
//! on drop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_tenant: usize,
    pub per_token: usize,
}

/// What holds a place. Both count against the tenant and token caps; the total cap and the
/// connection figures (`/metrics`' `switchyard_sse_connections`, status) are SSE connections'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Grpc,
}

/// Which cap a new subscription would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the server is at its connection limit")]
    Total,
    #[error("tenant '{0}' is at its connection limit")]
    Tenant(String),
    #[error("this token is at its connection limit")]
    Token,
}

#[derive(Debug, Default)]
struct Counts {
    /// SSE connections: now, at most, ever; and now by tenant.
    total: usize,
    peak: usize,
    opened: u64,
    sse_tenants: HashMap<String, usize>,
    /// Every kind's places, for the caps.
    tenants: HashMap<String, usize>,
    tokens: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Limits {
    caps: Caps,
    // std Mutex: a few integer updates per connect/disconnect, never held across await.
    counts: Arc<Mutex<Counts>>,
}

/// Connection numbers for status pages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionStats {
    pub current: usize,
    pub peak: usize,
    pub total: u64,
    pub by_tenant: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    kind: Kind,
    tenant: String,
    token: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.kind == Kind::Sse {
            c.total = c.total.saturating_sub(1);
            dec(&mut c.sse_tenants, &self.tenant);
        }
        dec(&mut c.tenants, &self.tenant);
        dec(&mut c.tokens, &self.token);
    }
}

fn dec(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Limits {
    pub fn new(caps: Caps) -> Self {
        Self { caps, counts: Arc::default() }
    }

    pub fn acquire(&self, kind: Kind, tenant: &str, token: &str) -> Result<Slot, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if kind == Kind::Sse && c.total >= self.caps.total {
            return Err(LimitError::Total);
        }
        if c.tenants.get(tenant).copied().unwrap_or(0) >= self.caps.per_tenant {
            return Err(LimitError::Tenant(tenant.to_owned()));
        }
        if c.tokens.get(token).copied().unwrap_or(0) >= self.caps.per_token {
            return Err(LimitError::Token);
        }
        if kind == Kind::Sse {
            c.total += 1;
            c.peak = c.peak.max(c.total);
            c.opened += 1;
            *c.sse_tenants.entry(tenant.to_owned()).or_default() += 1;
        }
        *c.tenants.entry(tenant.to_owned()).or_default() += 1;
        *c.tokens.entry(token.to_owned()).or_default() += 1;
        Ok(Slot { counts: self.counts.clone(), kind, tenant: tenant.to_owned(), token: token.to_owned() })
    }

    /// SSE connections (gRPC subscriptions are counted by the bus, per transport).
    pub fn stats(&self) -> ConnectionStats {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        ConnectionStats { current: c.total, peak: c.peak, total: c.opened, by_tenant: c.sse_tenants.clone() }
    }

    /// Places every kind holds for `tenant`.
    pub fn held_by(&self, tenant: &str) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).tenants.get(tenant).copied().unwrap_or(0)
    }
}

impl Default for Limits {
    /// Roomy caps for in-process and test servers.
    fn default() -> Self {
        Self::new(Caps { total: 19_000, per_tenant: 10_000, per_token: 64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let l = Limits::new(Caps { total: 3, per_tenant: 2, per_token: 1 });
        let a = l.acquire(Kind::Sse, "t1", "k1").unwrap();
        assert_eq!(l.acquire(Kind::Grpc, "t1", "k1").unwrap_err(), LimitError::Token, "shared by kinds");
        let _b = l.acquire(Kind::Sse, "t1", "k2").unwrap();
        assert_eq!(l.acquire(Kind::Sse, "t1", "k3").unwrap_err(), LimitError::Tenant("t1".into()), "tenant cap");
        let _c = l.acquire(Kind::Sse, "t2", "k4").unwrap();
        assert_eq!(l.acquire(Kind::Sse, "t3", "k5").unwrap_err(), LimitError::Total, "total cap");
        let grpc = l.acquire(Kind::Grpc, "t3", "k6").expect("the total is SSE connections'");
        assert_eq!((l.stats().current, l.held_by("t3")), (3, 1));
        drop((a, grpc));
        assert!(l.acquire(Kind::Sse, "t3", "k5").is_ok());
        assert_eq!(l.stats().peak, 3);
    }
}
