//! Users: the `User` object (whose email only some callers see), roles, `me` and
//! `setUserRole`. Signing in and out is in `auth`.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::{ContextExt, require_viewer, viewer};
use super::ids::{parse_id, to_id};
use super::loaders::UserLoader;
use crate::db::models;
use crate::domain::users;
use crate::error::AppError;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "models::Role")]
pub enum Role {
    User,
    Organizer,
    Admin,
}

/// A user as the API shows it. Whether the email may be shown is known where the user is
/// reached: the caller's own account (`me`, a sign-in's payload) shows it; anyone else's
/// shows it only to admins and to that user.
pub struct UserView {
    user: models::User,
    own: bool,
}

impl UserView {
    /// The caller's own account.
    pub fn own(user: models::User) -> Self {
        Self { user, own: true }
    }
    /// An account reached through something else (an organizer, a booking's user).
    pub fn other(user: models::User) -> Self {
        Self { user, own: false }
    }
}

/// A user reached through something else, batched with the other lookups of the request.
pub(super) async fn load_user(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<UserView> {
    ctx.data_unchecked::<DataLoader<UserLoader>>()
        .load_one(id)
        .await?
        .map(UserView::other)
        .ok_or_else(|| AppError::NotFound("user").into())
}

#[Object(name = "User")]
impl UserView {
    async fn id(&self) -> ID {
        to_id(self.user.id)
    }
    /// Shown to the user themselves and to admins; null for everyone else.
    async fn email(&self, ctx: &Context<'_>) -> Option<&str> {
        let visible = self.own
            || match viewer(ctx).await {
                Ok(Some(viewer)) => viewer.id() == self.user.id || viewer.is_admin(),
                _ => false,
            };
        visible.then_some(self.user.email.as_str())
    }
    async fn name(&self) -> &str {
        &self.user.name
    }
    async fn role(&self) -> Role {
        self.user.role.into()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.user.created_at
    }
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user; null when anonymous.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserView>> {
        Ok(viewer(ctx).await?.map(|viewer| UserView::own(viewer.user)))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// ADMIN only.
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> async_graphql::Result<UserView> {
        let viewer = &require_viewer(ctx).await?;
        let user_id = parse_id(&user_id, "userId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let user = users::set_role(&mut conn, viewer, user_id, role.into()).await?;
        drop(conn);
        // No instance's session cache keeps the old role once this answers.
        app.sessions.settle().await;
        Ok(UserView::other(user))
    }
}
