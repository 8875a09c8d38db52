//! Logs and traces. Logs are JSON lines by default (one object per event,
//! with the span's fields: job id, user id...) or human-readable text, always
//! on stderr so a command's own output on stdout stays clean. Traces go to an
//! OpenTelemetry collector over OTLP/HTTP when `SYNCFLEET_OTLP_ENDPOINT` is
//! set; their context travels with each job (envelope and AMQP headers), so a
//! job's spans in the worker continue the trace begun where it was enqueued.

use std::{collections::BTreeMap, future::Future};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, layer::Layered, prelude::*};

use crate::config::{LOG_FILTER, LOG_FORMAT, Setting, Source};

/// The subscriber every layer sits on: the registry behind the log filter.
type Filtered = Layered<EnvFilter, Registry>;

pub const OTLP_ENDPOINT: Setting = Setting {
    name: "SYNCFLEET_OTLP_ENDPOINT",
    default: "",
    doc: "OpenTelemetry collector base URL for traces over OTLP/HTTP (e.g. http://otel-collector:4318); empty: no traces.",
};

/// The trace pipeline; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocking:
    /// call it outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: could not flush traces: {error}");
        }
    }
}

/// Runs a service: installs logging and tracing (before the runtime, as the
/// OTLP exporter's blocking client requires), runs `body` on a multi-threaded
/// runtime, then flushes the traces.
pub fn main_with<F, Fut>(service: &'static str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Source) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let source = Source::from_env();
    let telemetry = init(&source, service)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(body(source));
    telemetry.shutdown();
    result
}

/// Installs rustls' ring provider as the process default (unless one is
/// already): every reqwest client of the process, the OTLP exporter's and the
/// connectors' alike, needs it before it is built.
pub fn install_tls_provider() {
    // An error only says another provider was installed first; that one serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Installs the global subscriber; call once, outside the async runtime.
pub fn init(source: &Source, service: &'static str) -> anyhow::Result<Telemetry> {
    install_tls_provider();
    let filter = EnvFilter::try_new(source.string(&LOG_FILTER))
        .map_err(|error| anyhow::anyhow!("{} is invalid: {error}", LOG_FILTER.name))?;
    // The filter wraps the registry so it applies to every layer; inside the
    // Vec its verdict would be OR-ed with the others'.
    let mut layers: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = Vec::new();
    layers.push(match source.string(&LOG_FORMAT).as_str() {
        "json" => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        "text" => fmt::layer().with_writer(std::io::stderr).with_target(false).boxed(),
        other => anyhow::bail!("{} is invalid: expected json or text, got {other:?}", LOG_FORMAT.name),
    });

    let endpoint = source.string(&OTLP_ENDPOINT);
    let provider = if endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|error| anyhow::anyhow!("{} is unusable: {error}", OTLP_ENDPOINT.name))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .boxed(),
        );
        Some(provider)
    };
    global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry().with(filter).with(layers).try_init()?;
    Ok(Telemetry { provider })
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, to carry
/// with a job; empty when traces are off.
pub fn trace_context(span: &Span) -> BTreeMap<String, String> {
    let context = span.context();
    let mut carrier = BTreeMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut MapInjector(&mut carrier)));
    carrier
}

/// Makes `span` continue the trace carried by a job, and records the trace's
/// id in the span's `trace_id` field (when it has one), so every log line of
/// the job carries the id its trace has.
pub fn continue_trace(span: &Span, carrier: &BTreeMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    // `traceparent` is `version-traceid-parentid-flags`.
    if let Some(trace_id) = carrier
        .get("traceparent")
        .and_then(|parent| parent.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
    {
        span.record("trace_id", trace_id);
    }
    let context = global::get_text_map_propagator(|propagator| propagator.extract(&MapExtractor(carrier)));
    // Fails only when the span is already closed or traces are off.
    let _ = span.set_parent(context);
}

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_lowercase(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_lowercase()).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_jobs_log_lines_carry_the_trace_id_it_came_with() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", trace_id = tracing::field::Empty);
            let carrier = BTreeMap::from([(
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            )]);
            continue_trace(&span, &carrier);
            span.in_scope(|| tracing::info!("inside the job"));
        });
        let logged = String::from_utf8(
            buffer
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
        .unwrap_or_default();
        assert!(
            logged.contains(r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#),
            "{logged}"
        );
    }
}
