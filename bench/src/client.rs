//! Talking to the server: GraphQL over HTTP, graphql-transport-ws subscriptions, and the
//! accounts and events a scenario needs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Refuses to load anything but this machine.
pub fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("the server URL must start with http://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(loopback, "bench only loads loopback servers, not {host}");
    Ok(())
}

#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    endpoint: String,
    pub ws_endpoint: String,
}

/// What a GraphQL call came to, as a load tool counts it.
#[derive(Debug)]
pub enum Answer {
    Data(Value),
    /// The first error's `extensions.code`.
    Error(String),
}

impl Gql {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_client(
            base,
            reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .tcp_nodelay(true)
                .build()?,
        )
    }

    /// Every request gives up after `timeout`: for runs where a server may hang or vanish.
    pub fn with_timeout(base: &str, timeout: std::time::Duration) -> anyhow::Result<Self> {
        Self::with_client(
            base,
            reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .tcp_nodelay(true)
                .timeout(timeout)
                .build()?,
        )
    }

    fn with_client(base: &str, http: reqwest::Client) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        Ok(Self {
            http,
            endpoint: format!("{base}/graphql"),
            ws_endpoint: format!("{}/graphql/ws", base.replacen("http://", "ws://", 1)),
        })
    }

    pub async fn call(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("HTTP {status}"))?;
        if let Some(error) = body["errors"].get(0) {
            let code = error["extensions"]["code"].as_str().unwrap_or("NO_CODE");
            return Ok(Answer::Error(code.to_owned()));
        }
        Ok(Answer::Data(body["data"].clone()))
    }

    /// `call` with the HTTP status kept, and the body's JSON if it has any (a load balancer's
    /// own error page has none).
    pub async fn call_raw(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<(u16, Option<Value>)> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }

    /// `call` for read-heavy scenarios: true when the answer has data and no errors, found
    /// without parsing the whole body, so the tool spends its CPU on load, not on JSON.
    /// With `Authorization: Bearer <token>` when a token is given, as a signed-in frontend
    /// sends on every request.
    pub async fn call_ok_as(
        &self,
        token: Option<&str>,
        query: &str,
        variables: &Value,
    ) -> anyhow::Result<bool> {
        let body = json!({ "query": query, "variables": variables });
        let mut request = self.http.post(&self.endpoint).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let ok = response.status().is_success();
        let bytes = response.bytes().await?;
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        Ok(ok && bytes.starts_with(b"{\"data\":{") && !has(b"\"errors\":"))
    }

    /// `call` for set-up steps, where any error is fatal.
    pub async fn expect(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        match self.call(token, query, variables).await? {
            Answer::Data(data) => Ok(data),
            Answer::Error(code) => bail!("set-up call failed with {code}: {query}"),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let data = self
            .expect(
                None,
                "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
                json!({ "input": { "email": email, "password": password } }),
            )
            .await
            .with_context(|| format!("logging in as {email}"))?;
        Ok(data["login"]["accessToken"]
            .as_str()
            .context("no token")?
            .to_owned())
    }

    /// Registers `count` buyers (`bench-<run>-<i>@bench.test`) a few at a time, since each
    /// costs an argon2 hash on the server. Returns (user id, access token) pairs.
    pub async fn register_buyers(
        &self,
        run: &str,
        count: usize,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gql, next, run) = (self.clone(), next.clone(), run.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(mine);
                    }
                    let data = gql
                        .expect(
                            None,
                            "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
                            json!({ "input": {
                                "email": format!("bench-{run}-{i}@bench.test"),
                                "password": "bench-password",
                                "name": format!("Bench buyer {i}"),
                            } }),
                        )
                        .await?;
                    let id = data["register"]["user"]["id"].as_str().context("no id")?;
                    let token = data["register"]["accessToken"].as_str().context("no token")?;
                    mine.push((i, id.to_owned(), token.to_owned()));
                }
            }));
        }
        let mut buyers = Vec::with_capacity(count);
        for task in tasks {
            buyers.extend(task.await??);
        }
        buyers.sort_by_key(|(i, ..)| *i);
        Ok(buyers
            .into_iter()
            .map(|(_, id, token)| (id, token))
            .collect())
    }

    pub async fn create_event(
        &self,
        organizer_token: &str,
        title: &str,
        capacity: i64,
        max_per_booking: i64,
    ) -> anyhow::Result<String> {
        let starts = chrono::Utc::now() + chrono::Duration::days(30);
        let data = self
            .expect(
                Some(organizer_token),
                "mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
                json!({ "input": {
                    "title": title,
                    "category": "Benchmark",
                    "venue": "Loopback Arena",
                    "startsAt": starts.to_rfc3339(),
                    "endsAt": (starts + chrono::Duration::hours(3)).to_rfc3339(),
                    "capacity": capacity,
                    "maxPerBooking": max_per_booking,
                } }),
            )
            .await?;
        Ok(data["createEvent"]["id"]
            .as_str()
            .context("no id")?
            .to_owned())
    }
}

