//! Typed configuration, read once from the environment. Bad values fail at start-up with a
//! message naming the variable; secrets never reach `Debug` output or logs.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane); tests
/// lower them, because the parameters are stored in each hash and verification follows them.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; a login flood queues here instead of starving the runtime.
    pub max_concurrent: usize,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub database_url: String,
    pub database_pool_size: u32,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so deployments (and tests) can share one Redis.
    pub redis_prefix: String,
    pub jwt_secret: Secret,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub password_hashing: PasswordHashing,
    pub websocket: WebSocketConfig,
}

/// Limits and timers of `/graphql/ws` connections.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// Operations (subscriptions, queries, mutations) open at once on one connection.
    pub max_operations_per_connection: usize,
    /// Signed-in connections one user may hold on one instance.
    pub max_connections_per_user: usize,
    /// How long a new connection may take to send `connection_init`.
    pub init_timeout: Duration,
    /// How often the server pings an idle connection.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for operations in flight before closing sockets.
    pub shutdown_drain: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_operations_per_connection: 100,
            max_connections_per_user: 20,
            init_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            shutdown_drain: Duration::from_secs(5),
        }
    }
}

impl WebSocketConfig {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let default = Self::default();
        let secs = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            let value: f64 = parse_or(lookup, name, default.as_secs_f64())?;
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    value: value.to_string(),
                    reason: "expected a positive number of seconds".into(),
                })
        };
        let config = Self {
            max_operations_per_connection: parse_or(
                lookup,
                "WS_MAX_OPERATIONS_PER_CONNECTION",
                default.max_operations_per_connection,
            )?,
            max_connections_per_user: parse_or(
                lookup,
                "WS_MAX_CONNECTIONS_PER_USER",
                default.max_connections_per_user,
            )?,
            init_timeout: secs("WS_INIT_TIMEOUT_SECS", default.init_timeout)?,
            ping_interval: secs("WS_PING_INTERVAL_SECS", default.ping_interval)?,
            idle_timeout: secs("WS_IDLE_TIMEOUT_SECS", default.idle_timeout)?,
            shutdown_drain: secs("WS_SHUTDOWN_DRAIN_SECS", default.shutdown_drain)?,
        };
        if config.idle_timeout <= config.ping_interval {
            return Err(ConfigError::Invalid {
                name: "WS_IDLE_TIMEOUT_SECS",
                value: config.idle_timeout.as_secs_f64().to_string(),
                reason: "must be longer than WS_PING_INTERVAL_SECS, or every client times out"
                    .into(),
            });
        }
        Ok(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required (see README, \"Configuration\")")]
    Missing(&'static str),
    #[error("{name} has an invalid value {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Used only when EVENTLY_ENV=development and JWT_SECRET is unset.
const DEVELOPMENT_JWT_SECRET: &str = "evently-development-secret-do-not-use-in-production";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads configuration through `lookup`, so tests can supply variables without touching
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = match lookup("EVENTLY_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "EVENTLY_ENV",
                    value: other.to_owned(),
                    reason: "expected `development` or `production`".into(),
                });
            }
        };
        let database_url = lookup("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                value: crate::db::redact(&database_url),
                reason: "expected a postgres:// URL".into(),
            });
        }
        let redis_url = lookup("REDIS_URL");
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
                name: "REDIS_URL",
                value: crate::db::redact(url),
                reason: e.to_string(),
            })?;
        }
        let jwt_secret = match (lookup("JWT_SECRET"), env) {
            (Some(secret), _) if secret.len() < 32 => {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    value: "(hidden)".into(),
                    reason: "must be at least 32 characters".into(),
                });
            }
            (Some(secret), _) => Secret::new(secret),
            (None, Environment::Development) => Secret::new(DEVELOPMENT_JWT_SECRET),
            (None, Environment::Production) => return Err(ConfigError::Missing("JWT_SECRET")),
        };
        Ok(Self {
            env,
            database_url,
            database_pool_size: parse_or(&lookup, "DATABASE_POOL_SIZE", 16)?,
            redis_url,
            redis_prefix: lookup("REDIS_PREFIX").unwrap_or_else(|| "evently:".into()),
            jwt_secret,
            access_token_ttl: Duration::from_secs(parse_or(&lookup, "ACCESS_TOKEN_TTL_SECS", 900)?),
            refresh_token_ttl: Duration::from_secs(parse_or(
                &lookup,
                "REFRESH_TOKEN_TTL_SECS",
                30 * 24 * 3600,
            )?),
            password_hashing: PasswordHashing::default(),
            websocket: WebSocketConfig::from_lookup(&lookup)?,
        })
    }

    pub fn uses_development_secret(&self) -> bool {
        self.jwt_secret.expose() == DEVELOPMENT_JWT_SECRET
    }
}

fn parse_or<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: e.to_string(),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn database_url_is_required() {
        let err = config(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DATABASE_URL is required (see README, \"Configuration\")"
        );
    }

    #[test]
    fn production_requires_a_jwt_secret() {
        let err = config(&[
            ("EVENTLY_ENV", "production"),
            ("DATABASE_URL", "postgres://db/x"),
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::Missing("JWT_SECRET")), "{err}");
    }

    #[test]
    fn development_falls_back_to_a_known_secret() {
        let config = config(&[("DATABASE_URL", "postgres://db/x")]).unwrap();
        assert!(config.uses_development_secret());
        assert_eq!(config.env, Environment::Development);
    }

    #[test]
    fn invalid_values_name_the_variable_and_hide_secrets() {
        let err = config(&[("DATABASE_URL", "mysql://u:pw@h/db")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("DATABASE_URL has an invalid value"),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
        let err = config(&[("DATABASE_URL", "postgres://h/db"), ("JWT_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least 32") && !err.contains("short"),
            "{err}"
        );
        let err = config(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("DATABASE_POOL_SIZE", "many"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("DATABASE_POOL_SIZE"), "{err}");
        let err = config(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("WS_PING_INTERVAL_SECS", "30"),
            ("WS_IDLE_TIMEOUT_SECS", "20"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("WS_IDLE_TIMEOUT_SECS"), "{err}");
        let err = config(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("WS_INIT_TIMEOUT_SECS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("WS_INIT_TIMEOUT_SECS"), "{err}");
        assert!(
            config(&[
                ("DATABASE_URL", "postgres://h/db"),
                ("EVENTLY_ENV", "staging")
            ])
            .is_err()
        );
    }
}
