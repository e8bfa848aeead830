//! HTTP surface: GraphQL over POST and GET (see `graphql_over_http`), GraphiQL for browsers,
//! subscriptions over WebSocket and Server-Sent Events (`sse`), probes, and the graceful
//! shutdown that drains them all (`shutdown`).

pub mod cache;
mod dashboard;
mod exports;
mod fanout;
pub mod graphiql;
mod graphql_over_http;
mod shutdown;
mod sse;
mod webhooks;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::BatchRequest;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::config::Environment;
use crate::db::replica::ReplicaHealth;
use crate::error::{AppError, REQUEST_ID};
use crate::graphql::context::{Caller, ViewerCache};
use crate::graphql::loaders;
use crate::graphql::{EventlySchema, build_schema};
use crate::realtime::RedisHealth;
use crate::security::client::{ClientIp, client_ip};
use crate::security::deadline::OverHttp;
use crate::security::rate_limit::{Bucket, budget_key};
use graphql_over_http::Answer;
pub use shutdown::{serve, shutdown_signal};

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Answers of the API load nothing and may not be framed (GraphiQL's page sets its own policy).
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Shared by every request: handlers get a clone of the `Arc`, one reference count, rather
/// than of each field.
type HttpState = Arc<HttpShared>;

struct HttpShared {
    app: AppState,
    schema: EventlySchema,
    sockets: Arc<ws::Sockets>,
    fanout: Arc<fanout::Fanout>,
    cache: Arc<cache::ResponseCache>,
    event_streams: sse::EventStreams,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    draining: CancellationToken,
}

pub fn router(app: AppState) -> Router {
    let sockets = Arc::new(ws::Sockets::new(app.config.websocket));
    router_with(app, sockets, CancellationToken::new())
}

fn router_with(app: AppState, sockets: Arc<ws::Sockets>, draining: CancellationToken) -> Router {
    let max_body_bytes = app.config.graphql.max_body_bytes;
    let cors = CorsLayer::new()
        .allow_origin(match &app.config.cors_allowed_origins {
            None => AllowOrigin::from(Any),
            Some(origins) => AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            ),
        })
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            sse::TOKEN_HEADER,
            REQUEST_ID_HEADER,
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(600));
    let production = app.config.env == Environment::Production;
    let schema = build_schema(app.clone());
    let state = Arc::new(HttpShared {
        fanout: Arc::new(fanout::Fanout::new(schema.clone(), app.clone())),
        cache: Arc::new(cache::ResponseCache::new(app.config.response_cache_ttl)),
        schema,
        app,
        sockets,
        event_streams: sse::EventStreams::default(),
        draining,
    });
    // The request budget covers the API, not the probes or GraphiQL's static files.
    let api = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(ws::graphql_ws))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            request_budget,
        ))
        // Whatever did not say who may keep it (a refusal, a 429, GraphiQL's page) is the
        // caller's alone: only answers `graphql_get` marks public are shared.
        .layer(default_header(header::CACHE_CONTROL, "private, no-store"));
    // Event streams are connections like WebSockets: each of their operations is charged to
    // the budget by the schema (`WebSocketBudget`), not each HTTP request.
    let streams = Router::new()
        .route("/graphql/stream", any(sse::graphql_stream))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            record_client_address,
        ));
    let router = Router::new()
        .merge(api)
        .merge(streams)
        .route("/graphiql/{file}", get(graphiql::graphiql_asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::telemetry::metrics::router(state.app.clone()))
        .merge(exports::router(state.app.clone()))
        .merge(dashboard::router())
        .merge(webhooks::router(state.app.clone()))
        .route("/", get(|| async { Redirect::temporary("/graphql") }))
        .with_state(state)
        .layer(middleware::from_fn(crate::telemetry::metrics::track_http))
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(middleware::map_response(payload_too_large_as_graphql))
        .layer(cors)
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(default_header(header::CONTENT_SECURITY_POLICY, API_CSP))
        .layer(CatchPanicLayer::custom(|_| internal_error_response()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::traces::http_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid));
    // Production sits behind TLS; browsers ignore the header over plain HTTP anyway.
    if production {
        router.layer(default_header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
    } else {
        router
    }
}

/// A header every response carries unless its handler set its own (GraphiQL sets a CSP).
fn default_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// The body-limit layer answers 413 in plain text; clients get a GraphQL-shaped answer.
async fn payload_too_large_as_graphql(response: Response) -> Response {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return payload_too_large();
    }
    response
}

