//! HTTP surface: GraphQL over POST, GraphiQL on GET, subscriptions over WebSocket, probes.

mod fanout;
pub mod graphiql;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::BatchRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::domain::auth;
use crate::error::{AppError, REQUEST_ID};
use crate::graphql::context::Caller;
use crate::graphql::loaders::request_loaders;
use crate::graphql::{EventlySchema, build_schema};
use crate::realtime::RedisHealth;

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// GraphQL documents and variables are small; anything bigger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct HttpState {
    app: AppState,
    schema: EventlySchema,
    sockets: Arc<ws::Sockets>,
    fanout: Arc<fanout::Fanout>,
}

pub fn router(app: AppState) -> Router {
    let sockets = Arc::new(ws::Sockets::new(app.config.websocket));
    router_with(app, sockets)
}

fn router_with(app: AppState, sockets: Arc<ws::Sockets>) -> Router {
    let schema = build_schema(app.clone());
    let state = HttpState {
        fanout: Arc::new(fanout::Fanout::new(schema.clone(), app.clone())),
        schema,
        app,
        sockets,
    };
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            REQUEST_ID_HEADER,
        ]);
    Router::new()
        .route(
            "/graphql",
            get(graphiql::graphiql_page)
                .post(graphql)
                .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, REQUEST_TIMEOUT)),
        )
        .route("/graphql/ws", get(ws::graphql_ws))
        .route("/graphiql/{file}", get(graphiql::graphiql_asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Redirect::temporary("/graphql") }))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(cors)
        .layer(CatchPanicLayer::custom(|_| internal_error_response()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let request_id =
                request.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %request.method(), uri = %request.uri(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
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

fn internal_error_response() -> Response {
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

/// Resolves the caller from an `Authorization` value. A bad token is remembered rather than
/// refused here, so public queries still work and protected ones say why they refuse.
async fn identify(app: &AppState, authorization: Option<&str>) -> Result<Caller, AppError> {
    let Some(value) = authorization else {
        return Ok(Caller::Anonymous);
    };
    let Some(token) = bearer_token(value) else {
        return Ok(Caller::Rejected("expected `Authorization: Bearer <token>`"));
    };
    let mut conn = app.conn().await?;
    match auth::authenticate(&mut conn, &app.tokens, token).await {
        Ok(viewer) => Ok(Caller::Signed(Box::new(viewer))),
        Err(AppError::Unauthenticated(why)) => Ok(Caller::Rejected(why)),
        Err(other) => Err(other),
    }
}

async fn graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: Result<GraphQLBatchRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => {
            let message = format!(
                "the request is not a valid GraphQL request: {}",
                rejection.0
            );
            return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &message);
        }
    };
    let request_id = request_id(&headers);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    REQUEST_ID
        .scope(request_id, async move {
            let caller = match identify(&state.app, authorization).await {
                Ok(caller) => caller,
                Err(error) => {
                    let error: async_graphql::Error = error.into();
                    let status = match error.extensions.as_ref().and_then(|e| e.get("code")) {
                        Some(async_graphql::Value::String(code)) if code == "SERVICE_UNAVAILABLE" => {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    let body = json!({ "errors": [{ "message": error.message, "extensions": error.extensions }] });
                    return (status, Json(body)).into_response();
                }
            };
            let with_context = |request: async_graphql::Request| {
                let (users, events) = request_loaders(&state.app);
                request.data(caller.clone()).data(users).data(events)
            };
            let request = match request {
                BatchRequest::Single(request) => BatchRequest::Single(with_context(request)),
                BatchRequest::Batch(requests) => {
                    BatchRequest::Batch(requests.into_iter().map(with_context).collect())
                }
            };
            GraphQLResponse::from(state.schema.execute_batch(request).await).into_response()
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
/// load balancer on a Redis blip would turn a degradation into an outage.
async fn readyz(State(state): State<HttpState>) -> Response {
    let postgres = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&state.app.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let redis = state.app.bus.redis_health().await;
    let (status, word) = match (postgres, redis) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, RedisHealth::Down) => (StatusCode::OK, "degraded"),
        (true, _) => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": word,
        "postgres": if postgres { "up" } else { "down" },
        "redis": match redis {
            RedisHealth::NotConfigured => "not_configured",
            RedisHealth::Up => "up",
            RedisHealth::Down => "down",
        },
    });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish and
/// closes every WebSocket with 1001 once its operations in flight are done (or the drain time
/// is up).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sockets = Arc::new(ws::Sockets::new(app.config.websocket));
    let signalled = sockets.clone();
    axum::serve(listener, router_with(app, sockets.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Upgraded connections are not HTTP requests any more: tell them separately.
            signalled.begin_shutdown();
        })
        .await?;
    sockets.shut_down().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
