//! The server under test: a real instance on 127.0.0.1:0 over a fresh database ([`super::database`])
//! and its own Redis key prefix ([`super::redis`]), the HTTP client that talks to it, and its
//! probes. Logs are hidden unless TEST_LOG is set.

use std::net::SocketAddr;
use std::sync::LazyLock;

use evently::app::{App, AppState};
use evently::config::{Config, PasswordHashing, RateLimit, RateLimits};
use evently::db::models::Role;
use evently::domain::{auth, users};
use serde_json::{Value, json};
use uuid::Uuid;

use super::database::{TestDatabase, fresh_database, server_url};
use super::eventually::WAIT;
use super::fault_proxy::FaultProxy;
use super::redis::{redis_prefix, redis_url};
use super::tokens::TEST_JWT_SECRET;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("evently=debug,info")
            .try_init();
    }
});

/// The configuration a test server starts from: this database, Redis at `redis` (URL and key
/// prefix) or the in-process bus, cheap password hashing and rate limits out of reach.
pub fn test_config(database_url: &str, redis: Option<(&str, &str)>) -> Config {
    let mut config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(database_url.to_owned()),
        "JWT_SECRET" => Some(TEST_JWT_SECRET.into()),
        "DATABASE_POOL_SIZE" => Some("20".into()),
        _ => None,
    })
    .unwrap();
    if let Some((url, prefix)) = redis {
        config.redis_url = Some(url.to_owned());
        config.redis_prefix = prefix.to_owned();
    }
    // The parameters travel inside each hash; cheap ones keep tests fast without changing code paths.
    config.password_hashing = PasswordHashing {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 4,
    };
    // Tests sign in hundreds of users from 127.0.0.1; the limits stay on (so their code runs)
    // but out of reach. Rate-limit tests set strict ones with `TestApp::spawn_with`.
    let generous = RateLimit::per(1_000_000, 60);
    // Shutdown tests that watch the drain set one; the others stop at once.
    config.shutdown_drain = std::time::Duration::ZERO;
    config.rate_limits = RateLimits {
        login: generous,
        register: generous,
        account: generous,
        booking: generous,
        requests: generous,
    };
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub state: AppState,
    pub client: reqwest::Client,
    /// Redis URL and key prefix, shared with peers.
    pub redis: Option<(String, String)>,
    /// Cancel to shut the server down gracefully; `server` then finishes.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub server: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    // Dropped last: the database outlives the server using it.
    pub database: std::sync::Arc<TestDatabase>,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// A server on a fresh database, with Redis as its bus.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like `spawn`, with configuration changed by `tweak` first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on_redis(&redis_url(), tweak).await
    }

    /// A server on a fresh database using the Redis at `url` (with its own key prefix).
    pub async fn spawn_on_redis(url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let prefix = redis_prefix();
        let database = std::sync::Arc::new(fresh_database().await);
        Self::start(database, Some((url.to_owned(), prefix)), tweak).await
    }

    /// A server with the in-process bus (no REDIS_URL).
    pub async fn spawn_without_redis() -> Self {
        Self::start(std::sync::Arc::new(fresh_database().await), None, |_| {}).await
    }

    /// Another instance with this one's configuration, database and Redis prefix, as behind a
    /// load balancer.
    pub async fn spawn_peer(&self) -> Self {
        self.spawn_peer_with(|_| {}).await
    }

    /// A peer whose configuration is this one's changed by `tweak`, e.g. after a deployment
    /// changed it.
    pub async fn spawn_peer_with(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let base = self.state.config.clone();
        Self::start(self.database.clone(), self.redis.clone(), move |config| {
            *config = base;
            tweak(config);
        })
        .await
    }

    async fn start(
        database: std::sync::Arc<TestDatabase>,
        redis: Option<(String, String)>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        LazyLock::force(&TRACING);
        let redis_ref = redis
            .as_ref()
            .map(|(url, prefix)| (url.as_str(), prefix.as_str()));
        let mut config = test_config(&database.url, redis_ref);
        tweak(&mut config);
        let state = App::build(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(evently::http::serve(
            listener,
            state.clone(),
            shutdown.clone().cancelled_owned(),
        ));
        Self {
            addr,
            base_url: format!("http://{addr}"),
            state,
            client: reqwest::Client::new(),
            redis,
            shutdown,
            server: std::sync::Mutex::new(Some(server)),
            database,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// Posts a GraphQL request and returns the JSON body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request reaches the server");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.expect("a JSON body")
    }

    /// Like `gql`, but insists on success and returns `data`.
    pub async fn gql_ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A user created directly through the domain layer, signed in.
    pub async fn user(&self, role: Role) -> TestUser {
        signed_in_user(&self.state, role).await
    }

    /// Posts raw bytes to /graphql; returns the status, headers and body (JSON when it is JSON).
    /// A server refusing an oversized body answers before reading it and closes the connection,
    /// which now and then resets it under the client before the answer is read: such a
    /// transport failure is retried, a few times.
    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let body = body.into();
        let mut attempts = 0;
        let response = loop {
            let mut request = self
                .client
                .post(format!("{}/graphql", self.base_url))
                .header("content-type", content_type)
                .body(body.clone());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            attempts += 1;
            match request.send().await {
                Ok(response) => break response,
                Err(error) if attempts < 5 => eprintln!("retrying after {error}"),
                Err(error) => panic!("request does not reach the server: {error}"),
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    /// Posts a JSON value (a request, a batch, anything) to /graphql.
    pub async fn post_json(&self, body: &Value, token: Option<&str>) -> (u16, Value) {
        let (status, _, body) = self
            .post_raw("application/json", body.to_string(), token)
            .await;
        (status, body)
    }

    /// GET `path` (e.g. `/healthz`) from this server.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .unwrap()
    }

    /// GET /readyz: the status code and the JSON body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self.get("/readyz").await;
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Polls readiness until it reports `status` (the probe is what a load balancer polls too).
    pub async fn wait_for_readiness(&self, status: &str) -> (u16, Value) {
        super::eventually(WAIT, || async {
            let (code, body) = self.readiness().await;
            if body["status"] == status {
                Ok((code, body))
            } else {
                Err(format!("readiness stuck at {body}"))
            }
        })
        .await
    }
}

/// A server whose PostgreSQL connections all pass through a [`FaultProxy`], to count or break
/// what it sends; `tweak` changes its configuration as for `TestApp::spawn_with`.
pub async fn spawn_behind_database_proxy(tweak: impl FnOnce(&mut Config)) -> (TestApp, FaultProxy) {
    let (proxy, _) = FaultProxy::in_front_of(&server_url()).await;
    let app = TestApp::spawn_with(|config| {
        config.database_url = proxy.route(&config.database_url);
        tweak(config);
    })
    .await;
    (app, proxy)
}

/// A user created directly through the domain layer, signed in.
pub async fn signed_in_user(state: &AppState, role: Role) -> TestUser {
    let email = format!(
        "{}-{}@example.com",
        role.as_str().to_lowercase(),
        Uuid::new_v4().simple()
    );
    let new = users::NewUser {
        email: &email,
        password: "correct horse battery",
        name: "Test User",
        role,
    };
    let user = users::create_user(&state.db, &state.passwords, new)
        .await
        .unwrap();
    let mut conn = state.conn().await.unwrap();
    let issued = auth::start_session(&mut conn, &state.tokens, user)
        .await
        .unwrap();
    TestUser {
        id: issued.user.id,
        token: issued.access_token,
        refresh_token: issued.refresh_token,
    }
}
