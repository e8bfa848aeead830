//! Typed configuration, read once from the environment. Bad values fail at start-up with a
//! message naming the variable; secrets never reach `Debug` output or logs.
//!
//! This is the only place that reads the environment: code gets its settings from [`Config`]
//! (or a part of it handed down), and logging from [`TelemetryConfig`], read first because
//! logging starts before the rest (and `print-schema` needs nothing else). The parts with
//! rules of their own live beside it: `secrets` (the JWT keys and the ones production
//! refuses), `limits` (password hashing, rate limits, GraphQL limits), `websocket`.

mod limits;
mod secrets;
mod stripe;
#[cfg(test)]
mod tests;
mod websocket;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use limits::{GraphqlLimits, PasswordHashing, RateLimit, RateLimits};
pub use secrets::Secret;
pub use stripe::StripeConfig;
pub use websocket::{WebSocketConfig, connections_within_open_file_limit};

use limits::rate_limit;
use secrets::{
    DEVELOPMENT_JWT_SECRET, is_published_secret, parse_previous_secrets, published_secret,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// How logs are written: to stderr, filtered by `RUST_LOG` (default: info for this crate, warn
/// otherwise), as JSON lines when `LOG_FORMAT=json` (for log shippers; `EVENTLY_LOG_FORMAT`,
/// its first name, still works), which is the default with `EVENTLY_ENV=production`. And
/// whether traces go out over OTLP: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`; the
/// OpenTelemetry SDK reads the rest of its `OTEL_*` variables itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `RUST_LOG` as given; an invalid filter falls back to the default one.
    pub filter: Option<String>,
    pub json: bool,
    /// A log format that is neither `json` nor `text`, reported once logging is up.
    pub unknown_format: Option<String>,
    pub traces: bool,
}

