//! HTTP surface: GraphQL over POST, GraphiQL on GET, subscriptions over WebSocket, probes.

pub mod graphiql;

use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{BatchRequest, Data};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
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
use crate::graphql::context::{Caller, ViewerCache};
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
}

pub fn router(app: AppState) -> Router {
    let state = HttpState {
        schema: build_schema(app.clone()),
        app,
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
        .route("/graphql/ws", get(graphql_ws))
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
        Ok(_) => Caller::Token(token.to_owned()),
        Err(AppError::Unauthenticated(why)) => Caller::Rejected(why),
        Err(_) => Caller::Rejected("invalid or expired access token"),
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
            let caller = identify(&state.app, authorization);
            let with_context = |request: async_graphql::Request| {
                let (users, events) = request_loaders(&state.app);
                request
                    .data(caller.clone())
                    .data(ViewerCache::default())
                    .data(users)
                    .data(events)
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

async fn graphql_ws(
    State(state): State<HttpState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let app = state.app.clone();
            GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = init_token(&payload);
                    // A connection is refused at once if its token's session is over.
                    let caller = match identify(&app, authorization.as_deref()) {
                        Caller::Rejected(why) => return Err(async_graphql::Error::new(why)),
                        Caller::Token(token) => {
                            let mut conn = app.conn().await?;
                            auth::authenticate(&mut conn, &app.tokens, &token).await?;
                            Caller::Connection(token)
                        }
                        caller => caller,
                    };
                    let (users, events) = request_loaders(&app);
                    let mut data = Data::default();
                    data.insert(caller);
                    data.insert(users);
                    data.insert(events);
                    Ok(data)
                })
                .serve()
        })
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when PostgreSQL answers and Redis answers or is not configured.
async fn readyz(State(state): State<HttpState>) -> Response {
    let postgres = tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&state.app.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let redis = state.app.bus.redis_health().await;
    let ready = postgres && redis != RedisHealth::Down;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
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

/// Serves until `shutdown` resolves, then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
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
