//! Limits on what clients may cost: password hashing, the sliding-window rate limits, and what
//! one GraphQL request may ask for.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

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

/// `COUNT/SECONDS`, or `0` / `off` to disable.
pub(super) fn rate_limit(
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
