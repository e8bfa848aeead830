//! Signing in and out: accounts made, sessions started, refreshed and ended, and the rate
//! limits that keep guessing passwords slow.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use sha2::{Digest, Sha256};

use super::context::{ContextExt, require_viewer};
use super::ids::parse_id;
use super::users::UserView;
use crate::config::RateLimit;
use crate::db::models;
use crate::domain::auth::{self, IssuedTokens};
use crate::domain::users;
use crate::error::AppError;
use crate::security::client::ClientIp;
use crate::security::rate_limit::Bucket;

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Single use: `refreshToken` returns a new one with each new access token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i32,
    pub user: UserView,
}

impl From<IssuedTokens> for AuthPayload {
    fn from(issued: IssuedTokens) -> Self {
        Self {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in,
            user: UserView::own(issued.user),
        }
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    pub name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

/// Counts a sign-in attempt twice: against the caller's address (see
/// `ClientIp::rate_limit_key`) and against the account, whatever the address, so rotating
/// addresses does not buy an attacker more guesses at one password. Both are checked before
/// the account is looked up, so a refusal looks and takes the same whether it exists or not.
///
/// Over WebSocket the address is known only if the connection's data carries a `ClientIp`;
/// until then registrations share one budget (a socket cannot mint accounts faster than the
/// limit allows) and logins meet the account limit alone.
async fn limit_sign_in(
    ctx: &Context<'_>,
    bucket: Bucket,
    limit: Option<RateLimit>,
    email: &str,
) -> Result<(), AppError> {
    let app = ctx.app();
    let address = match ctx.data_opt::<ClientIp>() {
        Some(ip) => Some(ip.rate_limit_key()),
        None if matches!(bucket, Bucket::Register) => Some("websocket".to_owned()),
        None => None,
    };
    if let Some(address) = address
        && limit.is_some()
    {
        app.rate_limiter.check(bucket, limit, &address).await?;
    }
    let account = app.config.rate_limits.account;
    if account.is_some() {
        // Hashed: Redis need not hold anyone's email address.
        let key = format!(
            "{:x}",
            Sha256::digest(crate::domain::text::normalize_email(email))
        );
        app.rate_limiter
            .check(Bucket::Account, account, &key)
            .await?;
    }
    Ok(())
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates a USER account and signs it in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let app = ctx.app();
        let limit = app.config.rate_limits.register;
        limit_sign_in(ctx, Bucket::Register, limit, &input.email).await?;
        let new = users::NewUser {
            email: &input.email,
            password: &input.password,
            name: &input.name,
            role: models::Role::User,
        };
        let user = users::create_user(&app.db, &app.passwords, new).await?;
        let mut conn = app.conn().await?;
        Ok(auth::start_session(&mut conn, &app.tokens, user)
            .await?
            .into())
    }

    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let app = ctx.app();
        let limit = app.config.rate_limits.login;
        limit_sign_in(ctx, Bucket::Login, limit, &input.email).await?;
        let issued = auth::login(
            &app.db,
            &app.passwords,
            &app.tokens,
            &input.email,
            &input.password,
        )
        .await?;
        Ok(issued.into())
    }

    /// Exchanges a refresh token for new tokens. Each refresh token works once; reusing one
    /// ends the session it belongs to, except for a retry within a short grace window while its
    /// successor is unused, which gets that same successor again.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let refreshed = auth::refresh(&mut conn, &app.tokens, &refresh_token).await;
        drop(conn);
        if refreshed.is_err() {
            // A reused refresh token ends its session: wait out the session caches' lease, as
            // a logout does (a refusal for any other reason waits too; refusals may be slow).
            app.sessions.settle().await;
        }
        Ok(refreshed?.into())
    }

    /// Ends the current session: its access and refresh tokens stop working.
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let viewer = &require_viewer(ctx).await?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        auth::revoke_session(&mut conn, viewer.session_id).await?;
        drop(conn);
        // Every instance's session cache has let go of it before this answers.
        app.sessions.settle().await;
        Ok(true)
    }

    /// ADMIN only. Ends every session of the user, on every instance at once; returns how
    /// many were live.
    async fn revoke_user_sessions(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
    ) -> async_graphql::Result<i32> {
        let viewer = &require_viewer(ctx).await?;
        let user_id = parse_id(&user_id, "userId")?;
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let revoked = auth::revoke_user_sessions(&mut conn, viewer, user_id).await?;
        drop(conn);
        app.sessions.settle().await;
        Ok(revoked)
    }
}
