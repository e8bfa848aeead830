//! Traces as an operator's collector receives them: the `evently` binary with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set exports to a small OTLP/HTTP listener of the test's. What
//! the spans of a request are, and how they nest, is tested with the SDK's in-memory exporter
//! in `tests/traces.rs`, a process of its own.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use opentelemetry::trace::TraceId;
use serde_json::json;

use crate::logs::{evently_process, json_log_line};
use crate::support::{WAIT, eventually, fresh_database};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
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
