//! W3C trace context from a request to the subscribers that receive its events.
//!
//! An event carries the context of the span that published it (`Event.trace`), so a delivery
//! to any subscriber, on any node and at any later time, can join the publisher's trace. Spans
//! are `tracing` spans; the bridge's OpenTelemetry layer exports them when an endpoint is
//! configured. Without that layer every span context is invalid and nothing is stamped.

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::proto::v1::{Event, TraceContext};

/// The context of the current `tracing` span, as an event carries it; `None` when there is
/// no valid one (no OpenTelemetry layer, or no span) or it is not sampled: an unsampled
/// context would cost every stored event ~60 bytes and give its subscribers nothing to record
/// (they follow the parent's decision).
pub fn current() -> Option<TraceContext> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    let mut tracestate = sc.trace_state().header();
    // W3C lets a vendor drop what it cannot carry; an event carries at most this much.
    if tracestate.len() > MAX_TRACESTATE {
        tracestate.clear();
    }
    Some(TraceContext {
        traceparent: format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()),
        tracestate,
    })
}

/// The current span, when its trace is sampled: work done for it elsewhere (the log's writer
/// thread) can then record spans in it. `None` costs nothing further for unsampled requests.
pub fn sampled_span() -> Option<tracing::Span> {
    let span = tracing::Span::current();
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(span)
}

/// The most `tracestate` an event carries (W3C allows 32 members; 512 bytes keeps the usual few).
pub const MAX_TRACESTATE: usize = 512;

/// Whether a published event's own `trace` is a trace context: a well-formed `traceparent`
/// (or none) and a bounded `tracestate`. Subscribers parse it, and every delivery of an event
/// marked sampled makes a span, so a malformed one is refused rather than passed on.
pub fn check(t: &TraceContext) -> Result<(), (&'static str, String)> {
    if !t.traceparent.is_empty() && remote(Fields { traceparent: Some(&t.traceparent), tracestate: None }).is_none() {
        return Err(("event.trace.traceparent", "not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)".into()));
    }
    if t.tracestate.len() > MAX_TRACESTATE {
        return Err(("event.trace.tracestate", format!("at most {MAX_TRACESTATE} bytes")));
    }
    Ok(())
}

/// Gives events that came without a trace context the current span's, and returns it: `None`
/// when the current trace is not sampled (then nothing is stamped).
pub fn stamp<'a>(events: impl IntoIterator<Item = &'a mut Event>) -> Option<TraceContext> {
    let here = current()?;
    for e in events {
        if e.trace.as_ref().is_none_or(|t| t.traceparent.is_empty()) {
            e.trace = Some(here.clone());
        }
    }
    Some(here)
}

/// A request's `traceparent` and `tracestate` (HTTP headers, gRPC metadata, an event).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// The fields as `get` reads them by name.
    pub fn read(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self { traceparent: get("traceparent"), tracestate: get("tracestate") }
    }

    /// An HTTP request's trace headers.
    pub fn headers(h: &'a tonic::codegen::http::HeaderMap) -> Self {
        Self::read(|k| h.get(k).and_then(|v| v.to_str().ok()))
    }

    /// A gRPC call's trace metadata.
    pub fn metadata(m: &'a tonic::metadata::MetadataMap) -> Self {
        Self::read(|k| m.get(k).and_then(|v| v.to_str().ok()))
    }
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The remote parent a request names, if a valid one.
pub fn remote(fields: Fields<'_>) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&fields);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the request's remote parent, when it names one.
pub fn adopt(span: &tracing::Span, fields: Fields<'_>) {
    if let Some(cx) = remote(fields) {
        let _ = span.set_parent(cx);
    }
}

/// Whether the event's publisher sampled its trace (delivery spans are only worth making then).
pub fn sampled(event: &Event) -> bool {
    // `00-<32 hex>-<16 hex>-<flags>`: the sampled bit is the flags' lowest.
    event
        .trace
        .as_ref()
        .and_then(|t| t.traceparent.as_bytes().last())
        .is_some_and(|b| matches!(b, b'1' | b'3' | b'5' | b'7' | b'9' | b'b' | b'd' | b'f'))
}

/// A span for one delivery of `event`, a child of the span that published it. Only for
/// sampled events: the caller checks [`sampled`] first, so unsampled fan-out makes none.
/// `conn`: the SSE stream's or gRPC subscription's id, as its log lines have it.
pub fn delivery(name: &'static str, event: &Event, conn: u64) -> tracing::Span {
    let span = tracing::info_span!("deliver", otel.name = name, event.id = event.id, conn);
    follow(&span, event);
    span
}

/// Makes `span` a child of the span that published `event`, when the event carries a trace.
pub fn follow(span: &tracing::Span, event: &Event) {
    if let Some(t) = &event.trace {
        adopt(span, Fields { traceparent: Some(&t.traceparent), tracestate: Some(&t.tracestate) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_reads_the_flags_and_nothing_else() {
        let with = |tp: &str| Event {
            trace: Some(TraceContext { traceparent: tp.into(), tracestate: String::new() }),
            ..Default::default()
        };
        assert!(sampled(&with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")));
        assert!(!sampled(&with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")));
        assert!(!sampled(&Event::default()));
    }

    #[test]
    fn published_trace_contexts_are_checked() {
        let t = |tp: &str, ts: &str| TraceContext { traceparent: tp.into(), tracestate: ts.into() };
        assert!(check(&t("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b")).is_ok());
        assert!(check(&t("", "")).is_ok(), "no context is fine");
        assert_eq!(check(&t("x1", "")).unwrap_err().0, "event.trace.traceparent");
        let long = "a=".to_owned() + &"b".repeat(MAX_TRACESTATE);
        assert_eq!(
            check(&t("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &long)).unwrap_err().0,
            "event.trace.tracestate"
        );
    }

    #[test]
    fn a_malformed_traceparent_is_no_parent() {
        let parent = |tp| Fields { traceparent: Some(tp), tracestate: None };
        assert!(remote(parent("00-nothex-00f067aa0ba902b7-01")).is_none());
        assert!(remote(Fields::default()).is_none());
        let ok = remote(parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(ok.unwrap().span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
