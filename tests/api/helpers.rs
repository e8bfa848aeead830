//! The test harness: every test gets its own database, copied from a migrated template, its own
//! Redis key prefix, and a real server on 127.0.0.1:0. Logs are hidden unless TEST_LOG is set.

use std::net::SocketAddr;
use std::sync::LazyLock;

use diesel::QueryableByName;
use diesel::sql_types::{Integer, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use evently::app::{App, AppState};
use evently::config::{Config, PasswordHashing, RateLimit, RateLimits};
use evently::db::models::Role;
use evently::domain::{auth, users};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The server the tests use; override with TEST_DATABASE_URL (any database on it: the harness
/// creates its own).
fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

fn database_url(name: &str) -> String {
    let base = server_url();
    let cut = base.rfind('/').unwrap_or(base.len());
    format!("{}/{name}", &base[..cut])
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("evently=debug,info")
            .try_init();
    }
});

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Creates and migrates this process's template database once; also drops databases left by
/// earlier test runs whose process is gone.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let pid = std::process::id();
            let mut admin = AsyncPgConnection::establish(&server_url())
                .await
                .expect("PostgreSQL must be running for the tests (see README)");
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = diesel::sql_types::Text)]
                datname: String,
            }
            let stale: Vec<Name> = diesel::sql_query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'evently\\_t\\_%' OR datname LIKE 'evently\\_tpl\\_%'",
            )
            .load(&mut admin)
            .await
            .unwrap();
            for Name { datname } in stale {
                let owner = datname.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                if owner.is_some_and(|p| p != pid && !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)")).await;
                }
            }
            let name = format!("evently_tpl_{pid}");
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.unwrap();
            admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
            evently::db::run_migrations(&database_url(&name)).await.expect("migrations apply");
            name
        })
        .await
}

/// A fresh, migrated, empty database; dropped when the returned guard is dropped.
pub async fn fresh_database() -> TestDatabase {
    let template = template().await;
    let name = format!(
        "evently_t_{}_{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = AsyncPgConnection::establish(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .await
        .unwrap();
    TestDatabase {
        url: database_url(&name),
        name,
    }
}

pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // A separate thread: this may run inside the test's runtime, which cannot block_on.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&server_url()).await.ok()?;
                admin.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

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
        let prefix = format!("evently:test:{}:", Uuid::new_v4().simple());
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
        let user = users::create_user(&self.state.db, &self.state.passwords, new)
            .await
            .unwrap();
        let mut conn = self.state.conn().await.unwrap();
        let issued = auth::start_session(&mut conn, &self.state.tokens, user)
            .await
            .unwrap();
        TestUser {
            id: issued.user.id,
            token: issued.access_token,
            refresh_token: issued.refresh_token,
        }
    }

    /// Creates an upcoming event through the API and returns its id.
    pub async fn event(&self, organizer: &TestUser, capacity: i32) -> String {
        let data = self
            .gql_ok(
                Some(&organizer.token),
                "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
                json!({ "input": event_input("Test Event", capacity) }),
            )
            .await;
        data["createEvent"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database.url)
            .await
            .unwrap()
    }

    /// A connection holding the event's row lock in an open transaction, so that bookings of it
    /// wait in the database until it is rolled back or dropped.
    pub async fn hold_event_row(&self, event_id: &str) -> AsyncPgConnection {
        let mut conn = self.db().await;
        diesel_async::SimpleAsyncConnection::batch_execute(
            &mut conn,
            &format!("BEGIN; SELECT id FROM events WHERE id = '{event_id}' FOR UPDATE"),
        )
        .await
        .unwrap();
        conn
    }

    /// Checks, in SQL, for every event: `seats_available + seats_held + confirmed seats =
    /// capacity`, `seats_held` = the seats of its live (HELD) holds, and for seated events
    /// that exactly the held and booked seats have claims, each belonging to a live hold or a
    /// confirmed booking of that event.
    pub async fn assert_invariant(&self) {
        #[derive(QueryableByName, Debug)]
        struct Row {
            #[expect(dead_code, reason = "named in failure messages")]
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
            #[diesel(sql_type = Integer)]
            capacity: i32,
            #[diesel(sql_type = Integer)]
            seats_available: i32,
            #[diesel(sql_type = Integer)]
            seats_held: i32,
            #[diesel(sql_type = Integer)]
            confirmed: i32,
            #[diesel(sql_type = Integer)]
            in_holds: i32,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            seated: bool,
            #[diesel(sql_type = Integer)]
            claims: i32,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT e.id, e.capacity, e.seats_available, e.seats_held, e.venue_id IS NOT NULL AS seated,
                    COALESCE((SELECT SUM(b.quantity) FROM bookings b
                              WHERE b.event_id = e.id AND b.status = 'CONFIRMED'), 0)::int AS confirmed,
                    COALESCE((SELECT SUM(h.quantity) FROM holds h
                              WHERE h.event_id = e.id AND h.status = 'HELD'), 0)::int AS in_holds,
                    (SELECT count(*) FROM seat_claims c WHERE c.event_id = e.id)::int AS claims
             FROM events e",
        )
        .load(&mut self.db().await)
        .await
        .unwrap();
        for row in rows {
            assert_eq!(
                row.seats_available + row.seats_held + row.confirmed,
                row.capacity,
                "invariant broken: {row:?}"
            );
            assert_eq!(
                row.seats_held, row.in_holds,
                "held seats miscounted: {row:?}"
            );
            if row.seated {
                assert_eq!(
                    row.claims,
                    row.seats_held + row.confirmed,
                    "seat claims do not match held and booked seats: {row:?}"
                );
            }
        }
        let stray = self
            .count(
                "seat_claims c
                 LEFT JOIN holds h ON h.id = c.hold_id AND h.event_id = c.event_id AND h.status = 'HELD'
                 LEFT JOIN bookings b ON b.id = c.booking_id AND b.event_id = c.event_id
                     AND b.status = 'CONFIRMED'
                 WHERE h.id IS NULL AND b.id IS NULL",
            )
            .await;
        assert_eq!(stray, 0, "seat claims of ended holds or cancelled bookings");
    }

    /// Counts rows matching a SQL condition on a table, for post-hoc checks.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let row: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {sql}"))
            .get_result(&mut self.db().await)
            .await
            .unwrap();
        row.n
    }
}

