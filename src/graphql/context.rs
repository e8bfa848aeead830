//! What a resolver knows about the request: the app, the caller and the per-request loaders.

use async_graphql::Context;
use async_graphql::parser::types::OperationType;
use tokio::sync::OnceCell;

use crate::app::AppState;
use crate::db::DbConn;
use crate::domain::Viewer;
use crate::domain::auth::Claims;
use crate::error::{AppError, AppResult};

/// Who is calling. A token that was sent but is not valid is remembered as such, so that
/// operations needing a user say why they refuse instead of treating the caller as anonymous.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// An HTTP request's token, with a valid signature, and its claims. Its session and user
    /// are looked up when an operation first needs them, once per request (see [`ViewerCache`]).
    Token(String, Box<Claims>),
    /// A WebSocket connection's token. A connection outlives logouts, role changes and the
    /// token's expiry, so it is checked again for every operation.
    Connection(String),
    Rejected(&'static str),
}

pub trait ContextExt {
    fn app(&self) -> &AppState;
    fn caller(&self) -> &Caller;
}

/// The user an HTTP request's token stands for, looked up once per request.
#[derive(Default)]
pub struct ViewerCache(OnceCell<Viewer>);

/// The signed-in user, or `None` when anonymous; an invalid or no longer valid token is an error.
pub async fn viewer(ctx: &Context<'_>) -> AppResult<Option<Viewer>> {
    let app = ctx.app();
    let claims = match ctx.caller() {
        Caller::Anonymous => return Ok(None),
        Caller::Token(_, claims) => claims.as_ref().clone(),
        Caller::Connection(token) => app.tokens.decode(token)?,
        Caller::Rejected(why) => return Err(AppError::Unauthenticated(why)),
    };
    // The instance's session cache answers while its lease holds (see
    // `domain::session_cache`); PostgreSQL otherwise.
    let lookup = app.sessions.viewer(&claims, || app.conn());
    match ctx.data_opt::<ViewerCache>() {
        Some(cache) => Ok(Some(cache.0.get_or_try_init(|| lookup).await?.clone())),
        None => Ok(Some(lookup.await?)),
    }
}

/// The claims of the caller's token, checked for signature and expiry but not against its
/// session: enough to refuse a request without a database read (a refusal changes nothing),
/// never enough to carry one out. `None` when anonymous.
pub fn token_claims(ctx: &Context<'_>) -> AppResult<Option<Claims>> {
    match ctx.caller() {
        Caller::Anonymous => Ok(None),
        Caller::Token(_, claims) => Ok(Some(claims.as_ref().clone())),
        Caller::Connection(token) => ctx.app().tokens.decode(token).map(Some),
        Caller::Rejected(why) => Err(AppError::Unauthenticated(why)),
    }
}

/// A connection for a catalogue read: from the read replica (when configured and fresh) in a
/// query, from the primary in a mutation or a subscription, whose reads follow a write or
/// decide what a client is told the state now is.
pub async fn browse_conn(ctx: &Context<'_>) -> AppResult<DbConn> {
    if ctx.query_env.operation.node.ty == OperationType::Query {
        ctx.app().browse_conn().await
    } else {
        ctx.app().conn().await
    }
}

pub async fn require_viewer(ctx: &Context<'_>) -> AppResult<Viewer> {
    viewer(ctx)
        .await?
        .ok_or(AppError::Unauthenticated("sign in to do this"))
}

impl ContextExt for Context<'_> {
    fn app(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn caller(&self) -> &Caller {
        self.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
    }
}