fn payload_too_large() -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "the request body is too large",
    )
}

/// Records the client's address for the handlers (see `security::client`).
async fn record_client_address(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ip) = client_ip(&request, &state.app.config.trusted_proxies) {
        request.extensions_mut().insert(ip);
    }
    next.run(request).await
}

/// Records the client's address for the handlers, then charges the request to the client's
/// budget: the user when the bearer token is genuine (checked without the database), else
/// the address. Over budget: 429 with `Retry-After`.
async fn request_budget(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    let app = &state.app;
    let ip = client_ip(&request, &app.config.trusted_proxies);
    if let Some(ip) = ip {
        request.extensions_mut().insert(ip);
    }
    let limit = app.config.rate_limits.requests;
    if limit.is_some() {
        let user = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .and_then(|token| app.tokens.decode(token).ok())
            .map(|claims| claims.sub);
        let client = budget_key(user, ip).unwrap_or_else(|| "ip:unknown".to_owned());
        if let Err(limited) = app
            .rate_limiter
            .check(Bucket::Requests, limit, &client)
            .await
        {
            let error: async_graphql::Error = AppError::from(limited).into();
            let body =
                json!({ "errors": [{ "message": error.message, "extensions": error.extensions }] });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limited.retry_after_secs),
            );
            return response;
        }
    }
    next.run(request).await
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A GraphQL-shaped error for failures outside GraphQL execution.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })),
    )
        .into_response()
}

pub(crate) fn internal_error_response() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERROR",
        "Internal server error",
    )
}

/// Extracts the bearer token from an `Authorization` value; any other scheme is not ours.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Resolves the caller from an `Authorization` value. Only the token's signature, expiry and
/// claims are checked here; whether its session is still live is asked of PostgreSQL when an
/// operation first needs the user. A bad token is remembered rather than refused, so public
/// queries still work and protected ones say why they refuse.
fn identify(app: &AppState, authorization: Option<&str>) -> Caller {
    let Some(value) = authorization else {
        return Caller::Anonymous;
    };
    let Some(token) = bearer_token(value) else {
        return Caller::Rejected("expected `Authorization: Bearer <token>`");
    };
    match app.tokens.decode(token) {
        Ok(claims) => Caller::Token(token.to_owned(), Box::new(claims)),
        Err(AppError::Unauthenticated(why)) => Caller::Rejected(why),
        Err(_) => Caller::Rejected("invalid or expired access token"),
    }
}

/// Whether a body could not be read because it outgrew the body limit (sent without a
/// `Content-Length`, so the limit only shows while reading). The limit error arrives wrapped
/// in I/O and axum errors, whose `source` chains skip it, so its description is matched.
fn body_too_large(error: &impl std::fmt::Display) -> bool {
    error.to_string().contains("length limit exceeded")
}

/// `POST /graphql`: a request or a batch as JSON.
async fn graphql_post(
    State(state): State<HttpState>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if body_too_large(&rejection) => return payload_too_large(),
        Err(rejection) => {
            let message = format!("the request is not a valid GraphQL request: {rejection}");
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &message);
        }
    };
    let request = match graphql_over_http::read_post(&headers, &body) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    execute(state, client, &headers, request, Sharing::Never).await
}

