//! The bus: the one facade the gRPC service, the HTTP bridge, webhook ingress
//! and connectors all call. Validates, appends to the log, opens subscriptions.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::Stream as FutStream;
use tracing::Instrument;

use crate::{
    auth::{AuthError, Principal, Role},
    catalog::Catalog,
    coalesce::DEFAULT_WINDOW,
    error::{PublishError, PublishErrorKind},
    hub::Hub,
    log::{Appended, Log, LogError, Record, StateView, Stream},
    metrics::{Deliveries, Transport},
    names::{Channel, Cursor, EventId, NameError, Tenant, TenantSel},
    proto::v1::Event,
    rate::{Limiter, Rate},
    subscription::{self, Allow, Filter, Item, Lag, Options, Start},
    validate::{self, Policy},
};

/// Stamps `events` with the current trace context when it is sampled, and then returns a
/// `validate` span for them (entered until dropped); unsampled publishes get neither.
fn traced(events: &mut [Event]) -> Option<tracing::span::EnteredSpan> {
    let n = events.len();
    crate::trace::stamp(events.iter_mut()).map(|_| tracing::info_span!("validate", events = n).entered())
}

/// Events a paced (throttled) publish stores at a time.
const PACED_PART: usize = 256;

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub policy: Policy,
    /// Coalescing window for snapshots on live subscriptions.
    pub coalesce_window: Duration,
    /// Each tenant's publish rate (system principals are not limited).
    pub publish_rate: Rate,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { policy: Policy::default(), coalesce_window: DEFAULT_WINDOW, publish_rate: Rate::default() }
    }
}

pub use crate::log::MAX_BATCH;

/// The refusal of a batch past `max` events ([`MAX_BATCH`], or less where the log's atomic
/// batches are smaller: 1,000 on JetStream).
pub fn too_many_events(max: usize) -> PublishError {
    PublishError::invalid(PublishErrorKind::BatchTooLarge, "events", format!("at most {max} events per batch"))
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn Log>,
    hub: Hub,
    config: BusConfig,
    rates: Limiter,
    subscribers: AtomicU64,
    peak: AtomicU64,
    subscribed_total: AtomicU64,
    /// Events refused, by wire code (a fixed set: `PublishErrorKind`).
    rejected: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    deliveries: Deliveries,
}

/// What a subscriber asks for.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// The tenant to read: the token's own, or (system tokens only) another or every one.
    pub tenant: TenantSel,
    /// Channel names; empty means every channel the token allows.
    pub channels: Vec<String>,
    pub start: Start,
    /// Coalesce snapshots on the live part.
    pub coalesce: bool,
    pub on_lag: Lag,
    /// Who serves it, for the counts of open subscriptions.
    pub transport: Transport,
    /// End with `Item::Live` at the live seam (see `subscription::Options::handoff`).
    pub handoff: bool,
}

/// A request's `tenant` field, parsed at the edge: `""` is the token's own, `*` every tenant.
pub fn tenant_sel(requested: &str) -> Result<TenantSel, SubscribeError> {
    TenantSel::parse(requested).map_err(|e: NameError| SubscribeError::Invalid {
        code: "invalid_tenant",
        field: "tenant",
        message: e.to_string(),
    })
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

/// A page of history for the polling API.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Arc<Record>>,
    /// Pass as `after` to get the next page: `N`, or `N~W` while state is still owed.
    pub next: Cursor,
    /// False when history no longer holds every event after the requested id.
    pub complete: bool,
    pub bounds: crate::log::Bounds,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Request(#[from] SubscribeError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Live subscriber counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriberStats {
    pub current: u64,
    pub peak: u64,
    pub total: u64,
}

struct SubscriberGuard {
    inner: Arc<Inner>,
    transport: Transport,
    labels: crate::metrics::Labels,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.inner.deliveries.closed(self.transport, &self.labels);
    }
}

