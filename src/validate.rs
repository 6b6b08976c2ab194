//! Publish-side validation: a raw `Event` from a client becomes an [`Accepted`]
//! event (tenant resolved, type known, channels routed, encoded once) or a
//! [`PublishError`] that names the offending field.

use std::{collections::BTreeSet, sync::Arc};

use prost::Message;

use crate::{
    auth::{AuthError, Principal, Role},
    catalog::{CUSTOM_FIELD, Catalog, Route, is_type_name},
    error::{PublishError, PublishErrorKind as Kind},
    names::{Channel, Tenant},
    proto::v1::{Delivery, Event, event::Payload},
};

/// Limits and configuration validation needs.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Largest encoded event accepted, bytes.
    pub max_event_bytes: usize,
    /// Channels `custom` events may target besides the catalog's own.
    pub custom_channels: BTreeSet<Channel>,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_event_bytes: 64 * 1024, custom_channels: BTreeSet::new() }
    }
}

/// Most channels one event, subscription or read may name: the work a request can ask for is
/// bounded (and each check below is linear in it).
pub const MAX_CHANNELS: usize = 64;

/// Where an event goes and how it is delivered: derived from the payload and key.
#[derive(Debug, Clone)]
pub struct Routing {
    pub type_name: Arc<str>,
    pub delivery: Delivery,
    pub channels: Vec<Channel>,
    /// The state-view slot this event fills, with the event's key: its own type for a
    /// snapshot, the job's progress type for a fact that ends a job, none for other facts.
    pub state: Option<Arc<str>>,
}

impl Routing {
    /// The keyed channels (`jobs/<id>`) it goes to: a job's, whose history and state are the
    /// job's own and go with it.
    pub fn keyed_channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(|c| c.as_str().contains('/'))
    }

    /// Whether this event is a fact that ends a job (its progress must not follow it).
    pub fn ends_job(&self) -> bool {
        self.delivery != Delivery::Snapshot && self.state.is_some()
    }
}

/// Routes an event by the catalog (or by its `custom` payload).
/// With `policy`, custom channels must be configured; without (events read back from the
/// log), the stored channels are trusted: they were checked when published.
pub fn route(event: &Event, policy: Option<&Policy>) -> Result<Routing, PublishError> {
    let payload = event.payload.as_ref().ok_or_else(|| {
        PublishError::invalid(
            Kind::UnknownType,
            "event.payload",
            "no payload set, or a payload type this bus does not know; see docs/events.md",
        )
    })?;
    match payload {
        Payload::Custom(custom) => route_custom(custom, policy),
        _ => route_catalog(event, payload),
    }
}

