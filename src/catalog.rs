//! The event catalog: every typed event's wire name, routes and delivery kind.
//!
//! The catalog is declared once, as `(switchyard.v1.event)` options on the
//! `Event.payload` fields in proto/switchyard/v1/events.proto, and read here
//! from the compiled descriptor. Routing, coalescing, the SSE `event:` names
//! and docs/events.md all come from this one table, so they cannot drift.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write,
    sync::{Arc, LazyLock},
};

use prost_reflect::{DescriptorPool, Value};

use crate::{
    names::Channel,
    proto::{FILE_DESCRIPTOR_SET, v1::Delivery},
};

/// Field number of `Event.custom`: the one payload outside the catalog.
pub const CUSTOM_FIELD: u32 = 200;

/// A channel an event type routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Always this channel, e.g. `dashboard`.
    Fixed(Channel),
    /// `{base}/{key}`, e.g. `jobs/{key}`: one channel per key.
    Keyed(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Fixed(c) => write!(f, "{c}"),
            Route::Keyed(base) => write!(f, "{base}/{{key}}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventSpec {
    /// Wire name, e.g. `shopify:order-created`.
    pub name: Arc<str>,
    /// Field name in `Event.payload`, e.g. `shopify_order_created` (the proto3 JSON key is its camelCase).
    pub field_name: String,
    pub field_number: u32,
    /// Protobuf message type of the payload.
    pub message: String,
    pub routes: Vec<Route>,
    pub delivery: Delivery,
    pub summary: String,
    /// For a fact that ends a job: the snapshot type whose state it closes (same key).
    pub ends: Option<Arc<str>>,
}

impl EventSpec {
    /// Whether any route needs the event's key (`jobs/{key}`).
    pub fn needs_key(&self) -> bool {
        self.routes.iter().any(|r| matches!(r, Route::Keyed(_)))
    }
}

#[derive(Debug)]
pub struct Catalog {
    by_field: HashMap<u32, EventSpec>,
    by_name: HashMap<Arc<str>, u32>,
    /// Every fixed channel any type routes to.
    fixed_channels: BTreeSet<Channel>,
    /// Bases of keyed channels, e.g. `jobs`.
    keyed_bases: BTreeSet<String>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::from_descriptor(FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("proto/ catalog options are invalid (a build-time invariant): {e}"))
});

