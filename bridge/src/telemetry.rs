//! Logging and tracing: `tracing` to stderr, and OTLP trace export through
//! tracing-opentelemetry when an endpoint is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the exporter alive; flushes spans on drop.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. `filter` is a `tracing` directive such as `info`.
pub fn init(filter: &str, otlp_endpoint: &str) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("telemetry.log: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    if otlp_endpoint.is_empty() {
        let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
        return Ok(Telemetry { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp_endpoint)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    let tracer = provider.tracer("switchyard");
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Ok(Telemetry { provider: Some(provider) })
}
