//! Passwords (argon2id), access tokens (HS256 JWT) and sessions with rotating refresh tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm as JwtAlgorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Viewer;
use super::audit;
use crate::config::{Config, PasswordHashing};
use crate::db::cached_sql::cached;
use crate::db::models::{Session, User};
use crate::db::schema::{refresh_tokens, sessions, users};
use crate::error::{AppError, AppResult};

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 128;
const ISSUER: &str = "evently";
const AUDIENCE: &str = "evently-api";

/// Hashes and verifies passwords on blocking threads, a bounded number at a time.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when an email is unknown, so a failed login costs the same either way.
    dummy_hash: Arc<String>,
}

impl Passwords {
    pub fn new(cost: PasswordHashing) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let dummy_hash = argon2
            .hash_password(b"not-a-real-password", &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(cost.max_concurrent.max(1))),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    pub async fn hash(&self, password: &str) -> AppResult<String> {
        validate_password(password)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing: {e}")))
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    }

    /// `hash` is `None` when the account does not exist; the work is done all the same.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> AppResult<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
        let exists = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
        Ok(exists && matches)
    }
}

pub fn validate_password(password: &str) -> AppResult<()> {
    let len = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        return Err(AppError::bad_input(
            "password",
            format!("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub role: String,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// Signs access tokens with the current key and checks them against every key not yet
/// retired, chosen by the token's `kid` header. Only HS256 is accepted: a token naming any
/// other algorithm (`none` included) fails before its signature is looked at.
#[derive(Clone)]
pub struct Tokens {
    kid: String,
    encoding: EncodingKey,
    decoding: Arc<HashMap<String, DecodingKey>>,
    validation: Validation,
    leeway: i64,
    /// Derives each refresh token's successor (see `refresh`), keyed with the signing secret.
    successors: Hmac<Sha256>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
}

impl Tokens {
    pub fn new(config: &Config) -> Self {
        let secret = config.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(JwtAlgorithm::HS256);
        validation.algorithms = vec![JwtAlgorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.jwt_leeway.as_secs();
        let mut decoding = HashMap::new();
        decoding.insert(config.jwt_kid.clone(), DecodingKey::from_secret(secret));
        for (kid, previous) in &config.jwt_previous_secrets {
            decoding.insert(
                kid.clone(),
                DecodingKey::from_secret(previous.expose().as_bytes()),
            );
        }
        Self {
            kid: config.jwt_kid.clone(),
            encoding: EncodingKey::from_secret(secret),
            decoding: Arc::new(decoding),
            validation,
            leeway: config.jwt_leeway.as_secs() as i64,
            successors: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
            refresh_grace: config.refresh_reuse_grace,
        }
    }

    /// The refresh token that replaces `token`: the same for every retry, and unknowable
    /// without the server's key, so a stolen old token does not reveal its successor.
    fn successor(&self, token: &str) -> String {
        let mut mac = self.successors.clone();
        mac.update(b"evently refresh successor\0");
        mac.update(token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn issue_access_token(&self, user: &User, session_id: Uuid) -> AppResult<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id,
            sid: session_id,
            role: user.role.as_str().to_owned(),
            jti: Uuid::new_v4(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let mut header = Header::new(JwtAlgorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AppError::Internal(e.into()))
    }

    pub fn decode(&self, token: &str) -> AppResult<Claims> {
        const INVALID: AppError = AppError::Unauthenticated("invalid or expired access token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID)?;
        if header.alg != JwtAlgorithm::HS256 {
            return Err(INVALID);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(INVALID)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| INVALID)?;
        // jsonwebtoken does not check `iat`; a token from the future was not issued by us.
        if claims.iat > Utc::now().timestamp() + self.leeway {
            return Err(INVALID);
        }
        Ok(claims)
    }
}

/// What a successful login, registration or refresh hands back.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i32,
    pub user: User,
}

fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_token_hash(&token);
    (token, hash)
}

fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Starts a session for `user` and issues its first pair of tokens.
pub async fn start_session(
    conn: &mut AsyncPgConnection,
    tokens: &Tokens,
    user: User,
) -> AppResult<IssuedTokens> {
    let session = Session {
        id: Uuid::new_v4(),
        user_id: user.id,
        created_at: Utc::now(),
        expires_at: Utc::now() + tokens.refresh_ttl,
        revoked_at: None,
    };
    let (refresh_token, hash) = new_refresh_token();
    let session_id = session.id;
    conn.transaction(async move |conn| {
        diesel::insert_into(sessions::table)
            .values(&session)
            .execute(conn)
            .await?;
        diesel::insert_into(refresh_tokens::table)
            .values((
                refresh_tokens::token_hash.eq(hash),
                refresh_tokens::session_id.eq(session.id),
            ))
            .execute(conn)
            .await?;
        Ok::<_, AppError>(())
    })
    .await?;
    Ok(IssuedTokens {
        access_token: tokens.issue_access_token(&user, session_id)?,
        refresh_token,
        expires_in: tokens.access_ttl.as_secs() as i32,
        user,
    })
}

/// Signs in with email and password. The connection is taken twice, briefly: to read the
/// account and to start the session. Verifying the password may queue for a hashing slot,
/// and a login flood queued there while holding connections would starve every other request.
pub async fn login(
    pool: &crate::db::DbPool,
    passwords: &Passwords,
    tokens: &Tokens,
    email: &str,
    password: &str,
) -> AppResult<IssuedTokens> {
    // Refused before any work: the length of a password says nothing about the account.
    if password.chars().count() > MAX_PASSWORD_LEN || email.chars().any(char::is_control) {
        return Err(AppError::Unauthenticated("invalid email or password"));
    }
    let email = super::text::normalize_email(email);
    let user: Option<User> = {
        let mut conn = pool.get().await?;
        users::table
            .filter(users::email.eq(&email))
            .select(User::as_select())
            .first(&mut conn)
            .await
            .optional()?
    };
    let hash = user.as_ref().map(|u| u.password_hash.as_str());
    let ok = passwords.verify(password, hash).await?;
    match user {
        Some(user) if ok => start_session(&mut *pool.get().await?, tokens, user).await,
        _ => Err(AppError::Unauthenticated("invalid email or password")),
    }
}

/// Trades a refresh token for a new pair. Each refresh token works once: a second use means
/// it was copied, so the whole session is revoked. One exception: a client whose answer was
/// lost retries with the same token, and within `refresh_grace` of the first use, while the
/// successor handed out then is still unused, the retry gets that same successor again (a
/// successor is derived from its token, so there is one per token and nothing to store).
pub async fn refresh(
    conn: &mut AsyncPgConnection,
    tokens: &Tokens,
    refresh_token: &str,
) -> AppResult<IssuedTokens> {
    let presented = refresh_token_hash(refresh_token);
    let new_token = tokens.successor(refresh_token);
    let new_hash = refresh_token_hash(&new_token);
    let refresh_ttl = tokens.refresh_ttl;
    let grace_from = Utc::now() - tokens.refresh_grace;
    let outcome = conn
        .transaction(async move |conn| {
            let session_id: Option<Uuid> = diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(&presented))
                    .filter(refresh_tokens::used_at.is_null()),
            )
            .set(refresh_tokens::used_at.eq(diesel::dsl::now))
            .returning(refresh_tokens::session_id)
            .get_result(conn)
            .await
            .optional()?;
            let Some(session_id) = session_id else {
                let used: Option<(Uuid, Option<chrono::DateTime<Utc>>)> = refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(&presented))
                    .select((refresh_tokens::session_id, refresh_tokens::used_at))
                    .first(conn)
                    .await
                    .optional()?;
                let Some((session_id, used_at)) = used else {
                    return Ok(Err(false));
                };
                let retry = used_at.is_some_and(|at| at > grace_from)
                    && refresh_tokens::table
                        .filter(refresh_tokens::token_hash.eq(&new_hash))
                        .filter(refresh_tokens::session_id.eq(session_id))
                        .filter(refresh_tokens::used_at.is_null())
                        .select(refresh_tokens::session_id)
                        .first::<Uuid>(conn)
                        .await
                        .optional()?
                        .is_some();
                if retry {
                    return Ok(live_session_user(conn, session_id)
                        .await?
                        .map(|user| (user, session_id))
                        .ok_or(false));
                }
                revoke_session(conn, session_id).await?;
                return Ok(Err(true));
            };
            let Some(user) = live_session_user(conn, session_id).await? else {
                return Ok(Err(false));
            };
            diesel::insert_into(refresh_tokens::table)
                .values((
                    refresh_tokens::token_hash.eq(new_hash),
                    refresh_tokens::session_id.eq(session_id),
                ))
                .execute(conn)
                .await?;
            diesel::update(sessions::table.find(session_id))
                .set(sessions::expires_at.eq(Utc::now() + refresh_ttl))
                .execute(conn)
                .await?;
            Ok::<_, AppError>(Ok((user, session_id)))
        })
        .await?;
    match outcome {
        Ok((user, session_id)) => Ok(IssuedTokens {
            access_token: tokens.issue_access_token(&user, session_id)?,
            refresh_token: new_token,
            expires_in: tokens.access_ttl.as_secs() as i32,
            user,
        }),
        Err(reused) => {
            if reused {
                tracing::warn!("refresh token presented twice; session revoked");
            }
            Err(AppError::Unauthenticated(
                "invalid or expired refresh token",
            ))
        }
    }
}

/// Ends one session (a logout, or a refresh token presented twice). Raises the session epoch
/// with it, in one transaction, so every instance's session cache lets go of it (see
/// [`super::session_cache`]); the caller then waits out the cache's lease before answering.
pub async fn revoke_session(conn: &mut AsyncPgConnection, session_id: Uuid) -> AppResult<bool> {
    conn.transaction(async move |conn| {
        let revoked = diesel::update(
            sessions::table
                .find(session_id)
                .filter(sessions::revoked_at.is_null()),
        )
        .set(sessions::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
        if revoked > 0 {
            raise_session_epoch(conn).await?;
        }
        Ok(revoked > 0)
    })
    .await
}

/// Raises the session epoch: to be called in the transaction of any change that ends a
/// session or narrows what its user may do (a role change). Instances that cached sessions
/// empty their caches when they see it move (see [`super::session_cache`]).
pub async fn raise_session_epoch(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    cached(diesel::sql_query(
        "UPDATE session_epoch SET epoch = epoch + 1",
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// The session epoch now (see [`raise_session_epoch`]).
pub async fn session_epoch(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Epoch {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        epoch: i64,
    }
    let row: Epoch = cached(diesel::sql_query("SELECT epoch FROM session_epoch"))
        .get_result(conn)
        .await?;
    Ok(row.epoch)
}

/// The user of a session that is neither revoked nor expired.
async fn live_session_user(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
) -> AppResult<Option<User>> {
    Ok(sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Which of these (session, user) pairs are live sessions: one query for a whole batch of
/// bookings, which check their buyers' sessions this way instead of one by one.
pub async fn live_sessions(
    mut conn: &AsyncPgConnection,
    pairs: &[(Uuid, Uuid)],
) -> AppResult<std::collections::HashSet<(Uuid, Uuid)>> {
    let ids: Vec<Uuid> = pairs.iter().map(|(session, _)| *session).collect();
    let live: Vec<(Uuid, Uuid)> = sessions::table
        .filter(sessions::id.eq_any(ids))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select((sessions::id, sessions::user_id))
        .load(&mut conn)
        .await?;
    Ok(live.into_iter().collect())
}

/// Resolves a bearer token to its user, provided its session is still live.
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    tokens: &Tokens,
    access_token: &str,
) -> AppResult<Viewer> {
    let claims = tokens.decode(access_token)?;
    Ok(session_viewer(conn, &claims).await?.0)
}

/// Why a token whose session is over is refused.
pub const SESSION_ENDED: AppError = AppError::Unauthenticated("session has ended; sign in again");

/// The user of the token's claims, provided its session is still live, and until when the
/// session lasts (unless refreshed).
pub async fn session_viewer(
    conn: &mut AsyncPgConnection,
    claims: &Claims,
) -> AppResult<(Viewer, chrono::DateTime<Utc>)> {
    let found: Option<(User, chrono::DateTime<Utc>)> = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(claims.sid))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select((User::as_select(), sessions::expires_at))
        .first(conn)
        .await
        .optional()?;
    match found {
        Some((user, expires_at)) if user.id == claims.sub => Ok((
            Viewer {
                user,
                session_id: claims.sid,
            },
            expires_at,
        )),
        _ => Err(SESSION_ENDED),
    }
}

/// Ends every live session of a user (ADMIN only), e.g. after an account was compromised.
/// PostgreSQL is the record: each request and each WebSocket operation re-reads the session,
/// so every instance honours this at once. Returns how many sessions were ended.
pub async fn revoke_user_sessions(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    user_id: Uuid,
) -> AppResult<i32> {
    if !actor.is_admin() {
        return Err(AppError::Forbidden("only admins can revoke sessions"));
    }
    conn.transaction(async move |conn| {
        let exists: Option<Uuid> = users::table
            .find(user_id)
            .select(users::id)
            .first(conn)
            .await
            .optional()?;
        if exists.is_none() {
            return Err(AppError::NotFound("user"));
        }
        let revoked = diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::revoked_at.is_null()),
        )
        .set(sessions::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
        let what = audit::Action::on_user("user.revoke_sessions", user_id);
        audit::record(conn, actor, what, None, Some(json!({ "revoked": revoked }))).await?;
        raise_session_epoch(conn).await?;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    })
    .await
}
