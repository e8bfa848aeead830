//! Typed configuration, read once from the environment. Bad values fail at start-up with a
//! message naming the variable; secrets never reach `Debug` output or logs.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
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

/// At most `max` requests in any `window`; `None` where a limit is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

impl RateLimit {
    pub const fn per(max: u32, window_secs: u64) -> Option<Self> {
        Some(Self {
            max,
            window: Duration::from_secs(window_secs),
        })
    }
}

/// The sliding-window limits (README, "Security model"). Each is `COUNT/SECONDS` or `0` (off).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// `login` attempts per client address (an IPv6 address counts by its /64).
    pub login: Option<RateLimit>,
    /// `register` attempts per client address (an IPv6 address counts by its /64).
    pub register: Option<RateLimit>,
    /// `login` and `register` attempts per account (the normalised email), from any address:
    /// an attacker rotating addresses against one account meets this one.
    pub account: Option<RateLimit>,
    /// `bookSeats` calls per signed-in user.
    pub booking: Option<RateLimit>,
    /// HTTP requests per client (the user when the token is valid, else the IP).
    pub requests: Option<RateLimit>,
}

impl RateLimits {
    /// No limits at all.
    pub const fn off() -> Self {
        Self {
            login: None,
            register: None,
            account: None,
            booking: None,
            requests: None,
        }
    }
}

/// Limits on what one GraphQL request may ask for; `0` turns a limit off where noted.
#[derive(Debug, Clone)]
pub struct GraphqlLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    /// Directives in the whole document.
    pub max_directives: usize,
    /// Bytes of the query text, checked before parsing.
    pub max_document_bytes: usize,
    /// Operations in one batched HTTP request.
    pub max_batch: usize,
    pub timeout: Option<Duration>,
    pub max_body_bytes: usize,
    pub introspection: bool,
    pub suggestions: bool,
    /// Apollo automatic persisted queries (clients may register queries by hash).
    pub automatic_persisted_queries: bool,
    /// A JSON file `{ "<sha256>": "<query>" }`: when set, only these operations run.
    pub persisted_query_allowlist: Option<PathBuf>,
    /// How long a CDN or browser may keep a public answer to a GET query
    /// (`Cache-Control: public, max-age`); short, as seat counts move. `0`: never public.
    pub http_cache_max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub database_url: String,
    pub database_pool_size: u32,
    /// Commit concurrent bookings of one event together (see `domain::onsale`).
    pub group_commit: bool,
    /// How long an answer to an anonymous query may be reused (see `http::cache`); zero: never.
    pub response_cache_ttl: Duration,
    /// How often each instance looks for expired holds and events that are over (see
    /// `sweeper`).
    pub sweep_interval: Duration,
    pub redis_url: Option<String>,
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
}

/// Limits and timers of `/graphql/ws` connections.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// Operations (subscriptions, queries, mutations) open at once on one connection.
    pub max_operations_per_connection: usize,
    /// Signed-in connections one user may hold on one instance.
    pub max_connections_per_user: usize,
    /// Connections this instance holds at once, whoever opened them (each is an open file);
    /// beyond it the upgrade is refused with 503. Defaults to the open-file limit less
    /// headroom (see [`connections_within_open_file_limit`]).
    pub max_connections: usize,
    /// Anonymous connections one address may hold on one instance (refused with close code
    /// 4429), and connections it may have waiting for `connection_init` (refused with 429).
    /// Generous: a venue's Wi-Fi puts thousands of phones behind one address. `0`: no cap.
    pub max_anonymous_per_address: usize,
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
            max_connections: connections_within_open_file_limit(),
            max_anonymous_per_address: 1_000,
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
            max_connections: parse_or(lookup, "WS_MAX_CONNECTIONS", default.max_connections)?,
            max_anonymous_per_address: parse_or(
                lookup,
                "WS_MAX_ANONYMOUS_PER_ADDRESS",
                default.max_anonymous_per_address,
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

/// WebSocket connections that fit in the process's open-file limit, leaving a quarter of it (at
/// least 256 files) for the database pool, Redis, the listener, HTTP requests and logs.
pub fn connections_within_open_file_limit() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    limit.saturating_sub((limit / 4).max(256)).max(16)
}

/// The soft `RLIMIT_NOFILE`, as Linux reports it in `/proc/self/limits` (no libc call needed);
/// `None` elsewhere.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(1 << 20),
        soft => soft.parse().ok(),
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

