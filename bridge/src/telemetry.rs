//! Logging and tracing: `tracing` to stderr, and OTLP trace export through
//! tracing-opentelemetry when an endpoint is configured.

use crate::config::TelemetryConfig;
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
        let _ = tracing_subscriber::registry().with(fmt_layer().with_filter(filter)).try_init();
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
        .with(fmt_layer().with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans))
        .try_init();
    Ok(Telemetry { provider: Some(provider) })
}

/// The log: human-readable lines on stderr.
fn fmt_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false)
}