impl Catalog {
    /// The catalog compiled into this binary.
    pub fn global() -> &'static Catalog {
        &CATALOG
    }

    fn from_descriptor(bytes: &[u8]) -> Result<Self, String> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| e.to_string())?;
        let event = pool.get_message_by_name("switchyard.v1.Event").ok_or("switchyard.v1.Event missing")?;
        let ext = pool.get_extension_by_name("switchyard.v1.event").ok_or("switchyard.v1.event option missing")?;
        let payload = event.oneofs().find(|o| o.name() == "payload").ok_or("Event.payload oneof missing")?;
        let mut by_field = HashMap::new();
        let mut by_name = HashMap::new();
        let mut fixed_channels = BTreeSet::new();
        let mut keyed_bases = BTreeSet::new();
        for field in payload.fields() {
            if field.number() == CUSTOM_FIELD {
                continue;
            }
            let spec = event_spec(&field, &ext, &mut fixed_channels, &mut keyed_bases)?;
            if by_name.insert(spec.name.clone(), field.number()).is_some() {
                return Err(format!("{}: declared twice", spec.name));
            }
            by_field.insert(field.number(), spec);
        }
        // `ends` must name a snapshot type, or state would hold a fact under a name nobody reads.
        for spec in by_field.values() {
            if let Some(ends) = &spec.ends {
                let target = by_name.get(ends).and_then(|n| by_field.get(n));
                if target.is_none_or(|t: &EventSpec| t.delivery != Delivery::Snapshot) {
                    return Err(format!("{}: ends {ends:?}, which is not a snapshot type", spec.name));
                }
            }
        }
        Ok(Self { by_field, by_name, fixed_channels, keyed_bases })
    }

    pub fn by_field(&self, number: u32) -> Option<&EventSpec> {
        self.by_field.get(&number)
    }

    pub fn by_name(&self, name: &str) -> Option<&EventSpec> {
        self.by_name.get(name).and_then(|n| self.by_field.get(n))
    }

    /// Every catalog type, in field order.
    pub fn specs(&self) -> Vec<&EventSpec> {
        let mut v: Vec<_> = self.by_field.values().collect();
        v.sort_by_key(|s| s.field_number);
        v
    }

    pub fn fixed_channels(&self) -> &BTreeSet<Channel> {
        &self.fixed_channels
    }

    /// Whether `channel` is one the catalog routes to (`dashboard`, any `jobs/<id>`).
    pub fn routes_to(&self, channel: &Channel) -> bool {
        match channel.as_str().split_once('/') {
            Some((base, _)) => self.keyed_bases.contains(base),
            None => self.fixed_channels.contains(channel),
        }
    }

    /// docs/events.md, generated. `switchyard catalog` prints it; a test keeps the file in step.
    /// The catalog as `GET /api/catalog` serves it: every type's name, payload field, message,
    /// channels (`jobs/{key}` for a keyed route), delivery and summary.
    pub fn to_json(&self) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .specs()
            .into_iter()
            .map(|spec| {
                serde_json::json!({
                    "name": &*spec.name,
                    "field": lower_camel(&spec.field_name),
                    "message": spec.message.trim_start_matches("switchyard.v1."),
                    "channels": spec.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "delivery": if spec.delivery == Delivery::Snapshot { "snapshot" } else { "fact" },
                    "ends": spec.ends.as_deref(),
                    "summary": spec.summary,
                })
            })
            .collect();
        serde_json::json!({ "events": events })
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "# Event catalog\n\n\
             Generated from the `(switchyard.v1.event)` options in `proto/switchyard/v1/events.proto` \
             by `switchyard catalog`; a test fails when this file is stale.\n\n\
             - **name**: the SSE `event:` field and the type name in every API.\n\
             - **payload field**: the proto3 JSON key of the payload inside the event envelope.\n\
             - **channels**: where the event is routed; `jobs/{key}` means the channel named by the event's `key`.\n\
             - **delivery**: `fact` events are always delivered; `snapshot` events are state: the log keeps \
             the latest per (tenant, type, key) in the state view (`GET /api/state`, `?start=state`), and \
             live subscribers may receive only the latest per key within the coalescing window.\n\
             - **ends**: a fact that finishes a job takes the place of that job's progress snapshot \
             (same key) in the state view, and drops progress a live subscriber still holds.\n\n\
             | name | payload field | message | channels | delivery | summary |\n\
             | --- | --- | --- | --- | --- | --- |\n",
        );
        for spec in self.specs() {
            let routes: Vec<String> = spec.routes.iter().map(|r| format!("`{r}`")).collect();
            let delivery = match (spec.delivery, &spec.ends) {
                (Delivery::Snapshot, _) => "snapshot".to_owned(),
                (_, Some(ends)) => format!("fact; ends `{ends}`"),
                _ => "fact".to_owned(),
            };
            let _ = writeln!(
                s,
                "| `{}` | `{}` | `{}` | {} | {} | {} |",
                spec.name,
                lower_camel(&spec.field_name),
                spec.message.trim_start_matches("switchyard.v1."),
                routes.join(", "),
                delivery,
                spec.summary
            );
        }
        s.push_str(STATE_DOC);
        s.push_str(
            "\nEvents outside the catalog use the `custom` payload (`type`, `json`, `channels`, `delivery`); \
             their channels must be listed in the bus configuration (`custom_channels`).\n",
        );
        s
    }
}

/// The `## State` section of docs/events.md: what a snapshot is and what the state view holds.
const STATE_DOC: &str = "
## State

A **snapshot** is the whole current state of its (tenant, type, key): `shopify:sync-completed`
for key `uk-store` is that store's figures, not a change to them. Publishers must send the full
state each time; a new snapshot replaces the previous one for its key.

The log keeps the **state view** beside the history: for every (tenant, type, key) of a
snapshot type, the latest event. A fact that ends a job (`ends` above) takes the place of the
job's progress for the same key, so a finished job reads as finished, not at 75 %. Facts are not
state. The view is

- updated in the same commit as the append (embedded: one redb transaction; JetStream: a
  `<stream>_STATE` stream with one message per subject, written by each node's tail in sequence
  order), so it can never disagree with the history;
- consistent with one log id, `asOf`: **state as of N + every event after N = the truth**;
- kept until a newer event of the same key replaces it: history retention never removes it
  (an embedded log keeps the events it points at; only the history indexes forget them), and it
  survives restarts and `kill -9` like the history;
- read with `GET /api/state`, `EventBus.State`, `?start=state` on SSE, `START_STATE` on gRPC, and
  sent automatically after a `stream:gap` (the keys that changed in the gap).

Keys are capped per tenant (`log.quotas`): a publish that would add a key past the quota is
refused with `quota_exceeded`. A job's state (an event routed to `jobs/<id>`) lives as long as
its history: when retention drops its last event from every stream, the key goes too.
";

/// `namespace:name`, lowercase letters, digits, `-`, `_`, `.`; used for catalog and custom types.
pub fn is_type_name(s: &str) -> bool {
    let Some((ns, rest)) = s.split_once(':') else {
        return false;
    };
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    };
    part(ns) && part(rest)
}

