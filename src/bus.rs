//! The bus: the one facade the gRPC service, the HTTP bridge, webhook ingress
//! and connectors all call. Validates, appends to the log, opens subscriptions.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{Stream as FutStream, StreamExt};
use tracing::Instrument;

use crate::{
    auth::{AuthError, Principal, Role},
    catalog::Catalog,
    coalesce::DEFAULT_WINDOW,
    hub::Hub,
    log::{Appended, Log, LogError, Record, Stream},
    names::{Channel, EventId, Tenant},
    proto::v1::Event,
    subscription::{self, Filter, Item, Options},
    validate::{self, Policy, PublishError},
};

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub policy: Policy,
    /// Coalescing window for snapshots on live subscriptions.
    pub coalesce_window: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { policy: Policy::default(), coalesce_window: DEFAULT_WINDOW }
    }
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn Log>,
    hub: Hub,
    config: BusConfig,
    subscribers: AtomicU64,
    peak: AtomicU64,
    subscribed_total: AtomicU64,
}

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub struct SubscribeSpec {
    /// Requested tenant; empty means the token's. Only `*`-tenant admin tokens may name another, or `*`.
    pub tenant: String,
    /// Channel names; empty means every channel the token allows.
    pub channels: Vec<String>,
    pub from: Option<EventId>,
    /// Coalesce snapshots on the live part.
    pub coalesce: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("{field}: {message}")]
    Invalid { code: &'static str, field: &'static str, message: String },
    #[error("unknown channel '{0}'")]
    UnknownChannel(String),
    #[error("{0}")]
    Denied(#[from] AuthError),
}

/// Live subscriber counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriberStats {
    pub current: u64,
    pub peak: u64,
    pub total: u64,
}

struct SubscriberGuard(Arc<Inner>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bus {
    pub fn new(log: Arc<dyn Log>, hub: Hub, config: BusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                hub,
                config,
                subscribers: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                subscribed_total: AtomicU64::new(0),
            }),
        }
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.inner.log
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Validates and appends `events` as one group; one result per event, in order.
    /// Valid events are stored even when others in the batch are refused.
    pub async fn publish(&self, who: &Principal, events: Vec<Event>) -> Vec<Result<Appended, PublishError>> {
        let mut results: Vec<Option<Result<Appended, PublishError>>> = Vec::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        for event in events {
            match validate::accept(who, event, &self.inner.config.policy) {
                Ok(a) => {
                    accepted.push(a);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let span = tracing::debug_span!("append", events = results.len(), accepted = accepted.len());
        let appended =
            if accepted.is_empty() { Ok(Vec::new()) } else { self.inner.log.append(accepted).instrument(span).await };
        match appended {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                results.into_iter().map(|r| r.unwrap_or_else(|| ids.next().ok_or(PublishError::Unavailable("lost ack".into())))).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "append failed");
                results.into_iter().map(|r| r.unwrap_or_else(|| Err(e.clone().into()))).collect()
            }
        }
    }

    pub async fn publish_one(&self, who: &Principal, event: Event) -> Result<Appended, PublishError> {
        self.publish(who, vec![event]).await.pop().unwrap_or(Err(PublishError::Unavailable("no result".into())))
    }

    /// Whether a channel exists for subscribers: a catalog channel (incl. any `jobs/<id>`) or a configured custom one.
    pub fn channel_known(&self, channel: &Channel) -> bool {
        Catalog::global().routes_to(channel) || self.inner.config.policy.custom_channels.contains(channel)
    }

    /// Opens a subscription. Errors are the caller's (bad channel, not allowed); the stream's
    /// own errors are the log's.
    pub fn subscribe(
        &self,
        who: &Principal,
        spec: SubscribeSpec,
    ) -> Result<impl FutStream<Item = Result<Item, LogError>> + Send + 'static, SubscribeError> {
        who.require(Role::Subscribe)?;
        let tenant: Option<Tenant> = who.resolve_tenant(&spec.tenant).map_err(|e| match e {
            AuthError::Invalid(m) => SubscribeError::Invalid { code: "invalid_tenant", field: "tenant", message: m },
            other => SubscribeError::Denied(other),
        })?;
        let mut channels = Vec::with_capacity(spec.channels.len());
        for c in &spec.channels {
            let ch = Channel::new(c).map_err(|e| SubscribeError::Invalid {
                code: "invalid_channel",
                field: "channels",
                message: format!("'{c}': {e}"),
            })?;
            if !self.channel_known(&ch) {
                return Err(SubscribeError::UnknownChannel(ch.to_string()));
            }
            if !who.allows_channel(&ch) {
                return Err(AuthError::Channel(ch.to_string()).into());
            }
            if !channels.contains(&ch) {
                channels.push(ch);
            }
        }
        let (stream, filter_channels) = match (tenant, channels.len()) {
            (Some(t), 1) => (Stream::Channel(t, channels.remove(0)), None),
            (Some(t), 0) => (Stream::Tenant(t), None),
            (Some(t), _) => (Stream::Tenant(t), Some(channels)),
            (None, 0) => (Stream::All, None),
            (None, _) => (Stream::All, Some(channels)),
        };
        let allow: Option<Arc<dyn Fn(&Record) -> bool + Send + Sync>> = who.channel_limited().then(|| {
            let who = who.clone();
            Arc::new(move |r: &Record| r.routing.channels.iter().any(|c| who.allows_channel(c)))
                as Arc<dyn Fn(&Record) -> bool + Send + Sync>
        });
        let filter = Filter { stream, channels: filter_channels, allow };
        let options = Options { from: spec.from, coalesce: spec.coalesce.then_some(self.inner.config.coalesce_window) };
        let now = self.inner.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.peak.fetch_max(now, Ordering::Relaxed);
        self.inner.subscribed_total.fetch_add(1, Ordering::Relaxed);
        let guard = SubscriberGuard(self.inner.clone());
        let items = subscription::subscribe(self.inner.log.clone(), &self.inner.hub, filter, options);
        Ok(items.map(move |item| {
            let _alive = &guard;
            item
        }))
    }

    pub fn subscribers(&self) -> SubscriberStats {
        SubscriberStats {
            current: self.inner.subscribers.load(Ordering::Relaxed),
            peak: self.inner.peak.load(Ordering::Relaxed),
            total: self.inner.subscribed_total.load(Ordering::Relaxed),
        }
    }
}
