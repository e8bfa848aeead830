//! What a resolver knows about the request: the app, the caller and the per-request loaders.

use async_graphql::Context;

use crate::app::AppState;
use crate::domain::{Viewer, auth};
use crate::error::{AppError, AppResult};

/// Who is calling. A token that was sent but is not valid is remembered as such, so that
/// operations needing a user say why they refuse instead of treating the caller as anonymous.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// Checked for this HTTP request.
    Signed(Box<Viewer>),
    /// A WebSocket connection's token. A connection outlives logouts, role changes and the
    /// token's expiry, so it is checked again for every operation.
    Connection(String),
    Rejected(&'static str),
}

pub trait ContextExt {
    fn app(&self) -> &AppState;
    fn caller(&self) -> &Caller;
}

/// The signed-in user, or `None` when anonymous; an invalid or no longer valid token is an error.
pub async fn viewer(ctx: &Context<'_>) -> AppResult<Option<Viewer>> {
    match ctx.caller() {
        Caller::Anonymous => Ok(None),
        Caller::Signed(viewer) => Ok(Some(viewer.as_ref().clone())),
        Caller::Connection(token) => {
            let app = ctx.app();
            let mut conn = app.conn().await?;
            Ok(Some(
                auth::authenticate(&mut conn, &app.tokens, token).await?,
            ))
        }
        Caller::Rejected(why) => Err(AppError::Unauthenticated(why)),
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