impl TelemetryConfig {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let production = lookup("EVENTLY_ENV").is_some_and(|env| env == "production");
        let format = lookup("LOG_FORMAT").or_else(|| lookup("EVENTLY_LOG_FORMAT"));
        let (json, unknown_format) = match format.as_deref().map(str::trim) {
            None | Some("") => (production, None),
            Some(format) if format.eq_ignore_ascii_case("json") => (true, None),
            Some(format) if format.eq_ignore_ascii_case("text") => (false, None),
            Some(other) => (production, Some(other.to_owned())),
        };
        let set = |name: &str| lookup(name).is_some_and(|value| !value.trim().is_empty());
        let disabled = lookup("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Self {
            filter: lookup("RUST_LOG"),
            json,
            unknown_format,
            traces: !disabled
                && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
                    || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    /// Where `serve` listens unless `--listen` says otherwise (`EVENTLY_LISTEN`).
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_pool_size: u32,
    /// A streaming replica for browse reads (`DATABASE_REPLICA_URL`; see `db::replica`).
    pub database_replica_url: Option<String>,
    /// How far behind the replica may be before reads go to the primary
    /// (`REPLICA_MAX_LAG_MS`, default 1000).
    pub replica_max_lag: Duration,
    /// Commit concurrent bookings of one event together (see `domain::onsale`).
    pub group_commit: bool,
    /// How long an answer to an anonymous query may be reused (see `http::cache`); zero: never.
    pub response_cache_ttl: Duration,
    /// How long each instance may answer from its cache of signed-in sessions after it last
    /// read the session epoch (`SESSION_CACHE_MS`, default 500; zero: no cache); a logout,
    /// revocation or role change takes this long more to answer (see
    /// `domain::session_cache`).
    pub session_cache_lease: Duration,
    /// How often each instance looks for expired holds and events that are over (see
    /// `sweeper`).
    pub sweep_interval: Duration,
    /// How long a card order may wait without news before the sweeper asks the provider about
    /// its payment (`RECONCILE_AFTER_SECS`, default 300; see `checkout::reconcile`).
    pub reconcile_after: Duration,
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (`REDIS_CLUSTER_URLS`, comma-separated), used instead of
    /// `redis_url`: live updates then go by sharded pub/sub, one shard per channel.
    pub redis_cluster_urls: Vec<String>,
    /// How long taking a connection from the Redis pool may wait, connecting included
    /// (`REDIS_CONNECT_TIMEOUT_MS`, default 1000). One pool serves the bus and the state shared
    /// by instances; each caller bounds its commands by its own deadline besides.
    pub redis_connect_timeout: Duration,
    /// Prefix of every Redis key and channel, so deployments (and tests) can share one Redis.
    pub redis_prefix: String,
    /// How often the live-update subscription on Redis is checked with a PING
    /// (`REDIS_PING_INTERVAL_MS`, default 5000): a half-open connection delivers nothing and
    /// reports no error, so only an unanswered PING shows it.
    pub redis_ping_interval: Duration,
    /// How long that PING may go unanswered before the subscription is replaced (and reported
    /// by `/readyz`) (`REDIS_PING_TIMEOUT_MS`, default 3000).
    pub redis_ping_timeout: Duration,
    pub jwt_secret: Secret,
    /// Key id (`kid` header) of `jwt_secret`, which signs new tokens.
    pub jwt_kid: String,
    /// Retired signing keys still accepted for verification, by key id.
    pub jwt_previous_secrets: Vec<(String, Secret)>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub jwt_leeway: Duration,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long after a refresh token was used a retry with it (its answer lost on the way)
    /// gets the same new refresh token instead of ending the session; zero: never.
    pub refresh_reuse_grace: Duration,
    pub password_hashing: PasswordHashing,
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` is believed (load balancers); empty: use the socket address.
    pub trusted_proxies: Vec<IpAddr>,
    /// `None` allows any origin.
    pub cors_allowed_origins: Option<Vec<String>>,
    pub graphql: GraphqlLimits,
    pub websocket: WebSocketConfig,
    /// After SIGTERM, how long `/readyz` answers 503 while new HTTP work is still served, so
    /// the load balancer notices before the listener closes (`SHUTDOWN_DRAIN_MS`, default 2000).
    pub shutdown_drain: Duration,
    /// The most a shutdown may take from the signal on, drain included; work still in flight
    /// then is abandoned, and its transactions roll back (`SHUTDOWN_GRACE_MS`, default 30000).
    pub shutdown_grace: Duration,
    /// Payments through Stripe; `None` unless `STRIPE_SECRET_KEY` is set (see `stripe`).
    pub stripe: Option<StripeConfig>,
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
        let database_replica_url = lookup("DATABASE_REPLICA_URL");
        if let Some(url) = &database_replica_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return Err(ConfigError::Invalid {
                name: "DATABASE_REPLICA_URL",
                value: crate::db::redact(url),
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
        let redis_cluster_urls: Vec<String> = lookup("REDIS_CLUSTER_URLS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for url in &redis_cluster_urls {
            redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
                name: "REDIS_CLUSTER_URLS",
                value: crate::db::redact(url),
                reason: e.to_string(),
            })?;
        }
        if redis_url.is_some() && !redis_cluster_urls.is_empty() {
            return Err(ConfigError::Invalid {
                name: "REDIS_CLUSTER_URLS",
                value: redis_cluster_urls.join(","),
                reason: "set either REDIS_URL (one server) or REDIS_CLUSTER_URLS, not both".into(),
            });
        }
        let jwt_secret = match (lookup("JWT_SECRET"), env) {
            (Some(secret), _) if secret.len() < 32 => {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    value: "(hidden)".into(),
                    reason: "must be at least 32 characters".into(),
                });
            }
            (Some(secret), Environment::Production) if is_published_secret(&secret) => {
                return Err(published_secret("JWT_SECRET"));
            }
            (Some(secret), _) => Secret::new(secret),
            (None, Environment::Development) => Secret::new(DEVELOPMENT_JWT_SECRET),
            (None, Environment::Production) => return Err(ConfigError::Missing("JWT_SECRET")),
        };
        let jwt_kid = lookup("JWT_KID").unwrap_or_else(|| "k1".into());
        let jwt_previous_secrets = match lookup("JWT_PREVIOUS_SECRETS") {
            None => Vec::new(),
            Some(list) => parse_previous_secrets(&list, &jwt_kid)?,
        };
        // A retired key still verifies tokens, so a published one is as bad as a current one.
        if env == Environment::Production
            && jwt_previous_secrets
                .iter()
                .any(|(_, secret)| is_published_secret(secret.expose()))
        {
            return Err(published_secret("JWT_PREVIOUS_SECRETS"));
        }
        let development = env == Environment::Development;
        let cors_allowed_origins = match lookup("CORS_ALLOWED_ORIGINS") {
            None if development => None,
            None => Some(Vec::new()),
            Some(list) if list.trim() == "*" => None,
            Some(list) => Some(
                list.split(',')
                    .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                    .filter(|origin| !origin.is_empty())
                    .map(|origin| {
                        axum::http::HeaderValue::from_str(&origin)
                            .map(|_| origin.clone())
                            .map_err(|_| ConfigError::Invalid {
                                name: "CORS_ALLOWED_ORIGINS",
                                value: origin,
                                reason: "not a valid origin".into(),
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let trusted_proxies = match lookup("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|ip| !ip.is_empty())
                .map(|ip| {
                    ip.parse().map_err(|_| ConfigError::Invalid {
                        name: "TRUSTED_PROXIES",
                        value: ip.to_owned(),
                        reason: "expected comma-separated IP addresses".into(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let rate_limits = RateLimits {
            login: rate_limit(&lookup, "RATE_LIMIT_LOGIN", RateLimit::per(10, 60))?,
            register: rate_limit(&lookup, "RATE_LIMIT_REGISTER", RateLimit::per(10, 3600))?,
            account: rate_limit(&lookup, "RATE_LIMIT_ACCOUNT", RateLimit::per(10, 300))?,
            booking: rate_limit(&lookup, "RATE_LIMIT_BOOKING", RateLimit::per(30, 60))?,
            requests: rate_limit(&lookup, "RATE_LIMIT_REQUESTS", RateLimit::per(600, 60))?,
        };
        let timeout_ms: u64 = parse_or(&lookup, "GRAPHQL_TIMEOUT_MS", 15_000)?;
        let graphql = GraphqlLimits {
            max_depth: parse_or(&lookup, "GRAPHQL_MAX_DEPTH", 10)?,
            max_complexity: parse_or(&lookup, "GRAPHQL_MAX_COMPLEXITY", 5000)?,
            max_aliases: parse_or(&lookup, "GRAPHQL_MAX_ALIASES", 15)?,
            max_directives: parse_or(&lookup, "GRAPHQL_MAX_DIRECTIVES", 50)?,
            max_document_bytes: parse_or(&lookup, "GRAPHQL_MAX_DOCUMENT_BYTES", 32 * 1024)?,
            max_batch: parse_or(&lookup, "GRAPHQL_MAX_BATCH", 10)?,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
            max_body_bytes: parse_or(&lookup, "HTTP_MAX_BODY_BYTES", 1024 * 1024)?,
            introspection: parse_or(&lookup, "GRAPHQL_INTROSPECTION", development)?,
            suggestions: parse_or(&lookup, "GRAPHQL_FIELD_SUGGESTIONS", development)?,
            automatic_persisted_queries: parse_or(&lookup, "GRAPHQL_APQ", true)?,
            persisted_query_allowlist: lookup("GRAPHQL_PERSISTED_QUERIES_ALLOWLIST")
                .map(PathBuf::from),
            http_cache_max_age: Duration::from_secs(parse_or(
                &lookup,
                "HTTP_CACHE_MAX_AGE_SECS",
                5u64,
            )?),
        };
        let listen = match lookup("EVENTLY_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(address) => address.trim().parse().map_err(|_| ConfigError::Invalid {
                name: "EVENTLY_LISTEN",
                value: address,
                reason: "expected an address and port, e.g. 127.0.0.1:8000".into(),
            })?,
        };
        Ok(Self {
            env,
            listen,
            database_url,
            database_pool_size: parse_or(&lookup, "DATABASE_POOL_SIZE", 16)?,
            database_replica_url,
            replica_max_lag: Duration::from_millis(parse_or(
                &lookup,
                "REPLICA_MAX_LAG_MS",
                1000u64,
            )?),
            group_commit: parse_or(&lookup, "EVENTLY_GROUP_COMMIT", true)?,
            response_cache_ttl: Duration::from_millis(parse_or(
                &lookup,
                "RESPONSE_CACHE_MS",
                1000,
            )?),
            session_cache_lease: Duration::from_millis(parse_or(
                &lookup,
                "SESSION_CACHE_MS",
                500u64,
            )?),
            sweep_interval: Duration::from_millis(
                parse_or(&lookup, "SWEEP_INTERVAL_MS", 1000u64)?.max(10),
            ),
            reconcile_after: Duration::from_secs(parse_or(
                &lookup,
                "RECONCILE_AFTER_SECS",
                300u64,
            )?),
            redis_url,
            redis_cluster_urls,
            redis_connect_timeout: Duration::from_millis(
                parse_or(&lookup, "REDIS_CONNECT_TIMEOUT_MS", 1000u64)?.max(10),
            ),
            redis_prefix: lookup("REDIS_PREFIX").unwrap_or_else(|| "evently:".into()),
            redis_ping_interval: Duration::from_millis(
                parse_or(&lookup, "REDIS_PING_INTERVAL_MS", 5000u64)?.max(10),
            ),
            redis_ping_timeout: Duration::from_millis(
                parse_or(&lookup, "REDIS_PING_TIMEOUT_MS", 3000u64)?.max(10),
            ),
            jwt_secret,
            jwt_kid,
            jwt_previous_secrets,
            jwt_leeway: Duration::from_secs(parse_or(&lookup, "JWT_LEEWAY_SECS", 10)?),
            access_token_ttl: Duration::from_secs(parse_or(&lookup, "ACCESS_TOKEN_TTL_SECS", 900)?),
            refresh_token_ttl: Duration::from_secs(parse_or(
                &lookup,
                "REFRESH_TOKEN_TTL_SECS",
                30 * 24 * 3600,
            )?),
            refresh_reuse_grace: Duration::from_secs(parse_or(
                &lookup,
                "REFRESH_REUSE_GRACE_SECS",
                30,
            )?),
            password_hashing: PasswordHashing::default(),
            rate_limits,
            trusted_proxies,
            cors_allowed_origins,
            graphql,
            websocket: WebSocketConfig::from_lookup(&lookup)?,
            shutdown_drain: Duration::from_millis(parse_or(&lookup, "SHUTDOWN_DRAIN_MS", 2000u64)?),
            shutdown_grace: Duration::from_millis(parse_or(
                &lookup,
                "SHUTDOWN_GRACE_MS",
                30_000u64,
            )?),
            stripe: stripe::stripe_config(&lookup)?,
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
