//! Prometheus metrics at `/metrics`, through the `metrics` facade: code anywhere records with
//! its macros (`metrics::counter!`), and the one recorder installed here renders them.
//!
//! A recorder is global and can be installed once per process, while a process may hold many
//! `App`s (the integration tests spawn one per test). So the recorder is installed by the
//! first [`handle`] call and every `App` of the process renders that same handle: what one
//! process exposes is the sum of its apps, which for a server is its one app.
//!
//! Labels are bounded: routes as matched (never the raw path), GraphQL root fields of valid
//! documents (else `other`), error codes of our fixed vocabulary; never an id.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;

/// Latency buckets in seconds: a booking under load takes a few milliseconds, a slow page seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bookings per group commit (`MAX_BATCH` is the top).
const BATCH_SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Histogram samples are folded into buckets this often even when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("evently_group_commit_batch_size".into()),
                &BATCH_SIZE_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(error) = metrics::set_global_recorder(recorder) {
        // Someone else's recorder: ours renders nothing, and says so once.
        tracing::warn!(%error, "another metrics recorder is installed: /metrics stays empty");
    }
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .expect("a thread for the metrics upkeep");
    handle
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "evently_http_requests_total",
        "HTTP requests answered, by method, matched route and status"
    );
    describe_histogram!(
        "evently_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and matched route"
    );
    describe_counter!(
        "evently_graphql_operations_total",
        "GraphQL operations, by type, root field (`other` when unknown) and outcome code"
    );
    describe_histogram!(
        "evently_graphql_operation_duration_seconds",
        Unit::Seconds,
        "GraphQL operation latency, by type and root field"
    );
    describe_counter!(
        "evently_bookings_confirmed_total",
        "Bookings made by bookSeats"
    );
    describe_counter!(
        "evently_bookings_refused_total",
        "bookSeats refused, by error code"
    );
    describe_histogram!(
        "evently_group_commit_batch_size",
        "Bookings committed together in one onsale batch"
    );
    describe_histogram!(
        "evently_group_commit_duration_seconds",
        Unit::Seconds,
        "Time one onsale batch took to commit"
    );
    describe_counter!(
        "evently_rate_limit_refusals_total",
        "Requests refused by a rate limit, by bucket"
    );
    describe_counter!(
        "evently_sweeper_runs_total",
        "Sweeper rounds (expired holds, ended events, waiting lists owed seats), by outcome"
    );
    describe_counter!(
        "evently_sweeper_events_swept_total",
        "Events the sweeper changed"
    );
    describe_gauge!(
        "evently_live_connections",
        "Open WebSocket and Server-Sent Events connections"
    );
    describe_gauge!(
        "evently_db_pool_connections",
        "PostgreSQL pool connections, by state (open, idle, in_use), when scraped"
    );
    describe_counter!(
        "evently_db_pool_gets_total",
        "PostgreSQL connections taken from the pool, by whether the caller waited"
    );
    describe_gauge!(
        "evently_db_pool_waited_seconds",
        "Time callers have waited for a PostgreSQL connection in all"
    );
    describe_gauge!(
        "evently_redis_pool_connections",
        "Redis pool connections, by state (open, idle, in_use), when scraped"
    );
    describe_counter!(
        "evently_redis_pool_gets_total",
        "Redis connections taken from the pool, by whether the caller waited"
    );
    describe_gauge!(
        "evently_redis_pool_waited_seconds",
        "Time callers have waited for a Redis connection in all"
    );
    describe_histogram!(
        "evently_group_commit_queue_wait_seconds",
        Unit::Seconds,
        "Time a booking waited in its event's queue before its batch started"
    );
    describe_gauge!(
        "evently_subscriptions",
        "Live subscriptions, by root field (each WebSocket's share of a shared one counted)"
    );
    describe_counter!(
        "evently_ws_messages_sent_total",
        "Operation messages (next, error, complete) sent on WebSockets"
    );
    describe_counter!(
        "evently_live_updates_dropped_total",
        "Updates a slow subscriber skipped, by where (bus: a local channel; fanout: a shared execution)"
    );
    describe_histogram!(
        "evently_bus_delivery_lag_seconds",
        Unit::Seconds,
        "Time from another instance publishing an update to this one hearing it on Redis"
    );
    describe_counter!(
        "evently_holds_expired_total",
        "Holds ended by expiry, by who ended them (sweeper, or a sale that needed the seats)"
    );
}

/// An error code as a label: ours are a fixed vocabulary of upper-case words; anything else
/// (which should not happen) is `other`, so a label can never carry free text.
pub fn code_label(code: Option<&str>) -> String {
    match code {
        Some(code)
            if !code.is_empty()
                && code.len() <= 40
                && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            code.to_owned()
        }
        Some(_) => "other".to_owned(),
        None => "ok".to_owned(),
    }
}

