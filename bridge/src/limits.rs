//! Connection limits for streaming clients: in total, per tenant, per token.
//! A [`Slot`] holds one connection's place and frees it on drop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_tenant: usize,
    pub per_token: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    peak: usize,
    opened: u64,
    tenants: HashMap<String, usize>,
    tokens: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Limits {
    caps: Caps,
    // std Mutex: a few integer updates per connect/disconnect, never held across await.
    counts: Arc<Mutex<Counts>>,
}

/// Connection numbers for `/api/sse/status`.
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
    tenant: String,
    token: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
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

    pub fn acquire(&self, tenant: &str, token: &str) -> Result<Slot, ApiError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.caps.total {
            return Err(ApiError::too_many("the server is at its connection limit", 5));
        }
        if c.tenants.get(tenant).copied().unwrap_or(0) >= self.caps.per_tenant {
            return Err(ApiError::too_many(format!("tenant '{tenant}' is at its connection limit"), 5));
        }
        if c.tokens.get(token).copied().unwrap_or(0) >= self.caps.per_token {
            return Err(ApiError::too_many("this token is at its connection limit", 5));
        }
        c.total += 1;
        c.peak = c.peak.max(c.total);
        c.opened += 1;
        *c.tenants.entry(tenant.to_owned()).or_default() += 1;
        *c.tokens.entry(token.to_owned()).or_default() += 1;
        Ok(Slot { counts: self.counts.clone(), tenant: tenant.to_owned(), token: token.to_owned() })
    }

    pub fn stats(&self) -> ConnectionStats {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        ConnectionStats { current: c.total, peak: c.peak, total: c.opened, by_tenant: c.tenants.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let l = Limits::new(Caps { total: 3, per_tenant: 2, per_token: 1 });
        let a = l.acquire("t1", "k1").unwrap();
        assert_eq!(l.acquire("t1", "k1").unwrap_err().status, 429);
        let _b = l.acquire("t1", "k2").unwrap();
        assert!(l.acquire("t1", "k3").is_err(), "tenant cap");
        let _c = l.acquire("t2", "k4").unwrap();
        assert!(l.acquire("t3", "k5").is_err(), "total cap");
        drop(a);
        assert!(l.acquire("t3", "k5").is_ok());
        assert_eq!(l.stats().peak, 3);
    }
}
