//! Per-tenant publish rate limits: a token bucket per tenant, so one tenant flooding the bus
//! gets 429s (with how long to wait) instead of filling the log writer's queue for everyone.
//! System principals (bridges, connectors, webhook ingress: tenant `*`) are not limited here;
//! what they publish is limited where it enters (webhook bodies, connector schedules).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::names::Tenant;

/// Events per second a tenant may publish, sustained, and the burst it may use at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Default for Rate {
    fn default() -> Self {
        Self { per_sec: 50_000.0, burst: 100_000.0 }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are created on a tenant's first publish and dropped once full again (idle), so
/// memory follows the tenants that are publishing.
pub struct Limiter {
    rate: Rate,
    // std Mutex: held only to update one bucket, never across an await.
    buckets: Mutex<HashMap<Tenant, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `n` events' worth for `tenant`, or says how long until they would be available.
    pub fn take(&self, tenant: &Tenant, n: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let (rate, n) = (self.rate, n as f64);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 1024 {
            // Full buckets are idle tenants: forget them.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_sec < rate.burst);
        }
        let b = buckets.entry(tenant.clone()).or_insert(Bucket { tokens: rate.burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_sec).min(rate.burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            // A batch bigger than the burst can never pass: the wait says so.
            let missing = if n > rate.burst { n } else { n - b.tokens };
            Err(Duration::from_secs_f64(missing / rate.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_its_rate_waits_and_others_do_not() {
        let l = Limiter::new(Rate { per_sec: 100.0, burst: 10.0 });
        let (acme, globex) = (Tenant::new("acme").unwrap(), Tenant::new("globex").unwrap());
        assert!(l.take(&acme, 10).is_ok());
        let wait = l.take(&acme, 5).unwrap_err();
        assert!(wait > Duration::from_millis(40) && wait <= Duration::from_millis(50), "{wait:?}");
        assert!(l.take(&globex, 10).is_ok(), "another tenant is not affected");
        assert!(l.take(&acme, 11).unwrap_err() >= Duration::from_millis(110), "more than the burst never fits");
    }
}
