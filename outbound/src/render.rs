//! What a delivery carries, rendered once per event (or per group of alerts) from the event's
//! typed fields: the JSON body machines get, and the Slack and e-mail messages people read.

use bytes::Bytes;
use serde_json::{Map, Value as Json, json};
use switchyard::{catalog::Catalog, log::Record, proto::v1::event::Payload};

/// Envelope fields of the proto3 JSON form; whatever else the event holds is its payload.
const ENVELOPE: &[&str] = &["id", "tenant", "occurredAt", "publishedAt", "source", "key", "idempotencyKey", "trace"];

/// The event's payload as JSON (a custom event's own JSON).
pub fn data(r: &Record) -> Json {
    if let Some(Payload::Custom(c)) = &r.event.payload {
        return serde_json::from_str(&c.json).unwrap_or(Json::Null);
    }
    match serde_json::to_value(&r.event) {
        Ok(Json::Object(m)) => {
            m.into_iter().find(|(k, _)| !ENVELOPE.contains(&k.as_str())).map_or(Json::Null, |(_, v)| v)
        }
        _ => Json::Null,
    }
}

fn rfc3339(ms: u64) -> String {
    let t = switchyard::proto::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 };
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The webhook body: `{id, type, timestamp, tenant, key, source, channels, data}`, the shape
/// Standard Webhooks recommends (`type`, `timestamp`, `data`) with the bus's own fields.
/// Rendered once per event and shared by every endpoint (only the signature differs).
pub fn webhook_body(r: &Record) -> Bytes {
    r.outbound_body.get_or_init(|| render_body(r)).clone()
}

fn render_body(r: &Record) -> Bytes {
    let channels: Vec<&str> = r.routing.channels.iter().map(|c| c.as_str()).collect();
    let body = json!({
        "id": r.id.to_string(),
        "type": r.type_name(),
        "timestamp": rfc3339(r.published_ms()),
        "tenant": r.tenant.as_str(),
        "key": r.event.key,
        "source": r.event.source,
        "channels": channels,
        "data": data(r),
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A short human line for one event, from its typed fields.
fn line(r: &Record) -> String {
    let d = data(r);
    let pick = |k: &str| d.get(k).and_then(Json::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let money = |k: &str| {
        d.get(k)
            .and_then(|m| Some(format!("{} {}", m.get("amount")?.as_str()?, m.get("currency")?.as_str().unwrap_or(""))))
    };
    let parts: Vec<String> = [
        pick("title"),
        pick("name"),
        money("total").map(|t| t.trim().to_owned()),
        pick("error"),
        pick("message"),
        d.get("count").and_then(Json::as_u64).map(|n| format!("{n} affected")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let items = ["items", "issues", "lines"].iter().find_map(|k| d.get(*k).and_then(Json::as_array));
    let mut text = if parts.is_empty() { format!("key {}", r.event.key) } else { parts.join(" · ") };
    for item in items.into_iter().flatten().take(10) {
        let Some(o) = item.as_object() else { continue };
        text.push_str("\n  • ");
        text.push_str(&describe(o));
    }
    text
}

fn describe(o: &Map<String, Json>) -> String {
    o.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "link"))
        .filter_map(|(k, v)| match v {
            Json::String(s) if !s.is_empty() => Some(format!("{k}: {s}")),
            Json::Number(n) => Some(format!("{k}: {n}")),
            _ => None,
        })
        .take(5)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A message for people about one or more events of one type (a group).
pub struct Message {
    pub title: String,
    pub lines: Vec<String>,
    pub link: String,
}

impl Message {
    pub fn new(records: &[std::sync::Arc<Record>], dashboard: &str) -> Self {
        let ty = records.first().map(|r| r.type_name().to_owned()).unwrap_or_default();
        let summary = Catalog::global().by_name(&ty).map(|s| s.summary.clone()).unwrap_or_default();
        let title = match records.len() {
            1 => format!("{ty}: {summary}"),
            n => format!("{n} × {ty}: {summary}"),
        };
        let first = records.first().map(|r| r.id.to_string()).unwrap_or_default();
        let link = format!(
            "{}/#after={}",
            dashboard.trim_end_matches('/'),
            first.parse::<u64>().unwrap_or(1).saturating_sub(1)
        );
        Self { title, lines: records.iter().map(|r| line(r)).collect(), link }
    }

    /// The message that an alert's condition cleared: `r` is the event that says so.
    pub fn resolved(r: &std::sync::Arc<Record>, title: &str, dashboard: &str) -> Self {
        Self { title: title.to_owned(), ..Self::new(std::slice::from_ref(r), dashboard) }
    }

    /// Slack incoming-webhook JSON with Block Kit blocks (and `text` for notifications).
    pub fn slack(&self) -> Bytes {
        let mut blocks =
            vec![json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&self.title, 150)}})];
        for l in self.lines.iter().take(20) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(l, 2900)}}));
        }
        if self.lines.len() > 20 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("and {} more", self.lines.len() - 20)}]}));
        }
        blocks.push(json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": self.link}]}));
        Bytes::from(serde_json::to_vec(&json!({"text": self.title, "blocks": blocks})).unwrap_or_default())
    }

    /// The plain-text e-mail body.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(l);
            s.push_str("\n\n");
        }
        s.push_str(&format!("Open the dashboard: {}\n", self.link));
        s
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