pub const BOOK: &str =
    "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { id quantity } }";

/// One graphql-transport-ws connection with one subscription on it.
pub struct Subscriber {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl Subscriber {
    /// Connects from `source` (a loopback address, so that more than one address's worth of
    /// ephemeral ports can be used), acknowledges and subscribes to `query`.
    pub async fn connect(
        ws_endpoint: &str,
        source: Ipv4Addr,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Self> {
        let mut request = ws_endpoint.into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let host = request
            .uri()
            .authority()
            .context("no host")?
            .as_str()
            .to_owned();
        let target: SocketAddr = tokio::net::lookup_host(&host)
            .await?
            .find(SocketAddr::is_ipv4)
            .context("no IPv4 address")?;
        let tcp = TcpSocket::new_v4()?;
        tcp.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        let stream = tcp.connect(target).await?;
        stream.set_nodelay(true)?;
        // Small buffers: ten thousand connections of 128 KiB each would be the tool's own
        // memory problem, not the server's.
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = 4096;
        config.write_buffer_size = 0;
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        socket
            .send(Message::text(
                json!({ "type": "connection_init", "payload": {} }).to_string(),
            ))
            .await?;
        loop {
            let frame = socket
                .next()
                .await
                .context("closed before connection_ack")??;
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(&text)?;
                if message["type"] == "connection_ack" {
                    break;
                }
            }
        }
        socket
            .send(Message::text(
                // A random id, as graphql-ws clients send by default: a shared id would let
                // the server share one message's bytes across connections, which real
                // browsers would not get.
                json!({ "id": uuid::Uuid::new_v4().to_string(), "type": "subscribe",
                        "payload": { "query": query, "variables": variables } })
                .to_string(),
            ))
            .await?;
        Ok(Self { socket })
    }

    /// The next `next` payload's data, answering pings on the way; `None` when it ends.
    pub async fn next_data(&mut self) -> anyhow::Result<Option<Value>> {
        while let Some(frame) = self.socket.next().await {
            let text = match frame? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let message: Value = serde_json::from_str(&text)?;
            match message["type"].as_str() {
                Some("next") => return Ok(Some(message["payload"]["data"].clone())),
                Some("ping") => {
                    self.socket
                        .send(Message::text(json!({ "type": "pong" }).to_string()))
                        .await?;
                }
                Some("complete") => return Ok(None),
                Some("error") => bail!("subscription error: {}", message["payload"]),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The `version` of the next `next` message, read without parsing the JSON: with ten
    /// thousand subscribers the tool must not be the slow reader it measures.
    pub async fn next_version(&mut self) -> anyhow::Result<Option<i64>> {
        while let Some(frame) = self.socket.next().await {
            let text = match frame? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let text = text.as_str();
            if text.contains(r#""type":"next""#) {
                let version = text
                    .split_once(r#""version":"#)
                    .map(|(_, rest)| rest.trim_start())
                    .map(|rest| {
                        rest.split(|c: char| !c.is_ascii_digit())
                            .next()
                            .unwrap_or("")
                    })
                    .and_then(|digits| digits.parse().ok())
                    .with_context(|| format!("no version in {text}"))?;
                return Ok(Some(version));
            }
            if text.contains(r#""type":"ping""#) {
                self.socket
                    .send(Message::text(r#"{"type":"pong"}"#))
                    .await?;
            } else if text.contains(r#""type":"complete""#) {
                return Ok(None);
            } else if text.contains(r#""type":"error""#) {
                bail!("subscription error: {text}");
            }
        }
        Ok(None)
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