/// Secrets written in this repository (the development fallback, docker-compose.yml's old
/// default, the tests' and the benchmark's): anyone can sign tokens with them, so production
/// refuses them.
const PUBLISHED_SECRETS: &[&str] = &[
    DEVELOPMENT_JWT_SECRET,
    "change-me-to-a-long-random-secret-of-32-chars-or-more",
    "test-secret-test-secret-test-secret-0123",
    "bench-only-secret-bench-only-secret-0000",
    "rotated-secret-rotated-secret-rotated-01",
    "another-secret-another-secret-0123456",
    "an-old-secret-of-at-least-32-characters",
    "a-production-secret-of-32-characters",
];

/// Words that mark a placeholder, as this repository's own example secrets use them. Matched
/// as whole words (between non-alphanumerics), so a random secret is all but never caught.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change",
    "changeme",
    "example",
    "dev",
    "development",
    "test",
    "demo",
    "bench",
    "placeholder",
    "sample",
];

/// Whether production must refuse `secret`: published here, or a placeholder by its words.
fn is_published_secret(secret: &str) -> bool {
    PUBLISHED_SECRETS.contains(&secret)
        || secret
            .to_ascii_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| PLACEHOLDER_WORDS.contains(&word))
}

fn published_secret(name: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: "(hidden)".into(),
        reason: "is an example or placeholder secret (one written in the repository); \
                 in production use a random one, e.g. `openssl rand -base64 48`"
            .into(),
    }
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
        Ok(Self {
            env,
            database_url,
            database_pool_size: parse_or(&lookup, "DATABASE_POOL_SIZE", 16)?,
            group_commit: parse_or(&lookup, "EVENTLY_GROUP_COMMIT", true)?,
            response_cache_ttl: Duration::from_millis(parse_or(
                &lookup,
                "RESPONSE_CACHE_MS",
                1000,
            )?),
            sweep_interval: Duration::from_millis(
                parse_or(&lookup, "SWEEP_INTERVAL_MS", 1000u64)?.max(10),
            ),
            redis_url,
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
        })
    }

    pub fn uses_development_secret(&self) -> bool {
        self.jwt_secret.expose() == DEVELOPMENT_JWT_SECRET
    }
}

/// `kid:secret,kid:secret`: keys that signed tokens still in circulation.
fn parse_previous_secrets(
    list: &str,
    current_kid: &str,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "JWT_PREVIOUS_SECRETS",
        value: "(hidden)".into(),
        reason: reason.into(),
    };
    let mut keys = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kid, secret) = entry
            .split_once(':')
            .ok_or_else(|| invalid("expected `kid:secret` entries separated by commas"))?;
        if kid.is_empty() || kid == current_kid {
            return Err(invalid(
                "each key id must be non-empty and differ from JWT_KID",
            ));
        }
        if secret.len() < 32 {
            return Err(invalid("every secret must be at least 32 characters"));
        }
        keys.push((kid.to_owned(), Secret::new(secret)));
    }
    Ok(keys)
}

