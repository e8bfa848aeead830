//! The one error type of the domain layer and how it reaches clients: every error carries
//! `extensions.code`; internal failures are logged in full and shown only as a request id.

use async_graphql::ErrorExtensions;
use uuid::Uuid;

tokio::task_local! {
    /// The id of the HTTP request (or WebSocket connection) being served, for error reports.
    pub static REQUEST_ID: String;
}

/// Deliberately not `Display`: async-graphql converts any `Display` type into an error without
/// a code, so without `Display` the `?` operator in resolvers can only go through
/// `From<AppError>` below, and no error reaches a client without its `extensions.code`.
#[derive(Debug)]
pub enum AppError {
    Unauthenticated(&'static str),
    Forbidden(&'static str),
    NotFound(&'static str),
    BadUserInput {
        message: String,
        field: Option<&'static str>,
        reason: Option<&'static str>,
    },
    SoldOut {
        seats_available: i32,
    },
    Conflict(String),
    /// A rate limit was reached; the client may retry after this many seconds.
    RateLimited {
        retry_after_secs: u64,
    },
    Unavailable,
    /// A write's COMMIT went unanswered and PostgreSQL could not say whether it took effect.
    OutcomeUnknown,
    Internal(anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn bad_input(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field: Some(field),
            reason: None,
        }
    }

    /// A request that is well-formed but not possible in the current state of the thing it
    /// names (a cancelled or past event); `reason` is a stable machine-readable word.
    pub fn not_possible(reason: &'static str, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field: None,
            reason: Some(reason),
        }
    }

    /// What a client is told. Internal errors say nothing about their cause.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) => (*m).to_owned(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput { message, .. } | Self::Conflict(message) => message.clone(),
            Self::SoldOut { seats_available } => {
                format!("not enough seats left: {seats_available} available")
            }
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests: retry in {retry_after_secs} s")
            }
            Self::Unavailable => "the service is busy, try again shortly".to_owned(),
            Self::OutcomeUnknown => "the database did not confirm whether this went through: \
                                     check before retrying, or retry with the same idempotencyKey"
                .to_owned(),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadUserInput { .. } => "BAD_USER_INPUT",
            Self::SoldOut { .. } => "SOLD_OUT",
            Self::Conflict(_) => "CONFLICT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Unavailable => "SERVICE_UNAVAILABLE",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        match err {
            diesel::result::Error::NotFound => Self::NotFound("record"),
            // The connection to PostgreSQL broke (a restart, a network cut): the pool replaces
            // it, so this is the database being away, not a bug.
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UnableToSendCommand
                | diesel::result::DatabaseErrorKind::ClosedConnection,
                _,
            ) => Self::Unavailable,
            diesel::result::Error::DatabaseError(_, ref info)
                if server_shutting_down(info.message()) =>
            {
                Self::Unavailable
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<diesel_async::pooled_connection::bb8::RunError> for AppError {
    fn from(err: diesel_async::pooled_connection::bb8::RunError) -> Self {
        match err {
            bb8::RunError::TimedOut => Self::Unavailable,
            bb8::RunError::User(e) => Self::Internal(e.into()),
        }
    }
}

/// PostgreSQL ending a session because the server is stopping or crashed (SQLSTATE 57P01 and
/// 57P02): a restart under the query, not a bug. Diesel keeps no SQLSTATE for these, only the
/// message, so this reads PostgreSQL's (English) text; with a translated `lc_messages` they
/// stay INTERNAL_SERVER_ERROR, as before.
fn server_shutting_down(message: &str) -> bool {
    [
        "terminating connection due to administrator command",
        "terminating connection due to immediate shutdown",
        "terminating connection due to unexpected postmaster exit",
        "terminating connection because of crash of another server process",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}

/// The request id of the current task, or a fresh one when none is set (e.g. background work).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Uuid::new_v4().to_string())
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        let request_id = matches!(self, Self::Internal(_)).then(current_request_id);
        let message = match self {
            Self::Internal(err) => {
                let request_id = request_id.as_deref().unwrap_or_default();
                tracing::error!(request_id, error = ?err, "internal error");
                format!("Internal server error (request id {request_id})")
            }
            Self::Unavailable => {
                tracing::warn!("database pool exhausted");
                self.message()
            }
            other => other.message(),
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                Self::BadUserInput { field, reason, .. } => {
                    if let Some(field) = field {
                        ext.set("field", *field);
                    }
                    if let Some(reason) = reason {
                        ext.set("reason", *reason);
                    }
                }
                Self::SoldOut { seats_available } => ext.set("seatsAvailable", *seats_available),
                Self::RateLimited { retry_after_secs } => ext.set("retryAfter", *retry_after_secs),
                Self::Internal(_) => ext.set("requestId", request_id.clone().unwrap_or_default()),
                _ => {}
            }
        })
    }
}

/// Lets binaries and scripts use `?` on domain results.
impl From<AppError> for anyhow::Error {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Internal(err) => err,
            other => anyhow::anyhow!("{} ({})", other.message(), other.code()),
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.extend()
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::AppError;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> AppError {
        Error::DatabaseError(kind, Box::new(message.to_owned())).into()
    }

    #[test]
    fn a_database_going_away_under_a_query_is_unavailable_not_internal() {
        for (kind, message) in [
            (DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            (DatabaseErrorKind::ClosedConnection, "closed"),
            (
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            (
                DatabaseErrorKind::Unknown,
                "terminating connection because of crash of another server process",
            ),
        ] {
            assert_eq!(
                database_error(kind, message).code(),
                "SERVICE_UNAVAILABLE",
                "{message}"
            );
        }
        assert_eq!(
            database_error(DatabaseErrorKind::Unknown, "division by zero").code(),
            "INTERNAL_SERVER_ERROR"
        );
    }
}