/// `GET /graphql`: GraphiQL for a browser, otherwise a query in the URL, which a CDN may
/// keep when its answer is public (see [`Sharing`]).
async fn graphql_get(
    State(state): State<HttpState>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
) -> Response {
    if graphql_over_http::shows_graphiql(&headers, raw_query.as_deref()) {
        let mut page = graphiql::graphiql_page().await.into_response();
        // The same URL answers JSON to API clients: caches must tell the two apart.
        page.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept"));
        return page;
    }
    let request = match graphql_over_http::read_get(raw_query.as_deref()) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    // A persisted query sent by hash alone is looked up first: a mutation must not slip
    // through GET under its hash.
    let document = if request.query.is_empty() {
        state.app.persisted_queries.known_query(&request).await
    } else {
        Some(request.query.clone())
    };
    let operation_name = request.operation_name.as_deref();
    if let Some(document) = &document
        && !graphql_over_http::runs_over_get(document, operation_name)
    {
        return graphql_over_http::method_not_allowed();
    }
    let public = !headers.contains_key(header::AUTHORIZATION)
        && document.as_deref().is_some_and(|document| {
            graphql_over_http::reads_only_public_fields(document, operation_name)
        });
    let sharing = Sharing::Get {
        public,
        max_age: state.app.config.graphql.http_cache_max_age,
    };
    let response = execute(state, client, &headers, request.into(), sharing).await;
    cache::with_etag(response, headers.get(header::IF_NONE_MATCH)).await
}

/// Who besides the caller may keep an answer.
#[derive(Clone, Copy)]
enum Sharing {
    /// A POST: nobody (`no-store`).
    Never,
    /// A GET: shared caches (a CDN) for `max_age` when the request is anonymous, reads only
    /// public fields and got a clean answer; otherwise `private, no-store`.
    Get { public: bool, max_age: Duration },
}

impl Sharing {
    fn cache_control(self, clean: bool) -> HeaderValue {
        match self {
            Self::Never => HeaderValue::from_static("no-store"),
            Self::Get {
                public: true,
                max_age,
            } if clean && !max_age.is_zero() => {
                HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
                    .unwrap_or_else(|_| HeaderValue::from_static("private, no-store"))
            }
            Self::Get { .. } => HeaderValue::from_static("private, no-store"),
        }
    }

    /// The in-process cache keeps answers per method and media type: their headers differ.
    fn variant(self, answer: Answer) -> &'static str {
        match (self, answer) {
            (Self::Never, Answer::Json) => "POST json",
            (Self::Never, Answer::GraphqlResponseJson) => "POST graphql-response",
            (Self::Get { .. }, Answer::Json) => "GET json",
            (Self::Get { .. }, Answer::GraphqlResponseJson) => "GET graphql-response",
        }
    }
}

