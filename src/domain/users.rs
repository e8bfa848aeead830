//! Users: signing up, reading them (one by id, several for DataLoaders), and an admin's change
//! of a user's role. Passwords are hashed by [`super::auth::Passwords`].
//!
//! Top layer: a command module.

use std::collections::HashMap;

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::audit;
use super::auth::{self, Passwords};
use super::rows::{OrNotFound, rows_by_id};
use super::text::normalize_email;
use crate::db::models::{Role, User};
use crate::db::schema::users;
use crate::error::{AppError, AppResult};

pub struct NewUser<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub name: &'a str,
    pub role: Role,
}

fn validate_email(email: &str) -> AppResult<()> {
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(AppError::bad_input("email", "email address is not valid"))
    }
}

fn validate_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::bad_input(
            "name",
            "name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// Creates an account. The password is hashed before a connection is taken from the pool.
pub async fn create_user(
    pool: &crate::db::DbPool,
    passwords: &Passwords,
    new: NewUser<'_>,
) -> AppResult<User> {
    let email = normalize_email(new.email);
    validate_email(&email)?;
    let name = validate_name(new.name)?;
    let password_hash = passwords.hash(new.password).await?;
    let now = Utc::now();
    let user = User {
        id: Uuid::new_v4(),
        email,
        name,
        password_hash,
        role: new.role,
        created_at: now,
        updated_at: now,
    };
    let mut conn = pool.get().await?;
    diesel::insert_into(users::table)
        .values(&user)
        .returning(User::as_returning())
        .get_result(&mut conn)
        .await
        .map_err(|err| match err {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("users_email_key") =>
            {
                AppError::Conflict("an account with this email already exists".into())
            }
            other => other.into(),
        })
}

pub async fn set_role(
    conn: &mut AsyncPgConnection,
    actor: &Viewer,
    user_id: Uuid,
    role: Role,
) -> AppResult<User> {
    if !actor.is_admin() {
        return Err(AppError::Forbidden("only admins can change roles"));
    }
    conn.transaction(async move |conn| {
        let before: User = users::table
            .find(user_id)
            .select(User::as_select())
            .for_update()
            .get_result(conn)
            .await
            .or_not_found("user")?;
        let user: User = diesel::update(users::table.find(user_id))
            .set((users::role.eq(role), users::updated_at.eq(diesel::dsl::now)))
            .returning(User::as_returning())
            .get_result(conn)
            .await?;
        let (old, new) = (audit::user_fields(&before), audit::user_fields(&user));
        let what = audit::Action::on_user("user.set_role", user_id);
        audit::record(conn, actor, what, Some(old), Some(new)).await?;
        // The epoch moves with the role, so no instance's session cache keeps the old one (see
        // `session_cache`); the caller waits out the cache's lease before answering.
        auth::raise_session_epoch(conn).await?;
        Ok(user)
    })
    .await
}

pub async fn users_by_id(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, User>> {
    Ok(rows_by_id!(conn, users, User, ids))
}