/// `COUNT/SECONDS`, or `0` / `off` to disable.
fn rate_limit(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Option<RateLimit>,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(value) = lookup(name) else {
        return Ok(default);
    };
    if matches!(value.trim(), "0" | "off") {
        return Ok(None);
    }
    let parsed = value.trim().split_once('/').and_then(|(max, secs)| {
        let max: u32 = max.trim().parse().ok()?;
        let secs: u64 = secs.trim().parse().ok()?;
        (max > 0 && secs > 0)
            .then(|| RateLimit::per(max, secs))
            .flatten()
    });
    parsed.map(Some).ok_or_else(|| ConfigError::Invalid {
        name,
        value,
        reason: "expected COUNT/SECONDS (e.g. 10/60), or 0 to disable".into(),
    })
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
    fn production_refuses_secrets_published_in_the_repository() {
        let published = [
            // docker-compose.yml's old default, the development fallback, tests and bench.
            "change-me-to-a-long-random-secret-of-32-chars-or-more",
            DEVELOPMENT_JWT_SECRET,
            "test-secret-test-secret-test-secret-0123",
            "bench-only-secret-bench-only-secret-0000",
            "rotated-secret-rotated-secret-rotated-01",
            "an-old-secret-of-at-least-32-characters",
            "a-production-secret-of-32-characters",
            // Placeholders of the same kind.
            "please-CHANGE_ME-before-going-live-0123456",
            "jwt-secret-for-the-example-deployment-42",
            "dev-secret-dev-secret-dev-secret-dev-secret",
        ];
        let db = ("DATABASE_URL", "postgres://h/db");
        for secret in published {
            let err = config(&[db, ("EVENTLY_ENV", "production"), ("JWT_SECRET", secret)])
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("JWT_SECRET has an invalid value"),
                "{secret}: {err}"
            );
            assert!(!err.contains(secret), "secrets stay hidden: {err}");
            // A retired key must not be a published one either.
            let previous = format!("k0:{secret}");
            let err = config(&[
                db,
                ("EVENTLY_ENV", "production"),
                ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
                ("JWT_PREVIOUS_SECRETS", &previous),
            ])
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("JWT_PREVIOUS_SECRETS"), "{secret}: {err}");
            assert!(!err.contains(secret), "secrets stay hidden: {err}");
            // Development (and the test suite) may use them.
            config(&[db, ("JWT_SECRET", secret)]).unwrap();
        }
        let random = "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4";
        config(&[db, ("EVENTLY_ENV", "production"), ("JWT_SECRET", random)]).unwrap();
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

    #[test]
    fn production_hides_the_schema_and_allows_no_other_origin_by_default() {
        let production = config(&[
            ("EVENTLY_ENV", "production"),
            ("DATABASE_URL", "postgres://h/db"),
            ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
        ])
        .unwrap();
        assert!(!production.graphql.introspection && !production.graphql.suggestions);
        assert_eq!(production.cors_allowed_origins, Some(vec![]));
        let development = config(&[("DATABASE_URL", "postgres://h/db")]).unwrap();
        assert!(development.graphql.introspection && development.graphql.suggestions);
        assert_eq!(development.cors_allowed_origins, None);
        let overridden = config(&[
            ("EVENTLY_ENV", "production"),
            ("DATABASE_URL", "postgres://h/db"),
            ("JWT_SECRET", "q8WvZ0u3kR-Yb1TnLx7PfHs2Jc9MdEa4"),
            ("GRAPHQL_INTROSPECTION", "true"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://a.example, https://b.example/",
            ),
        ])
        .unwrap();
        assert!(overridden.graphql.introspection);
        assert_eq!(
            overridden.cors_allowed_origins,
            Some(vec!["https://a.example".into(), "https://b.example".into()])
        );
    }

    #[test]
    fn rate_limits_are_count_per_seconds_or_off() {
        let db = ("DATABASE_URL", "postgres://h/db");
        let limits = config(&[
            db,
            ("RATE_LIMIT_LOGIN", "5/30"),
            ("RATE_LIMIT_REQUESTS", "0"),
        ])
        .unwrap()
        .rate_limits;
        assert_eq!(limits.login, RateLimit::per(5, 30));
        assert_eq!(limits.requests, None);
        assert_eq!(limits.booking, RateLimit::per(30, 60));
        assert_eq!(limits.account, RateLimit::per(10, 300));
        for bad in ["5", "5/0", "0/60", "many/60", "5/60/2"] {
            let err = config(&[db, ("RATE_LIMIT_BOOKING", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("RATE_LIMIT_BOOKING"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn previous_jwt_keys_and_proxies_are_checked() {
        let db = ("DATABASE_URL", "postgres://h/db");
        let old = "an-old-secret-of-at-least-32-characters";
        let config_with =
            |value: &str| config(&[db, ("JWT_KID", "k2"), ("JWT_PREVIOUS_SECRETS", value)]);
        let keys = config_with(&format!("k1:{old}"))
            .unwrap()
            .jwt_previous_secrets;
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].0.as_str(), keys[0].1.expose()), ("k1", old));
        for bad in ["k1:short", &format!("k2:{old}"), old, &format!(":{old}")] {
            let err = config_with(bad).unwrap_err().to_string();
            assert!(err.starts_with("JWT_PREVIOUS_SECRETS"), "{err}");
            assert!(!err.contains(old), "secrets stay hidden: {err}");
        }
        let proxies = config(&[db, ("TRUSTED_PROXIES", "10.0.0.1, ::1")]).unwrap();
        assert_eq!(proxies.trusted_proxies.len(), 2);
        assert!(config(&[db, ("TRUSTED_PROXIES", "10.0.0.0/8")]).is_err());
    }
}