/// What `bookSeats` answered: confirmed, or refused with its code.
pub fn record_booking<T>(result: &Result<T, crate::error::AppError>) {
    match result {
        Ok(_) => metrics::counter!("evently_bookings_confirmed_total").increment(1),
        Err(error) => {
            metrics::counter!("evently_bookings_refused_total", "code" => error.code()).increment(1)
        }
    }
}

/// Middleware: counts every HTTP answer by method, matched route and status, and times it.
/// Paths no route matched are one `unmatched` route, so probing URLs adds no series.
pub async fn track_http(request: Request, next: Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "evently_http_requests_total",
        "method" => method, "route" => route.clone(), "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "evently_http_request_duration_seconds",
        "method" => method, "route" => route
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Clients may send any token as a method; only the standard ones are labels.
fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
    ]
    .iter()
    .find(|known| *known == method)
    .map_or("other", |known| known.as_str())
}

/// `GET /metrics`, outside the API's request budget like the other probes.
pub fn router<S>(app: AppState) -> axum::Router<S> {
    axum::Router::new()
        .route("/metrics", axum::routing::get(exposition))
        .with_state(app)
}

/// Prometheus's text exposition of this process's metrics, with the pool's gauges as they
/// are now.
async fn exposition(State(app): State<AppState>) -> axum::response::Response {
    observe_pool("evently_db_pool", app.db.state());
    if let Some(state) = app.bus.redis_pool_state() {
        observe_pool("evently_redis_pool", state);
    }
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        app.metrics.render(),
    )
        .into_response()
}

/// A bb8 pool (PostgreSQL's, Redis's) as it is when scraped, as `{prefix}_connections`,
/// `{prefix}_gets_total` and `{prefix}_waited_seconds`.
fn observe_pool(prefix: &'static str, state: bb8::State) {
    let open = f64::from(state.connections);
    let idle = f64::from(state.idle_connections);
    let connections = format!("{prefix}_connections");
    metrics::gauge!(connections.clone(), "state" => "open").set(open);
    metrics::gauge!(connections.clone(), "state" => "idle").set(idle);
    metrics::gauge!(connections, "state" => "in_use").set(open - idle);
    // bb8 keeps these totals itself: exposed as they stand, they are counters.
    let gets = &state.statistics;
    let gets_total = format!("{prefix}_gets_total");
    metrics::counter!(gets_total.clone(), "outcome" => "direct").absolute(gets.get_direct);
    metrics::counter!(gets_total.clone(), "outcome" => "waited").absolute(gets.get_waited);
    metrics::counter!(gets_total, "outcome" => "timed_out").absolute(gets.get_timed_out);
    metrics::gauge!(format!("{prefix}_waited_seconds")).set(gets.get_wait_time.as_secs_f64());
}

/// How long an update from another instance took to arrive, by the sender's stamp. Clocks of
/// different hosts disagree a little: a negative lag counts as none.
pub fn record_bus_lag(sent_at_us: Option<i64>) {
    if let Some(sent) = sent_at_us {
        let lag_us = chrono::Utc::now()
            .timestamp_micros()
            .saturating_sub(sent)
            .max(0);
        metrics::histogram!("evently_bus_delivery_lag_seconds").record(lag_us as f64 / 1e6);
    }
}

/// Updates a slow subscriber skipped (`stage`: `bus` or `fanout`).
pub fn record_dropped(stage: &'static str, missed: u64) {
    metrics::counter!("evently_live_updates_dropped_total", "stage" => stage).increment(missed);
}

tokio::task_local! {
    /// Set while the sweeper runs, so that the holds it ends are told from those a sale ended.
    static SWEEPING: ();
}

/// Runs a sweeper round: the holds its commits expire are counted as the sweeper's.
pub async fn sweeping<F: std::future::Future>(round: F) -> F::Output {
    SWEEPING.scope((), round).await
}

/// Counts the committed holds that ended by expiry, as the sweeper's or a sale's.
pub fn record_expired_holds(holds: &[crate::db::models::Hold]) {
    let expired = holds
        .iter()
        .filter(|hold| hold.status == crate::db::models::HoldStatus::Expired)
        .count();
    if expired > 0 {
        let by = if SWEEPING.try_with(|_| ()).is_ok() {
            "sweeper"
        } else {
            "sale"
        };
        metrics::counter!("evently_holds_expired_total", "by" => by).increment(expired as u64);
    }
}