/// A custom event goes where it says, to channels that are valid and (when publishing)
/// configured.
fn route_custom(custom: &crate::proto::v1::CustomEvent, policy: Option<&Policy>) -> Result<Routing, PublishError> {
    if !is_type_name(&custom.r#type) {
        return Err(PublishError::invalid(
            Kind::InvalidType,
            "event.custom.type",
            "custom type must be 'namespace:name' of a-z, 0-9, '-', '_', '.'",
        ));
    }
    if Catalog::global().by_name(&custom.r#type).is_some() {
        return Err(PublishError::invalid(
            Kind::InvalidType,
            "event.custom.type",
            format!("'{}' is a catalog type; publish its typed payload instead", custom.r#type),
        ));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&custom.json).is_err() {
        return Err(PublishError::invalid(Kind::InvalidJson, "event.custom.json", "must be a JSON document"));
    }
    if custom.channels.is_empty() {
        return Err(PublishError::invalid(Kind::InvalidChannel, "event.custom.channels", "name at least one channel"));
    }
    if custom.channels.len() > MAX_CHANNELS {
        return Err(PublishError::invalid(
            Kind::TooManyChannels,
            "event.custom.channels",
            format!("at most {MAX_CHANNELS} channels per event"),
        ));
    }
    let mut channels = Vec::with_capacity(custom.channels.len());
    for c in &custom.channels {
        let ch =
            Channel::new(c).map_err(|e| PublishError::invalid(Kind::InvalidChannel, "event.custom.channels", e.0))?;
        if policy.is_some_and(|p| !p.custom_channels.contains(&ch) && !Catalog::global().routes_to(&ch)) {
            return Err(PublishError::invalid(
                Kind::UnknownChannel,
                "event.custom.channels",
                format!("channel '{ch}' is not configured (add it to custom_channels)"),
            ));
        }
        if !channels.contains(&ch) {
            channels.push(ch);
        }
    }
    let delivery = match Delivery::try_from(custom.delivery) {
        Ok(Delivery::Snapshot) => Delivery::Snapshot,
        _ => Delivery::Fact,
    };
    let type_name: Arc<str> = custom.r#type.as_str().into();
    let state = (delivery == Delivery::Snapshot).then(|| type_name.clone());
    Ok(Routing { type_name, delivery, channels, state })
}

/// A catalog event goes to its type's routes (keyed ones under the event's key).
fn route_catalog(event: &Event, payload: &Payload) -> Result<Routing, PublishError> {
    let number = payload.field_number();
    debug_assert_ne!(number, CUSTOM_FIELD);
    let spec = Catalog::global().by_field(number).ok_or_else(|| {
        PublishError::invalid(
            Kind::UnknownType,
            "event.payload",
            format!("payload field {number} is not in the catalog"),
        )
    })?;
    let mut channels = Vec::with_capacity(spec.routes.len());
    for r in &spec.routes {
        channels.push(match r {
            Route::Fixed(c) => c.clone(),
            Route::Keyed(base) => {
                if event.key.is_empty() {
                    return Err(PublishError::invalid(
                        Kind::MissingKey,
                        "event.key",
                        format!("{} routes to {base}/{{key}}: set key (e.g. the job id)", spec.name),
                    ));
                }
                Channel::new(&format!("{base}/{}", event.key)).map_err(|_| {
                    PublishError::invalid(
                        Kind::InvalidKey,
                        "event.key",
                        "key must be 1-128 of A-Z, a-z, 0-9, '_', '-', '.', ':' to name a channel",
                    )
                })?
            }
        });
    }
    let state = match (&spec.ends, payload) {
        (_, _) if spec.delivery == Delivery::Snapshot => Some(spec.name.clone()),
        // A stage completing is not the workflow ending.
        (Some(_), Payload::WorkflowCompletion(c)) if !c.r#final => None,
        (ends, _) => ends.clone(),
    };
    Ok(Routing { type_name: spec.name.clone(), delivery: spec.delivery, channels, state })
}

/// A validated event, encoded once and ready for the log.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub tenant: Tenant,
    pub routing: Routing,
    /// The event with `tenant`, `published_at` and `occurred_at` filled; `id` still 0.
    pub event: Event,
    /// `event` encoded without `id`: the log prefixes the id field, so encoding stays off the writer.
    pub body: bytes::Bytes,
    pub idempotency_key: Option<String>,
}

/// Provenance clients can trust: `stream:*` is the server's own control vocabulary (gaps,
/// heartbeats, reconnects), a `webhook:` source means the bridge verified a platform's signature,
/// and a `connector:` source means a system connector computed it. Tenants may not claim them.
fn check_provenance(who: &Principal, event: &Event) -> Result<(), PublishError> {
    if let Some(Payload::Custom(c)) = &event.payload
        && c.r#type.split(':').next() == Some("stream")
    {
        return Err(PublishError::invalid(
            Kind::ReservedType,
            "event.custom.type",
            "'stream:*' types are the server's own control events",
        ));
    }
    // The server's own callers (webhook ingress, a remote bridge, connectors) are system
    // principals: admin for tenant `*`. A tenant's token, even an admin one, is not.
    let system = who.role == Role::Admin && who.tenant == crate::auth::TenantScope::All;
    let platform = event.source.starts_with("webhook:") || event.source.starts_with("connector:");
    if platform && !system {
        return Err(PublishError::invalid(
            Kind::ReservedSource,
            "event.source",
            format!(
                "'{}': webhook: and connector: sources are set only by the server and its connectors",
                event.source
            ),
        ));
    }
    // What the dashboard and console say about a connector's health comes from the connector.
    if let Some(name) = connector_health_type(event)
        && !event.source.starts_with("connector:")
    {
        return Err(PublishError::invalid(
            Kind::ReservedType,
            "event.type",
            format!(
                "'{name}': connector health (`*:sync-status`, `*:sync-error`) is reported only by connectors (source connector:<name>)"
            ),
        ));
    }
    Ok(())
}

