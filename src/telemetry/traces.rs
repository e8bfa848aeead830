//! OpenTelemetry traces, exported over OTLP (http/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, and nothing at all otherwise.
//!
//! One trace per request: the HTTP span ([`http_span`], which continues a W3C `traceparent`
//! the request came with) → the GraphQL operation ([`OperationSpan`]) → each database
//! transaction ([`TransactionSpans`], on every pooled connection) → the bus publish
//! (`realtime::Bus::publish_all`). The spans are `tracing` spans, turned into OpenTelemetry
//! spans by `tracing-opentelemetry`'s layer; all but the HTTP one are at `debug` level, which
//! the log filter leaves out by default, so with traces off they cost a disabled callsite each.
//!
//! Bookings committed by the group commit are written by the event's batch worker, not the
//! request's task: each batch is a trace of its own (`group_commit.batch`, with its
//! transaction under it), linked to the spans of the requests it served.

use std::sync::Arc;

use async_graphql::Response;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextRequest,
};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The service name unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` gives one.
const SERVICE_NAME: &str = "evently";

/// Exports spans until dropped; dropping flushes what is still buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("flushing traces at exit failed: {error}");
        }
    }
}

/// The provider of an OTLP exporter configured by the SDK's `OTEL_*` variables (endpoint,
/// headers, timeout, batching, sampler, resource), named `evently` unless they say otherwise.
pub fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The SDK's resource (its detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`),
/// with our service name when neither names the service.
fn resource() -> opentelemetry_sdk::Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let builder = opentelemetry_sdk::Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// The layer that turns this crate's spans into OpenTelemetry spans of `provider`'s tracer.
/// Only our own spans: the exporter's HTTP client must not trace its own requests.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let tracer = provider.tracer(SERVICE_NAME);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            Targets::new()
                .with_target("evently", LevelFilter::DEBUG)
                .with_target("tower_http", LevelFilter::OFF),
        )
}

/// Sets up the exporter and returns the layer for the subscriber, or why it could not.
pub fn install<S>() -> anyhow::Result<(impl Layer<S> + use<S>, Tracing)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let provider = otlp_provider()?;
    Ok((layer(&provider), Tracing { provider }))
}

/// The span of one HTTP request, made by tower-http's `TraceLayer`. It records the request id
/// (set by the layer outside it) and the trace id: the OpenTelemetry trace's when traces are
/// on, which continues the request's `traceparent`; otherwise the `traceparent`'s own, if any.
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let headers = request.headers();
    let request_id = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        uri = %request.uri(),
        request_id,
        trace_id = Empty,
        otel.name = format!("{} {}", request.method(), route(request.uri().path())),
        otel.kind = "server",
    );
    let mut incoming = None;
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let remote = parent.span().span_context().clone();
        if remote.is_valid() {
            incoming = Some(remote.trace_id());
            // Without the OpenTelemetry layer (traces off) there is nothing to attach to.
            let _ = span.set_parent(parent);
        }
    }
    let traced = span.context().span().span_context().trace_id();
    match Some(traced)
        .filter(|id| *id != TraceId::INVALID)
        .or(incoming)
    {
        Some(trace_id) => span.record("trace_id", tracing::field::display(trace_id)),
        None => &span,
    };
    span
}

/// The route a path is served by, for span names: a client's own paths never name spans, so
/// a tracing backend's list of operations stays short.
fn route(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/graphql/ws" => "/graphql/ws",
        "/graphql/stream" => "/graphql/stream",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/" => "/",
        path if path.starts_with("/graphiql/") => "/graphiql/{file}",
        _ => "unmatched",
    }
}

/// Schema extension: a span around each query or mutation, named after its operation.
pub struct OperationSpan;

impl ExtensionFactory for OperationSpan {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationSpan)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationSpan {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let span = tracing::debug_span!(
            "graphql",
            otel.name = "graphql",
            graphql.operation.name = Empty,
            outcome = Empty,
        );
        if span.is_disabled() {
            return next.run(ctx).await;
        }
        let response = next.run(ctx).instrument(span.clone()).await;
        let outcome = response
            .errors
            .first()
            .map(
                |error| match error.extensions.as_ref().and_then(|e| e.get("code")) {
                    Some(async_graphql::Value::String(code)) => code.clone(),
                    _ => "BAD_USER_INPUT".to_owned(),
                },
            )
            .unwrap_or_else(|| "ok".to_owned());
        span.record("outcome", outcome);
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some(name) = operation_name {
            let span = tracing::Span::current();
            span.record("graphql.operation.name", name);
            span.record("otel.name", format!("graphql {name}"));
        }
        next.run(ctx, operation_name).await
    }
}

/// Diesel instrumentation on every pooled connection: a span from each transaction's BEGIN to
/// the end of its COMMIT or ROLLBACK, a child of whatever span the transaction ran in.
#[derive(Default)]
pub struct TransactionSpans {
    open: Option<tracing::Span>,
    /// The transaction's COMMIT or ROLLBACK was sent: the span ends with its answer.
    ending: bool,
}

impl Instrumentation for TransactionSpans {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::BeginTransaction { depth, .. } if depth.get() == 1 => {
                self.open = Some(tracing::debug_span!(
                    "db.transaction",
                    otel.kind = "client",
                    db.system = "postgresql",
                    outcome = Empty,
                ));
                self.ending = false;
            }
            InstrumentationEvent::CommitTransaction { depth, .. } if depth.get() == 1 => {
                self.end("commit");
            }
            InstrumentationEvent::RollbackTransaction { depth, .. } if depth.get() == 1 => {
                self.end("rollback");
            }
            InstrumentationEvent::FinishQuery { .. } if self.ending => {
                self.open = None;
                self.ending = false;
            }
            _ => {}
        }
    }
}

impl TransactionSpans {
    fn end(&mut self, outcome: &str) {
        if let Some(span) = &self.open {
            span.record("outcome", outcome);
            self.ending = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn span_names_never_carry_a_clients_own_path() {
        assert_eq!(route("/graphql"), "/graphql");
        assert_eq!(route("/graphiql/graphiql.min.js"), "/graphiql/{file}");
        assert_eq!(route("/wp-admin/setup-config.php"), "unmatched");
    }
}