pub fn event_input(title: &str, capacity: i32) -> Value {
    let starts = chrono::Utc::now() + chrono::Duration::days(7);
    json!({
        "title": title,
        "category": "Music",
        "venue": "Test Hall",
        "startsAt": starts.to_rfc3339(),
        "endsAt": (starts + chrono::Duration::hours(2)).to_rfc3339(),
        "capacity": capacity,
    })
}

/// The `extensions.code` of the first error, or panics if there is none.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub const BOOK: &str =
    "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { id quantity status } }";
pub const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status cancelledAt } }";

impl TestApp {
    /// Row counts and a checksum of every row of every table: equal fingerprints mean
    /// nothing was written in between.
    pub async fn fingerprint(&self) -> String {
        #[derive(QueryableByName)]
        struct Fingerprint {
            #[diesel(sql_type = diesel::sql_types::Text)]
            fingerprint: String,
        }
        let tables = ["users", "sessions", "refresh_tokens", "events", "bookings"];
        let parts = tables
            .iter()
            .map(|table| {
                format!(
                    "'{table}:' || (SELECT count(*) FROM {table}) || ':' || \
                     (SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t)"
                )
            })
            .collect::<Vec<_>>()
            .join(" || ' ' || ");
        let row: Fingerprint = diesel::sql_query(format!("SELECT {parts} AS fingerprint"))
            .get_result(&mut self.db().await)
            .await
            .unwrap();
        row.fingerprint
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
}

/// Signs `claims` as a token the server would issue, unless told otherwise.
pub fn sign(
    claims: &Value,
    kid: Option<&str>,
    secret: &str,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The claims of a valid access token for `user` in `session`.
pub fn claims(user: Uuid, session: Uuid) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": user, "sid": session, "role": "USER", "jti": Uuid::new_v4(),
        "iat": now, "nbf": now, "exp": now + 900, "iss": "evently", "aud": "evently-api",
    })
}

/// A server whose PostgreSQL connections all pass through a [`FaultProxy`], to count or break
/// what it sends; `tweak` changes its configuration as for `TestApp::spawn_with`.
pub async fn spawn_behind_database_proxy(
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, crate::fault_proxy::FaultProxy) {
    let (proxy, _) = crate::fault_proxy::FaultProxy::in_front_of(&server_url()).await;
    let app = TestApp::spawn_with(|config| {
        config.database_url = proxy.route(&config.database_url);
        tweak(config);
    })
    .await;
    (app, proxy)
}
