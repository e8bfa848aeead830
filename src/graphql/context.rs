//! What a resolver knows about the request: the app, the caller and the per-request loaders.

use async_graphql::Context;

use crate::app::AppState;
use crate::domain::Viewer;
use crate::error::{AppError, AppResult};

/// Who is calling. A token that was sent but is not valid is remembered as such, so that
/// operations needing a user say why they refuse instead of treating the caller as anonymous.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    Signed(Box<Viewer>),
    Rejected(&'static str),
}

pub trait ContextExt {
    fn app(&self) -> &AppState;
    fn caller(&self) -> &Caller;

    /// The signed-in user, or `None` when anonymous; an invalid token is an error.
    fn viewer(&self) -> AppResult<Option<&Viewer>> {
        match self.caller() {
            Caller::Anonymous => Ok(None),
            Caller::Signed(viewer) => Ok(Some(viewer)),
            Caller::Rejected(why) => Err(AppError::Unauthenticated(why)),
        }
    }

    fn require_viewer(&self) -> AppResult<&Viewer> {
        self.viewer()?
            .ok_or(AppError::Unauthenticated("sign in to do this"))
    }
}

impl ContextExt for Context<'_> {
    fn app(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn caller(&self) -> &Caller {
        self.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
    }
}