/// The type's name when it is a connector's health report (`<source>:sync-status`, the
/// snapshot the dashboard and console show, or `<source>:sync-error`), catalog or custom.
fn connector_health_type(event: &Event) -> Option<&str> {
    let name: &str = match &event.payload {
        Some(Payload::Custom(c)) => &c.r#type,
        Some(p) => &crate::catalog::Catalog::global().by_field(p.field_number())?.name,
        None => return None,
    };
    let (_, kind) = name.split_once(':')?;
    matches!(kind, "sync-status" | "sync-error").then_some(name)
}

/// The key an event is deduplicated by within its tenant: its idempotency key, in one of two
/// scopes. What the server's own callers store (`webhook:` and `connector:` sources, which only
/// system principals may set) shares a scope, so an order that arrives both by webhook and by
/// a connector's poll is stored once; what a tenant publishes is in the other, so a publisher
/// who knows (or guesses) a delivery's key cannot store an event under it first and have the
/// genuine delivery answered as a duplicate.
fn dedupe_key(event: &Event) -> Option<String> {
    let platform = event.source.starts_with("webhook:") || event.source.starts_with("connector:");
    match event.idempotency_key.as_str() {
        "" => None,
        key if platform => Some(format!("platform\u{1f}{key}")),
        key => Some(key.to_owned()),
    }
}

/// Validates one event published by `who`.
pub fn accept(who: &Principal, mut event: Event, policy: &Policy) -> Result<Accepted, PublishError> {
    who.require(Role::Publish)?;
    let tenant = who.resolve_tenant(&event.tenant).map_err(|e| match e {
        AuthError::Invalid(m) => PublishError::invalid(Kind::InvalidTenant, "event.tenant", m),
        other => PublishError::Denied(other),
    })?;
    let Some(tenant) = tenant else {
        return Err(PublishError::invalid(Kind::InvalidTenant, "event.tenant", "name one tenant, not '*'"));
    };
    if event.key.len() > 256 {
        return Err(PublishError::invalid(Kind::InvalidKey, "event.key", "at most 256 bytes"));
    }
    if event.idempotency_key.len() > 256 {
        return Err(PublishError::invalid(Kind::InvalidIdempotencyKey, "event.idempotency_key", "at most 256 bytes"));
    }
    if event.source.len() > 256 {
        return Err(PublishError::invalid(Kind::InvalidSource, "event.source", "at most 256 bytes"));
    }
    if let Some(t) = &event.trace {
        crate::trace::check(t).map_err(|(field, why)| PublishError::invalid(Kind::InvalidTrace, field, why))?;
    }
    check_provenance(who, &event)?;
    let routing = route(&event, Some(policy))?;
    for ch in &routing.channels {
        if !who.allows_channel(ch) {
            return Err(AuthError::Channel(ch.to_string()).into());
        }
    }
    let now = now_timestamp();
    event.id = 0;
    event.tenant = tenant.to_string();
    if event.occurred_at.is_none() {
        event.occurred_at = Some(now);
    }
    event.published_at = Some(now);
    let body = event.encode_to_vec();
    if body.len() > policy.max_event_bytes {
        return Err(PublishError::invalid(
            Kind::PayloadTooLarge,
            "event",
            format!("encoded event is {} bytes; the limit is {}", body.len(), policy.max_event_bytes),
        ));
    }
    let idempotency_key = dedupe_key(&event);
    Ok(Accepted { tenant, routing, event, body: body.into(), idempotency_key })
}