/// One live subscription in `evently_subscriptions{field}`, for as long as it is held.
pub struct Subscribed(metrics::Gauge);

impl Subscribed {
    /// `field` must be one of the schema's subscription fields, never client text.
    pub fn new(field: impl Into<metrics::SharedString>) -> Self {
        let gauge = metrics::gauge!("evently_subscriptions", "field" => field.into());
        gauge.increment(1);
        Self(gauge)
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// Request data marking the one execution many WebSockets share: each socket counts itself in
/// `evently_subscriptions`, so the execution does not.
pub struct SharedExecution;

/// Schema extension: counts and times every query and mutation by its type, root field and
/// outcome (the first error's `extensions.code`, or `ok`). The root field is the label rather
/// than the client's operation name, which is free text: it is taken only from a document that
/// validated, so it is one of the schema's fields; anything else is `other`.
pub struct OperationMetrics;

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationRecord::default())
    }
}

#[derive(Default)]
struct OperationRecord {
    /// Each operation of the parsed document: its name, type and first root field.
    parsed: Mutex<Vec<(Option<String>, &'static str, String)>>,
    /// The operation the request asked for by name.
    operation_name: Mutex<Option<String>>,
    /// The one executed, set only once the document validated.
    executed: Mutex<Option<(&'static str, String)>>,
    /// A subscription, counted for as long as it runs (the extension lives as its stream).
    subscribed: Mutex<Option<Subscribed>>,
}

fn kind(operation: OperationType) -> &'static str {
    match operation {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

fn roots(document: &ExecutableDocument) -> Vec<(Option<String>, &'static str, String)> {
    let root = |operation: &async_graphql::parser::types::OperationDefinition| {
        let field = match operation.selection_set.node.items.first().map(|s| &s.node) {
            Some(Selection::Field(field)) => field.node.name.node.to_string(),
            _ => "other".to_owned(),
        };
        (kind(operation.ty), field)
    };
    match &document.operations {
        DocumentOperations::Single(operation) => {
            let (ty, field) = root(&operation.node);
            vec![(None, ty, field)]
        }
        DocumentOperations::Multiple(operations) => operations
            .iter()
            .map(|(name, operation)| {
                let (ty, field) = root(&operation.node);
                (Some(name.to_string()), ty, field)
            })
            .collect(),
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationRecord {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let (ty, field) = self
            .executed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .unwrap_or(("unknown", "other".to_owned()));
        // Errors of async-graphql's own carry no code yet here; `ErrorCodes`, outside this
        // extension, gives them BAD_USER_INPUT.
        let code = match response.errors.first() {
            None => "ok".to_owned(),
            Some(error) => match error.extensions.as_ref().and_then(|e| e.get("code")) {
                Some(async_graphql::Value::String(code)) => code_label(Some(code)),
                _ => "BAD_USER_INPUT".to_owned(),
            },
        };
        metrics::counter!(
            "evently_graphql_operations_total",
            "type" => ty, "field" => field.clone(), "code" => code
        )
        .increment(1);
        metrics::histogram!(
            "evently_graphql_operation_duration_seconds",
            "type" => ty, "field" => field
        )
        .record(started.elapsed().as_secs_f64());
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self.parsed.lock().unwrap_or_else(|p| p.into_inner()) = roots(&document);
        Ok(document)
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let request = next.run(ctx, request).await?;
        *self
            .operation_name
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = request.operation_name.clone();
        Ok(request)
    }

    // Set once the document validated (an extension may answer before execution begins, as
    // the onsale path's sold-out hint does).
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let validated = next.run(ctx).await?;
        let operation_name = self
            .operation_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let chosen = {
            let parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
            parsed
                .iter()
                .find(|(name, _, _)| name.is_none() || *name == operation_name)
                // Unasked, the document's only operation is the one executed.
                .or(parsed.first().filter(|_| parsed.len() == 1))
                .map(|(_, ty, field)| (*ty, field.clone()))
        };
        if let Some(("subscription", field)) = &chosen
            && ctx.data_opt::<SharedExecution>().is_none()
        {
            *self.subscribed.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Subscribed::new(field.clone()));
        }
        *self.executed.lock().unwrap_or_else(|p| p.into_inner()) = chosen;
        Ok(validated)
    }
}

#[cfg(test)]
mod tests {
    use super::code_label;

    #[test]
    fn codes_outside_the_vocabulary_are_other() {
        assert_eq!(code_label(None), "ok");
        assert_eq!(code_label(Some("SOLD_OUT")), "SOLD_OUT");
        assert_eq!(code_label(Some("sold out <script>")), "other");
        assert_eq!(code_label(Some("")), "other");
    }
}