/// Runs a request read from either method and writes its answer in the negotiated media type.
async fn execute(
    state: HttpState,
    client: Option<Extension<ClientIp>>,
    headers: &HeaderMap,
    request: BatchRequest,
    sharing: Sharing,
) -> Response {
    let answer = Answer::negotiate(headers);
    let limits = &state.app.config.graphql;
    if let BatchRequest::Batch(requests) = &request
        && limits.max_batch > 0
        && requests.len() > limits.max_batch
    {
        let message = format!(
            "a batch may hold at most {} operations; this one has {}",
            limits.max_batch,
            requests.len()
        );
        return error_response(StatusCode::BAD_REQUEST, "BATCH_TOO_LARGE", &message);
    }
    let timeout = limits.timeout;
    let client = client.map(|Extension(ip)| ip);
    let request_id = request_id(headers);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    // Anonymous single queries may be answered from the cache; a signed-in read is served
    // fresh but leaves the cache alone; a mutation moves it on.
    let cached = match &request {
        BatchRequest::Single(single) if authorization.is_none() => {
            state.cache.key(single, sharing.variant(answer))
        }
        _ => None,
    };
    let generation = state.cache.generation(state.app.bus.generation());
    match &cached {
        Some(key) => {
            if let Some(response) = state.cache.get(key, generation) {
                return response;
            }
        }
        None => match &request {
            BatchRequest::Single(single) => state.cache.note_write(&single.query),
            BatchRequest::Batch(all) => all.iter().for_each(|r| state.cache.note_write(&r.query)),
        },
    }
    REQUEST_ID
        .scope(request_id, async move {
            let caller = identify(&state.app, authorization);
            let with_context = |request: async_graphql::Request| {
                let mut request = request
                    .data(caller.clone())
                    .data(ViewerCache::default())
                    .data(OverHttp);
                loaders::install(&state.app, &mut request.data);
                match client {
                    Some(ip) => request.data(ip),
                    None => request,
                }
            };
            let request = match request {
                BatchRequest::Single(request) => BatchRequest::Single(with_context(request)),
                BatchRequest::Batch(requests) => {
                    BatchRequest::Batch(requests.into_iter().map(with_context).collect())
                }
            };
            let execution = state.schema.execute_batch(request);
            let response = match timeout {
                None => execution.await,
                Some(limit) => match tokio::time::timeout(limit, execution).await {
                    Ok(response) => response,
                    Err(_) => {
                        tracing::warn!(
                            timeout_ms = limit.as_millis() as u64,
                            "GraphQL request timed out"
                        );
                        let message =
                            format!("the request took longer than {} ms", limit.as_millis());
                        return error_response(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", &message);
                    }
                },
            };
            let ok = response.is_ok();
            let mut response = answer.write(response);
            // Answers depend on the caller's token: only an anonymous read of public fields
            // may be kept by a shared cache, and never one with errors.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, sharing.cache_control(ok));
            if let Sharing::Get { .. } = sharing {
                response.headers_mut().insert(
                    header::VARY,
                    HeaderValue::from_static("accept, authorization"),
                );
            }
            match cached {
                Some(key) if ok => state.cache.put(key, generation, response).await,
                _ => response,
            }
        })
        .await
}

/// Reads the access token a WebSocket client sent in `connection_init`:
/// `{"Authorization": "Bearer ..."}` (any case) or `{"authToken": "..."}`.
fn init_token(payload: &serde_json::Value) -> Option<String> {
    let object = payload.as_object()?;
    object.iter().find_map(|(key, value)| {
        let value = value.as_str()?;
        if key.eq_ignore_ascii_case("authorization") {
            Some(value.to_owned())
        } else if key == "authToken" {
            Some(if bearer_token(value).is_some() {
                value.to_owned()
            } else {
                format!("Bearer {value}")
            })
        } else {
            None
        }
    })
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when PostgreSQL answers. Redis down is `degraded`, still 200: bookings stay correct
/// without it and live updates catch up when it is back, so taking every instance out of the
/// load balancer on a Redis blip would turn a degradation into an outage. So is a Redis that
/// answers while this instance's subscription does not (a half-open connection): other
/// instances' changes do not reach its subscribers until it is replaced. `reason` says which.
/// Once shutdown has begun it is `draining`, 503 at once, without asking anyone.
async fn readyz(State(state): State<HttpState>) -> Response {
    if state.draining.is_cancelled() {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let started = std::time::Instant::now();
    let postgres = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&state.app.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let postgres_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = std::time::Instant::now();
    let redis = state.app.bus.redis_health().await;
    let redis_ms = started.elapsed().as_secs_f64() * 1e3;
    // A lagging or lost replica only sends browse reads to the primary: degraded, not down.
    let replica = state.app.replica.as_ref().map(|replica| replica.health());
    let replica_behind = replica.as_ref().is_some_and(ReplicaHealth::is_behind);
    let (status, word) = match (postgres, &redis) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, RedisHealth::Down(_)) => (StatusCode::OK, "degraded"),
        (true, _) if replica_behind => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::OK, "ready"),
    };
    let mut body = json!({
        "status": word,
        "postgres": if postgres { "up" } else { "down" },
        "redis": match redis {
            RedisHealth::NotConfigured => "not_configured",
            RedisHealth::Up => "up",
            RedisHealth::Down(_) => "down",
        },
    });
    // How long each check took, so an operator sees a dependency slowing before it fails.
    body["latency_ms"] = json!({ "postgres": round_ms(postgres_ms) });
    if !matches!(redis, RedisHealth::NotConfigured) {
        body["latency_ms"]["redis"] = json!(round_ms(redis_ms));
    }
    if let RedisHealth::Down(reason) = redis {
        body["reason"] = json!(reason);
    }
    if let Some(health) = replica {
        let (word, lag_ms, why) = health.describe();
        body["replica"] = json!(word);
        body["replica_lag_ms"] = json!(lag_ms.map(round_ms));
        body["replica_reason"] = json!(why);
    }
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Milliseconds to a tenth, for `/readyz`.
fn round_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
