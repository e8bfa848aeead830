//! OpenTelemetry traces. In process, a request is served by the router under a subscriber of
//! this test's own (`set_default`: this thread only, and `#[tokio::test]` polls everything on
//! it) whose spans go to the SDK's in-memory exporter. As a process, the `evently` binary with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set exports to a small OTLP/HTTP listener of the test's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request};
use evently::db::models::Role;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::logs::{evently_process, json_log_line};
use crate::support::operations::HOLD;
use crate::support::{TestApp, WAIT, eventually, fresh_database};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

/// Whether `span` descends from the span `ancestor` among `spans`.
fn descends_from(span: &SpanData, ancestor: SpanId, spans: &[SpanData]) -> bool {
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let mut parent = span.parent_span_id;
    while parent != SpanId::INVALID {
        if parent == ancestor {
            return true;
        }
        match by_id.get(&parent) {
            Some(next) => parent = next.parent_span_id,
            None => return false,
        }
    }
    false
}

#[tokio::test]
async fn one_trace_runs_from_the_incoming_traceparent_through_graphql_and_postgres_to_the_bus() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(evently::telemetry::traces::layer(&provider));
    let _traced = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 5).await;
    // Holding seats runs a transaction in the request's own task and announces the hold.
    let body = json!({
        "query": HOLD,
        "variables": { "input": { "eventId": event.as_str(), "quantity": 1 } },
    });
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", buyer.token))
        .header("traceparent", traceparent())
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = evently::http::router(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["data"]["holdSeats"]["id"].is_string(), "{answer}");

    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let spans: Vec<SpanData> = eventually(WAIT, || async {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.span_context.trace_id() == trace_id)
            .collect();
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
        let all = ["POST /graphql", "graphql", "db.transaction", "bus.publish"]
            .iter()
            .all(|wanted| names.iter().any(|name| name.starts_with(wanted)));
        if all {
            Ok(spans)
        } else {
            Err(format!("spans so far: {names:?}"))
        }
    })
    .await;
    let http = spans
        .iter()
        .find(|span| span.name == "POST /graphql")
        .unwrap();
    assert_eq!(
        http.parent_span_id,
        SpanId::from_hex(PARENT_SPAN_ID).unwrap(),
        "the HTTP span continues the caller's span"
    );
    let http_id = http.span_context.span_id();
    for name in ["graphql", "db.transaction", "bus.publish"] {
        let span = spans
            .iter()
            .find(|span| span.name.starts_with(name))
            .unwrap();
        assert!(
            descends_from(span, http_id, &spans),
            "{name} is not under the HTTP span: {spans:#?}"
        );
    }
    let publish = spans.iter().find(|s| s.name == "bus.publish").unwrap();
    let graphql = spans
        .iter()
        .find(|s| s.name.starts_with("graphql"))
        .unwrap();
    assert!(descends_from(
        publish,
        graphql.span_context.span_id(),
        &spans
    ));
}

#[tokio::test]
async fn a_group_commit_batch_is_a_trace_linked_to_the_requests_it_served() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(evently::telemetry::traces::layer(&provider));
    let _traced = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 5).await;
    let body = json!({
        "query": crate::support::BOOK,
        "variables": { "input": { "eventId": event.as_str(), "quantity": 1 } },
    });
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", buyer.token))
        .header("traceparent", traceparent())
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = evently::http::router(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let answer = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["data"]["bookSeats"]["id"].is_string(), "{answer}");

    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let (batch, spans) = eventually(WAIT, || async {
        let spans = exporter.get_finished_spans().unwrap();
        let batch = spans.iter().find(|span| {
            span.name == "group_commit.batch"
                && span
                    .links
                    .iter()
                    .any(|link| link.span_context.trace_id() == trace_id)
        });
        match batch {
            Some(batch) => Ok((batch.clone(), spans.clone())),
            None => Err(format!("no linked batch in {spans:#?}")),
        }
    })
    .await;
    let transaction = spans.iter().find(|span| {
        span.name == "db.transaction" && span.parent_span_id == batch.span_context.span_id()
    });
    assert!(
        transaction.is_some(),
        "the batch's transaction is under it: {spans:#?}"
    );
}

/// What an OTLP/HTTP receiver was sent: each request's path, content type and body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn otlp_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let kept = received.clone();
    let router = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock()
                    .unwrap()
                    .push((uri.path().to_owned(), content_type, body));
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{address}"), received)
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_server_exports_its_spans_there() {
    let (endpoint, received) = otlp_receiver().await;
    let database = fresh_database().await;
    let (mut server, base) = evently_process(
        &database.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "evently=info,tower_http=debug,warn"),
        ],
    )
    .await;
    client_request(&base, "otlp-request-5e1d", Some(traceparent())).await;
    exported(&received, TraceId::from_hex(TRACE_ID).unwrap()).await;
    // The trace's id is the one the log lines carry, too.
    let line = json_log_line(&mut server, |line| {
        line["span"]["request_id"] == "otlp-request-5e1d"
    })
    .await;
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");

    // A request without a traceparent starts a trace of its own, and its log lines say which.
    client_request(&base, "otlp-untraced-91b2", None).await;
    let line = json_log_line(&mut server, |line| {
        line["span"]["request_id"] == "otlp-untraced-91b2"
    })
    .await;
    let started = line["span"]["trace_id"].as_str().unwrap_or_default();
    let started = TraceId::from_hex(started).unwrap_or(TraceId::INVALID);
    assert!(started != TraceId::INVALID, "{line}");
    exported(&received, started).await;
}

async fn client_request(base: &str, request_id: &str, traceparent: Option<String>) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("x-request-id", request_id)
        .json(&json!({ "query": "{ __typename }" }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

/// Waits until the receiver was sent spans of `trace_id` as OTLP protobuf on `/v1/traces`.
async fn exported(received: &Received, trace_id: TraceId) {
    let trace_bytes = trace_id.to_bytes();
    eventually(WAIT, || async {
        let received = received.lock().unwrap();
        let exported = received.iter().any(|(path, content_type, body)| {
            path == "/v1/traces"
                && content_type == "application/x-protobuf"
                && body.windows(16).any(|window| window == trace_bytes)
        });
        exported.then_some(()).ok_or_else(|| {
            let paths: Vec<&str> = received.iter().map(|(p, _, _)| p.as_str()).collect();
            format!("no trace {trace_id} exported yet; requests: {paths:?}")
        })
    })
    .await;
}