/// One payload field's event: its `(switchyard.v1.event)` option read and checked.
fn event_spec(
    field: &prost_reflect::FieldDescriptor,
    ext: &prost_reflect::ExtensionDescriptor,
    fixed_channels: &mut BTreeSet<Channel>,
    keyed_bases: &mut BTreeSet<String>,
) -> Result<EventSpec, String> {
    let options = field.options();
    if !options.has_extension(ext) {
        return Err(format!("Event.{} has no (switchyard.v1.event) option", field.name()));
    }
    let spec = options.get_extension(ext);
    let spec = spec.as_message().ok_or("event option is not a message")?;
    let text =
        |name: &str| spec.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let name: Arc<str> = text("name").into();
    if name.is_empty() || !is_type_name(&name) {
        return Err(format!("Event.{}: bad event name {name:?}", field.name()));
    }
    let routes = routes(&name, spec, fixed_channels, keyed_bases)?;
    if routes.is_empty() {
        return Err(format!("{name}: no channels"));
    }
    let delivery = spec
        .get_field_by_name("delivery")
        .and_then(|v| v.as_enum_number())
        .and_then(|n| Delivery::try_from(n).ok())
        .filter(|d| *d != Delivery::Unspecified)
        .ok_or_else(|| format!("{name}: delivery must be FACT or SNAPSHOT"))?;
    let ends = Some(text("ends")).filter(|e| !e.is_empty()).map(Arc::<str>::from);
    if ends.is_some() && delivery != Delivery::Fact {
        return Err(format!("{name}: only a FACT can end another type's state"));
    }
    Ok(EventSpec {
        name,
        field_name: field.name().to_owned(),
        field_number: field.number(),
        message: field.kind().as_message().map(|m| m.full_name().to_owned()).unwrap_or_default(),
        routes,
        delivery,
        summary: text("summary"),
        ends,
    })
}

/// An event option's `channels`, as routes; records every fixed channel and keyed base.
fn routes(
    name: &str,
    spec: &prost_reflect::DynamicMessage,
    fixed_channels: &mut BTreeSet<Channel>,
    keyed_bases: &mut BTreeSet<String>,
) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    if let Some(Value::List(list)) = spec.get_field_by_name("channels").as_deref() {
        for v in list {
            let c = v.as_str().unwrap_or_default();
            let route = match c.strip_suffix("/{key}") {
                Some(base) => {
                    Channel::new(base).map_err(|e| format!("{name}: {c}: {e}"))?;
                    keyed_bases.insert(base.to_owned());
                    Route::Keyed(base.to_owned())
                }
                None => {
                    let ch = Channel::new(c).map_err(|e| format!("{name}: {c}: {e}"))?;
                    fixed_channels.insert(ch.clone());
                    Route::Fixed(ch)
                }
            };
            routes.push(route);
        }
    }
    Ok(routes)
}

/// A proto field name as proto3 JSON spells it (`stock_level` → `stockLevel`).
pub fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_loads_from_proto_options() {
        let c = Catalog::global();
        let order = c.by_name("shopify:order-created").unwrap();
        assert_eq!(order.delivery, Delivery::Fact);
        assert_eq!(order.routes, vec![Route::Fixed(Channel::new("dashboard").unwrap())]);
        let progress = c.by_name("import:job-progress").unwrap();
        assert_eq!(progress.delivery, Delivery::Snapshot);
        assert!(progress.needs_key());
        assert!(c.routes_to(&Channel::new("jobs/7").unwrap()));
        assert!(c.routes_to(&Channel::new("working-capital").unwrap()));
        assert!(!c.routes_to(&Channel::new("nowhere").unwrap()));
        // Every seed channel is reachable.
        for ch in ["dashboard", "production", "inventory", "alerts", "forecast", "working-capital", "workflow"] {
            assert!(c.routes_to(&Channel::new(ch).unwrap()), "{ch}");
        }
        assert!(c.specs().len() >= 45);
    }

    #[test]
    fn payload_field_numbers_match_the_catalog() {
        use crate::proto::v1::{Alert, event::Payload};
        let p = Payload::AlertCritical(Alert::default());
        assert_eq!(Catalog::global().by_field(p.field_number()).unwrap().name.as_ref(), "alert:critical");
    }

    #[test]
    fn type_names() {
        assert!(is_type_name("shopify:order-created"));
        assert!(is_type_name("acme:thing.v2"));
        for bad in ["", "x", ":x", "x:", "X:y", "a:b:c", "a b:c"] {
            assert!(!is_type_name(bad), "{bad}");
        }
    }
}
