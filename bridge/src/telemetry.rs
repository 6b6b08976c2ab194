//! Logging and tracing: `tracing` to stderr, and OTLP trace export through
//! tracing-opentelemetry when an endpoint is configured.

use crate::config::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the exporter alive; flushes spans on drop.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("switchyard: traces not flushed at exit: {e}");
        }
    }
}

/// Installs the global subscriber: `config.log` is a `tracing` directive such as `info`.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
    let otlp_endpoint = config.otlp_endpoint.as_str();
    let filter = EnvFilter::try_new(&config.log).map_err(|e| format!("telemetry.log: {e}"))?;
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        return Err(format!("telemetry.sample_ratio: {} is not between 0 and 1", config.sample_ratio));
    }
    if otlp_endpoint.is_empty() {
        let _ = tracing_subscriber::registry().with(log_layer(config.log_format).with_filter(filter)).try_init();
        return Ok(Telemetry { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp_endpoint)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    use opentelemetry_sdk::trace::Sampler;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(sampler)
        // The exporter's gRPC client lives on tokio: batch and export on tokio too (the default
        // processor exports from a plain thread, where tonic cannot run).
        .with_span_processor(
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build(),
        )
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("switchyard").build())
        .build();
    let tracer = provider.tracer("switchyard");
    // Each layer its own filter: quieting the log (`warn`) must not stop the info-level spans
    // a trace is made of.
    let spans = EnvFilter::new("info,h2=off,hyper=off,tonic=off,tower=off,opentelemetry=off");
    let _ = tracing_subscriber::registry()
        .with(log_layer(config.log_format).with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans))
        .try_init();
    Ok(Telemetry { provider: Some(provider) })
}

/// The log on stderr: lines for people, or JSON objects for a log pipeline.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed(),
        LogFormat::Json => JsonLines.boxed(),
    }
}

/// One JSON object per event: `time`, `level`, `target`, `message`, the event's fields, the
/// names of the spans it happened in, and the OpenTelemetry `trace_id`/`span_id` of the
/// innermost (with `sampled`), so a log line leads to its trace. Written by hand because
/// tracing-subscriber's JSON format has no place for the OpenTelemetry ids.
struct JsonLines;

impl<S> Layer<S> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use opentelemetry::trace::TraceContextExt;
        use tracing_subscriber::fmt::time::FormatTime;
        let meta = event.metadata();
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonFields(&mut fields));
        let mut time = String::new();
        let _ = tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut time));
        let mut line = serde_json::Map::new();
        line.insert("time".into(), time.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), fields.remove("message").unwrap_or_default());
        if let Some(span) = ctx.event_span(event) {
            let names: Vec<serde_json::Value> = span.scope().from_root().map(|s| s.name().into()).collect();
            line.insert("spans".into(), names.into());
            let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&span.id(), d));
            if let Some(cx) = cx {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    line.insert("trace_id".into(), sc.trace_id().to_string().into());
                    line.insert("span_id".into(), sc.span_id().to_string().into());
                    line.insert("sampled".into(), sc.is_sampled().into());
                }
            }
        }
        line.insert("fields".into(), fields.into());
        let mut out = serde_json::Value::Object(line).to_string();
        out.push('\n');
        use std::io::Write;
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// An event's fields as JSON values (numbers and booleans as such, the rest as text).
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