pub fn now_timestamp() -> pbjson_types::Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::{Claims, now_secs},
        proto::v1::{Alert, CustomEvent, JobProgress},
    };

    fn who(tenant: &str, role: Role, channels: &[&str]) -> Principal {
        Principal::from_claims(&Claims {
            sub: None,
            tenant: tenant.into(),
            channels: channels.iter().map(|s| s.to_string()).collect(),
            role,
            exp: now_secs() + 60,
            nbf: None,
            jti: None,
        })
        .unwrap()
    }

    fn alert() -> Event {
        Event {
            payload: Some(Payload::AlertCritical(Alert { title: "t".into(), ..Default::default() })),
            ..Default::default()
        }
    }

    fn field_of(r: Result<Accepted, PublishError>) -> (&'static str, &'static str) {
        let e = r.unwrap_err();
        (e.code(), e.field())
    }

    #[test]
    fn accepts_and_routes() {
        let a = accept(&who("acme", Role::Publish, &[]), alert(), &Policy::default()).unwrap();
        assert_eq!(a.tenant.as_str(), "acme");
        assert_eq!(a.routing.type_name.as_ref(), "alert:critical");
        assert_eq!(a.routing.channels, vec![Channel::new("alerts").unwrap()]);
        assert!(a.event.published_at.is_some());
    }

    #[test]
    fn every_validation_error_names_its_field() {
        let p = Policy::default();
        let acme = who("acme", Role::Publish, &[]);
        assert_eq!(field_of(accept(&acme, Event::default(), &p)), ("unknown_type", "event.payload"));
        let mut e = alert();
        e.tenant = "Bad Tenant".into();
        assert_eq!(accept(&acme, e, &p).unwrap_err().code(), "permission_denied");
        let sys = who("*", Role::Admin, &[]);
        let mut e = alert();
        e.tenant = "Bad Tenant".into();
        assert_eq!(field_of(accept(&sys, e, &p)), ("invalid_tenant", "event.tenant"));
        assert_eq!(field_of(accept(&sys, alert(), &p)), ("invalid_tenant", "event.tenant"));
        let progress = |key: &str| Event {
            key: key.into(),
            payload: Some(Payload::ImportJobProgress(JobProgress::default())),
            ..Default::default()
        };
        assert_eq!(field_of(accept(&acme, progress(""), &p)), ("missing_key", "event.key"));
        assert_eq!(field_of(accept(&acme, progress("a b"), &p)), ("invalid_key", "event.key"));
        let a = accept(&acme, progress("job-1"), &p).unwrap();
        assert_eq!(a.routing.channels, vec![Channel::new("jobs/job-1").unwrap()]);
        let custom = |ty: &str, json: &str, ch: &str| Event {
            payload: Some(Payload::Custom(CustomEvent {
                r#type: ty.into(),
                json: json.into(),
                channels: vec![ch.into()],
                delivery: 0,
            })),
            ..Default::default()
        };
        assert_eq!(
            field_of(accept(&acme, custom("bad", "{}", "dashboard"), &p)),
            ("invalid_type", "event.custom.type")
        );
        assert_eq!(
            field_of(accept(&acme, custom("alert:critical", "{}", "dashboard"), &p)),
            ("invalid_type", "event.custom.type")
        );
        assert_eq!(
            field_of(accept(&acme, custom("acme:x", "{", "dashboard"), &p)),
            ("invalid_json", "event.custom.json")
        );
        assert_eq!(
            field_of(accept(&acme, custom("acme:x", "{}", "Bad!"), &p)),
            ("invalid_channel", "event.custom.channels")
        );
        assert_eq!(
            field_of(accept(&acme, custom("acme:x", "{}", "nowhere"), &p)),
            ("unknown_channel", "event.custom.channels")
        );
        let configured = Policy { custom_channels: [Channel::new("nowhere").unwrap()].into(), ..Policy::default() };
        assert!(accept(&acme, custom("acme:x", "{}", "nowhere"), &configured).is_ok());
        let big = custom("acme:x", &format!("\"{}\"", "x".repeat(70_000)), "dashboard");
        assert_eq!(field_of(accept(&acme, big, &p)), ("payload_too_large", "event"));
    }

    #[test]
    fn roles_tenants_and_channels_are_enforced() {
        let p = Policy::default();
        assert_eq!(accept(&who("acme", Role::Subscribe, &[]), alert(), &p).unwrap_err().code(), "permission_denied");
        let mut e = alert();
        e.tenant = "other".into();
        assert_eq!(accept(&who("acme", Role::Publish, &[]), e, &p).unwrap_err().code(), "permission_denied");
        assert_eq!(
            accept(&who("acme", Role::Publish, &["dashboard"]), alert(), &p).unwrap_err().code(),
            "permission_denied"
        );
    }

    #[test]
    fn stream_types_and_platform_sources_are_reserved() {
        let p = Policy { custom_channels: [Channel::new("ops").unwrap()].into(), ..Policy::default() };
        let custom = |t: &str| Event {
            payload: Some(Payload::Custom(crate::proto::v1::CustomEvent {
                r#type: t.into(),
                json: "{}".into(),
                channels: vec!["ops".into()],
                delivery: 1,
            })),
            ..Default::default()
        };
        let admin = who("acme", Role::Admin, &[]);
        for t in ["stream:gap", "stream:heartbeat", "stream:reconnect", "stream:state"] {
            assert_eq!(field_of(accept(&admin, custom(t), &p)), ("reserved_type", "event.custom.type"), "{t}");
        }
        assert!(accept(&admin, custom("acme:thing"), &p).is_ok());
        let sourced = |s: &str| Event { source: s.into(), ..alert() };
        for s in ["webhook:shopify", "connector:xero"] {
            assert_eq!(field_of(accept(&admin, sourced(s), &p)), ("reserved_source", "event.source"), "{s}");
            let system = Event { tenant: "acme".into(), ..sourced(s) };
            assert!(accept(&who("*", Role::Admin, &[]), system.clone(), &p).is_ok(), "system tokens may: {s}");
            assert!(accept(&Principal::system(), system, &p).is_ok());
        }
        assert!(accept(&admin, sourced("erp:nightly"), &p).is_ok());
        // Connector health is a connector's to report, catalog type or custom.
        let status = crate::json::event_from_json(serde_json::json!({
            "type": "xero:sync-status", "key": "xero", "data": {"ok": true}
        }))
        .unwrap();
        for e in [status.clone(), custom("acme:sync-status"), custom("acme:sync-error")] {
            assert_eq!(field_of(accept(&admin, e, &p)), ("reserved_type", "event.type"));
        }
        let from_connector = Event { tenant: "acme".into(), source: "connector:xero".into(), ..status };
        assert!(accept(&Principal::system(), from_connector, &p).is_ok());
        assert!(accept(&admin, custom("acme:sync-summary"), &p).is_ok(), "only the health kinds");
    }

    #[test]
    fn idempotency_keys_of_the_servers_sources_are_the_servers() {
        let p = Policy::default();
        let acme = who("acme", Role::Publish, &[]);
        let keyed =
            |source: &str| Event { idempotency_key: "shopify-delivery-1".into(), source: source.into(), ..alert() };
        let mine = accept(&acme, keyed(""), &p).unwrap().idempotency_key;
        let hook = Event { tenant: "acme".into(), ..keyed("webhook:shopify") };
        let theirs = accept(&Principal::system(), hook, &p).unwrap().idempotency_key;
        assert_ne!(mine, theirs, "a tenant's key cannot pre-empt a webhook's");
        assert_eq!(mine.as_deref(), Some("shopify-delivery-1"), "a tenant's keys are kept as they are");
        let polled = Event { tenant: "acme".into(), ..keyed("connector:shopify") };
        let polled = accept(&Principal::system(), polled, &p).unwrap().idempotency_key;
        assert_eq!(polled, theirs, "a webhook and a connector dedupe one another");
        let erp = accept(&acme, keyed("erp:nightly"), &p).unwrap().idempotency_key;
        assert_eq!(erp, mine, "a tenant's own sources share its scope");
    }
}