impl Bus {
    pub fn new(log: Arc<dyn Log>, hub: Hub, config: BusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                hub,
                rates: Limiter::new(config.publish_rate),
                config,
                subscribers: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                subscribed_total: AtomicU64::new(0),
                rejected: Default::default(),
                deliveries: Deliveries::default(),
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
        let results = match self.admit(who, events.len()) {
            Err(e) => events.iter().map(|_| Err(e.clone())).collect(),
            Ok(()) => self.store(who, events).await,
        };
        self.count_refused(&results);
        results
    }

    /// Counts the refusals among `results`.
    fn count_refused(&self, results: &[Result<Appended, PublishError>]) {
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            self.rejected(e, 1);
        }
    }

    /// Counts `n` events refused with `e`.
    fn rejected(&self, e: &PublishError, n: usize) {
        if n > 0
            && let Ok(mut m) = self.inner.rejected.lock()
        {
            *m.entry(e.code()).or_default() += n as u64;
        }
    }

    /// Events refused so far, by wire code (`invalid_key`, `rate_limited`, …).
    pub fn rejections(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.inner.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// As [`Bus::publish`], but a tenant over its rate waits for it instead of being refused:
    /// for streams, whose reader then stops pulling, so HTTP/2 flow control slows the sender
    /// instead of it spinning on refusals. A batch that does not fit at once goes in parts of
    /// [`PACED_PART`] as tokens come: a throttled tenant then adds a steady trickle to each group
    /// commit rather than a few large groups that other tenants' publishes would wait behind.
    pub async fn publish_paced(&self, who: &Principal, events: Vec<Event>) -> Vec<Result<Appended, PublishError>> {
        let results = self.paced(who, events).await;
        self.count_refused(&results);
        results
    }

    async fn paced(&self, who: &Principal, events: Vec<Event>) -> Vec<Result<Appended, PublishError>> {
        match self.admit(who, events.len()) {
            Ok(()) => return self.store(who, events).await,
            Err(PublishError::Throttled(_)) => {}
            Err(e) => return events.iter().map(|_| Err(e.clone())).collect(),
        }
        let part = PACED_PART.min(self.inner.config.publish_rate.burst as usize).max(1);
        let mut results = Vec::with_capacity(events.len());
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<Event> = events.by_ref().take(part).collect();
            while let Err(e) = self.admit(who, chunk.len()) {
                match e {
                    PublishError::Throttled(wait) => tokio::time::sleep(wait).await,
                    e => {
                        let left = chunk.len() + events.count();
                        results.extend((0..left).map(|_| Err(e.clone())));
                        return results;
                    }
                }
            }
            results.extend(self.store(who, chunk).await);
        }
        results
    }

    async fn store(&self, who: &Principal, mut events: Vec<Event>) -> Vec<Result<Appended, PublishError>> {
        let validating = traced(&mut events);
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
        drop(validating);
        let span = tracing::info_span!("commit", events = results.len(), accepted = accepted.len());
        let appended = if accepted.is_empty() {
            Ok(Vec::new())
        } else {
            self.inner.log.append_each(accepted).instrument(span).await
        };
        match appended {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| ids.next().ok_or(PublishError::Unavailable("lost ack".into()))))
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "append failed");
                results.into_iter().map(|r| r.unwrap_or_else(|| Err(e.clone().into()))).collect()
            }
        }
    }

    /// All or nothing: validates every event first; stores them in one append only if all
    /// are valid. The error carries the index of the first bad event. At most [`MAX_BATCH`].
    pub async fn publish_all(
        &self,
        who: &Principal,
        events: Vec<Event>,
    ) -> Result<Vec<Appended>, (usize, PublishError)> {
        let n = events.len();
        let result = self.all(who, events).await;
        if let Err((_, e)) = &result {
            self.rejected(e, n);
        }
        result
    }

    async fn all(&self, who: &Principal, events: Vec<Event>) -> Result<Vec<Appended>, (usize, PublishError)> {
        let max = self.inner.log.max_batch().min(MAX_BATCH);
        if events.len() > max {
            return Err((max, too_many_events(max)));
        }
        self.admit(who, events.len()).map_err(|e| (0, e))?;
        let mut events = events;
        let validating = traced(&mut events);
        let mut accepted = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            accepted.push(validate::accept(who, event, &self.inner.config.policy).map_err(|e| (i, e))?);
        }
        drop(validating);
        if accepted.is_empty() {
            return Ok(Vec::new());
        }
        let span = tracing::info_span!("commit", events = accepted.len(), accepted = accepted.len());
        self.inner.log.append(accepted).instrument(span).await.map_err(|e| (0, e.into()))
    }

    /// Whether `who`'s tenant may publish `n` more events now.
    fn admit(&self, who: &Principal, n: usize) -> Result<(), PublishError> {
        match &who.tenant {
            crate::auth::TenantScope::One(t) => self.inner.rates.take(t, n).map_err(PublishError::Throttled),
            crate::auth::TenantScope::All => Ok(()),
        }
    }

    pub async fn publish_one(&self, who: &Principal, event: Event) -> Result<Appended, PublishError> {
        self.publish(who, vec![event]).await.pop().unwrap_or(Err(PublishError::Unavailable("no result".into())))
    }

    /// Whether a channel exists for subscribers: a catalog channel (incl. any `jobs/<id>`) or a configured custom one.
    pub fn channel_known(&self, channel: &Channel) -> bool {
        Catalog::global().routes_to(channel) || self.inner.config.policy.custom_channels.contains(channel)
    }

    /// Resolves what a subscriber or poller may read: tenant from the token, channels
    /// checked against the catalog and the token's globs.
    fn resolve(&self, who: &Principal, tenant: &TenantSel, channels: &[String]) -> Result<Filter, SubscribeError> {
        who.require(Role::Subscribe)?;
        let tenant: Option<Tenant> = who.select_tenant(tenant).map_err(|e| match e {
            AuthError::Invalid(m) => SubscribeError::Invalid { code: "invalid_tenant", field: "tenant", message: m },
            other => SubscribeError::Denied(other),
        })?;
        if channels.len() > validate::MAX_CHANNELS {
            return Err(SubscribeError::Invalid {
                code: "too_many_channels",
                field: "channels",
                message: format!("at most {} channels per subscription", validate::MAX_CHANNELS),
            });
        }
        let mut wanted = Vec::with_capacity(channels.len());
        for c in channels {
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
            if !wanted.contains(&ch) {
                wanted.push(ch);
            }
        }
        let (stream, ring, channels) = match (tenant, wanted.len()) {
            // One job's channel: its own history index, but the tenant's ring (see `Filter::ring`).
            (Some(t), 1) if wanted[0].as_str().contains('/') => {
                (Stream::Channel(t.clone(), wanted[0].clone()), Stream::Tenant(t), Some(wanted))
            }
            (Some(t), 1) => {
                let s = Stream::Channel(t, wanted.remove(0));
                (s.clone(), s, None)
            }
            (Some(t), 0) => (Stream::Tenant(t.clone()), Stream::Tenant(t), None),
            (Some(t), _) => (Stream::Tenant(t.clone()), Stream::Tenant(t), Some(wanted)),
            (None, 0) => (Stream::All, Stream::All, None),
            (None, _) => (Stream::All, Stream::All, Some(wanted)),
        };
        let allow: Option<Allow> = who.channel_limited().then(|| {
            let who = who.clone();
            Arc::new(move |r: &Record| r.routing.channels.iter().any(|c| who.allows_channel(c))) as Allow
        });
        Ok(Filter { stream, ring, channels, allow })
    }

    /// Opens a subscription. Errors are the caller's (bad channel, not allowed); the stream's
    /// own errors are the log's.
    pub fn subscribe(
        &self,
        who: &Principal,
        spec: SubscribeSpec,
    ) -> Result<impl FutStream<Item = Result<Item, LogError>> + Send + 'static, SubscribeError> {
        let filter = self.resolve(who, &spec.tenant, &spec.channels)?;
        let options = Options {
            start: spec.start,
            coalesce: spec.coalesce.then_some(self.inner.config.coalesce_window),
            on_lag: spec.on_lag,
            handoff: spec.handoff,
        };
        let now = self.inner.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.peak.fetch_max(now, Ordering::Relaxed);
        self.inner.subscribed_total.fetch_add(1, Ordering::Relaxed);
        let labels = self.inner.deliveries.opened(spec.transport, &spec.channels);
        let guard = SubscriberGuard { inner: self.inner.clone(), transport: spec.transport, labels };
        Ok(subscription::subscribe(self.inner.log.clone(), &self.inner.hub, filter, options, Box::new(guard)))
    }

    /// The current state the token may see in `channels`: the latest event of every state
    /// slot, in id order, and the id it is consistent with.
    pub async fn state(
        &self,
        who: &Principal,
        tenant: &TenantSel,
        channels: &[String],
    ) -> Result<StateView, ReadError> {
        let filter = self.resolve(who, tenant, channels)?;
        let mut view = self.inner.log.state(filter.stream.clone(), EventId::ZERO).await?;
        view.records.retain(|r| filter.wants(r));
        Ok(view)
    }

    /// One page of the state (see [`crate::log::StatePage`]): `as_of` from the walk's first page.
    pub async fn state_page(
        &self,
        who: &Principal,
        tenant: &TenantSel,
        channels: &[String],
        (after, as_of): (Option<String>, Option<EventId>),
        limit: usize,
    ) -> Result<crate::log::StatePage, ReadError> {
        let filter = self.resolve(who, tenant, channels)?;
        let mut page = self.inner.log.state_page(filter.stream.clone(), after, as_of, limit).await?;
        page.records.retain(|r| filter.wants(r));
        Ok(page)
    }

    /// One page of history after `after` (the polling API). Reads at most a few
    /// pages of the underlying stream to fill `limit` after channel filtering. A cursor that
    /// owes state (`N~W`, from a coalescing stream) gets those slots' current events first, over
    /// as many pages as they take: nothing it owes is dropped for `limit`.
    pub async fn read(
        &self,
        who: &Principal,
        tenant: &TenantSel,
        channels: &[String],
        from: Cursor,
        limit: usize,
    ) -> Result<Page, ReadError> {
        let filter = self.resolve(who, tenant, channels)?;
        let after = from.after;
        let bounds = self.inner.log.bounds(filter.stream.clone()).await?;
        let complete = bounds.complete_after(after);
        let mut cursor = after.max(bounds.trimmed_through);
        let mut events = Vec::new();
        if let Some(w) = from.state_after {
            let owed = self.inner.log.state(filter.stream.clone(), w).await?;
            events.extend(owed.records.into_iter().filter(|r| r.id <= after && filter.wants(r)));
            // More owed than fits: this page is owed state only (in id order), and its cursor
            // still owes what is after the last one given.
            if events.len() > limit {
                events.truncate(limit);
                let next = Cursor::owing(after, Some(events.last().map_or(w, |r| r.id)));
                return Ok(Page { events, next, complete, bounds });
            }
        }
        for _ in 0..if limit == 0 { 0 } else { 8 } {
            let page = self.inner.log.read(filter.stream.clone(), cursor, limit).await?;
            let Some(last) = page.last().map(|r| r.id) else {
                break;
            };
            for r in page {
                if events.len() == limit {
                    break;
                }
                cursor = r.id;
                if filter.wants(&r) {
                    events.push(r);
                }
            }
            if events.len() == limit || cursor < last {
                break;
            }
        }
        // Nothing read, nothing passed: a bounds-only request (limit 0) answers where it started.
        let next = Cursor::at(if limit == 0 { after } else { cursor.max(after) });
        Ok(Page { events, next, complete, bounds })
    }

    /// Delivery lag and open subscriptions by transport and channel.
    pub fn deliveries(&self) -> &Deliveries {
        &self.inner.deliveries
    }

    pub fn subscribers(&self) -> SubscriberStats {
        SubscriberStats {
            current: self.inner.subscribers.load(Ordering::Relaxed),
            peak: self.inner.peak.load(Ordering::Relaxed),
            total: self.inner.subscribed_total.load(Ordering::Relaxed),
        }
    }
}

/// A log failure as the publisher sees it: a quota names its field; anything else is retryable.
impl From<LogError> for PublishError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Quota { field, message } => PublishError::Quota { field, message },
            e => PublishError::Unavailable(e.to_string()),
        }
    }
}
