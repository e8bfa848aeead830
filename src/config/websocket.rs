//! Limits and timers of `/graphql/ws` connections, with the default connection cap taken from
//! the process's open-file limit.

use std::time::Duration;

use super::{ConfigError, parse_or};

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
    pub(super) fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
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
