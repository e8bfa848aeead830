//! OpenTelemetry traces of a request, seen through the SDK's in-memory exporter. A process of
//! its own, so that its subscriber can be the global one: a subscriber set for one thread
//! only (`set_default`) among the many threads of the API tests misses spans when another
//! thread registers a span's callsite at the same moment (tracing caches whether a callsite
//! is wanted). Each test's request carries its own `traceparent`, and each test looks only at
//! its trace.

#[allow(dead_code, unused_imports)]
#[path = "api/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use evently::db::models::Role;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

use support::operations::HOLD;
use support::{BOOK, TestApp, WAIT, eventually};

/// Where every span of this process ends up, exported as each one ends.
static SPANS: LazyLock<InMemorySpanExporter> = LazyLock::new(|| {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(evently::telemetry::traces::layer(&provider));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    // Kept for the process's life: dropping the provider would shut the exporter down.
    std::mem::forget(provider);
    exporter
});

/// A caller's span the request continues, in W3C `traceparent` form.
struct Caller {
    trace_id: &'static str,
    span_id: &'static str,
}

impl Caller {
    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    fn trace_id(&self) -> TraceId {
        TraceId::from_hex(self.trace_id).unwrap()
    }
}

/// Sends `body` to the router in process, as `token`'s, continuing `caller`'s trace; returns
/// the answer's `data`.
async fn traced_request(
    app: &TestApp,
    token: &str,
    caller: &Caller,
    body: serde_json::Value,
) -> serde_json::Value {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("traceparent", caller.traceparent())
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
    assert!(answer["errors"].is_null(), "{answer}");
    answer["data"].clone()
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

/// The finished spans of `caller`'s trace, once each of `names` is among them (by prefix).
async fn spans_of(caller: &Caller, names: &[&str]) -> Vec<SpanData> {
    eventually(WAIT, || async {
        let spans: Vec<SpanData> = SPANS
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.span_context.trace_id() == caller.trace_id())
            .collect();
        let found: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
        let all = names
            .iter()
            .all(|wanted| found.iter().any(|name| name.starts_with(wanted)));
        if all {
            Ok(spans)
        } else {
            Err(format!("spans so far: {found:?}"))
        }
    })
    .await
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

#[tokio::test]
async fn one_trace_runs_from_the_incoming_traceparent_through_graphql_and_postgres_to_the_bus() {
    LazyLock::force(&SPANS);
    let caller = Caller {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        span_id: "00f067aa0ba902b7",
    };
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 5).await;
    // Holding seats runs a transaction in the request's own task and announces the hold.
    let body = json!({
        "query": HOLD,
        "variables": { "input": { "eventId": event.as_str(), "quantity": 1 } },
    });
    let data = traced_request(&app, &buyer.token, &caller, body).await;
    assert!(data["holdSeats"]["id"].is_string(), "{data}");

    let spans = spans_of(
        &caller,
        &["POST /graphql", "graphql", "db.transaction", "bus.publish"],
    )
    .await;
    let http = named(&spans, "POST /graphql");
    assert_eq!(
        http.parent_span_id,
        SpanId::from_hex(caller.span_id).unwrap(),
        "the HTTP span continues the caller's span"
    );
    let http_id = http.span_context.span_id();
    for name in ["graphql", "db.transaction", "bus.publish"] {
        assert!(
            descends_from(named(&spans, name), http_id, &spans),
            "{name} is not under the HTTP span: {spans:#?}"
        );
    }
    let graphql = named(&spans, "graphql").span_context.span_id();
    assert!(descends_from(named(&spans, "bus.publish"), graphql, &spans));
    assert!(descends_from(
        named(&spans, "db.transaction"),
        graphql,
        &spans
    ));
}

#[tokio::test]
async fn a_group_commit_batch_is_a_trace_linked_to_the_requests_it_served() {
    LazyLock::force(&SPANS);
    let caller = Caller {
        trace_id: "0af7651916cd43dd8448eb211c80319c",
        span_id: "b7ad6b7169203331",
    };
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 5).await;
    let body = json!({
        "query": BOOK,
        "variables": { "input": { "eventId": event.as_str(), "quantity": 1 } },
    });
    let data = traced_request(&app, &buyer.token, &caller, body).await;
    assert!(data["bookSeats"]["id"].is_string(), "{data}");

    let batch = eventually(WAIT, || async {
        SPANS
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .find(|span| {
                span.name == "group_commit.batch"
                    && span
                        .links
                        .iter()
                        .any(|link| link.span_context.trace_id() == caller.trace_id())
            })
            .ok_or("no batch linked to the request yet")
    })
    .await;
    let under_batch = SPANS.get_finished_spans().unwrap().into_iter().any(|span| {
        span.name == "db.transaction" && span.parent_span_id == batch.span_context.span_id()
    });
    assert!(under_batch, "the batch's transaction is not under it");
}
