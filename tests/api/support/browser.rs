//! Drives Debian's headless Chromium over the DevTools protocol, so a test can use the
//! GraphiQL page the way a person would, and prove it needs nothing but our server.
//! Only a WebSocket client is needed: the browser-level DevTools socket can create
//! and attach to the page itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Covers a cold browser start on a busy two-core CI machine; every wait below
/// shares this one deadline, so a broken page fails in bounded time.
const TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Set to use another Chromium binary than Debian's.
const CHROMIUM_ENV: &str = "CHROMIUM";
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";

const QUERY_EDITOR: &str = ".graphiql-query-editor .CodeMirror";
const EXECUTE_BUTTON: &str = ".graphiql-execute-button";
const RESULT_PANE: &str = ".result-window .CodeMirror";

/// Opens `{base_url}/graphql` in headless Chromium, types `query` into the GraphiQL editor,
/// presses the execute button and returns the text of the result pane once it contains `expect`.
///
/// Also fails if the page requested anything from another origin than `base_url`:
/// GraphiQL must work without internet access.
pub async fn run_query_in_graphiql(
    base_url: &str,
    query: &str,
    expect: &str,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut chromium = Chromium::launch()?;
    let (mut connected, mut closing) = (false, false);
    let outcome = async {
        let mut cdp = Cdp::connect(&chromium.devtools_url(deadline).await?, deadline).await?;
        connected = true;
        let outcome = use_graphiql(&mut cdp, base_url, query, expect).await;
        // Lets Chromium exit cleanly and release its profile before we delete it.
        closing = cdp.close_browser().await;
        outcome
    }
    .await;
    let outcome = outcome.map_err(|error| chromium.explain(error, connected));
    chromium.shutdown(closing).await;
    outcome
}

/// Opens `{base_url}{path}` in headless Chromium and hands the page to `drive` (to type,
/// click, wait and take screenshots through [`Cdp`]). Also fails if the page requested
/// anything from another origin than `base_url`.
pub async fn with_page<T>(
    base_url: &str,
    path: &str,
    drive: impl AsyncFnOnce(&mut Cdp) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + TIMEOUT;
    let mut chromium = Chromium::launch()?;
    let (mut connected, mut closing) = (false, false);
    let outcome = async {
        let mut cdp = Cdp::connect(&chromium.devtools_url(deadline).await?, deadline).await?;
        connected = true;
        let outcome = async {
            let target = cdp
                .call("Target.createTarget", json!({ "url": "about:blank" }))
                .await?;
            let target_id = target["targetId"]
                .as_str()
                .context("no targetId")?
                .to_owned();
            let attached = cdp
                .call(
                    "Target.attachToTarget",
                    json!({ "targetId": target_id, "flatten": true }),
                )
                .await?;
            cdp.session = Some(
                attached["sessionId"]
                    .as_str()
                    .context("no sessionId")?
                    .to_owned(),
            );
            cdp.call("Network.enable", json!({})).await?;
            cdp.call("Runtime.enable", json!({})).await?;
            let url = format!("{}{path}", base_url.trim_end_matches('/'));
            let navigation = cdp.call("Page.navigate", json!({ "url": url })).await?;
            if let Some(error) = navigation["errorText"].as_str() {
                bail!("cannot load {url}: {error}");
            }
            let value = drive(&mut cdp).await?;
            let foreign: Vec<&String> = cdp
                .requests
                .iter()
                .filter(|request| !same_origin(request, base_url))
                .collect();
            ensure!(
                foreign.is_empty(),
                "the page requested resources from elsewhere: {foreign:?}"
            );
            Ok(value)
        }
        .await;
        closing = cdp.close_browser().await;
        outcome
    }
    .await;
    let outcome = outcome.map_err(|error| chromium.explain(error, connected));
    chromium.shutdown(closing).await;
    outcome
}

async fn use_graphiql(
    cdp: &mut Cdp,
    base_url: &str,
    query: &str,
    expect: &str,
) -> anyhow::Result<String> {
    let target = cdp
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await?;
    let target_id = target["targetId"]
        .as_str()
        .context("Target.createTarget returned no targetId")?;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )
        .await?;
    let session = attached["sessionId"]
        .as_str()
        .context("Target.attachToTarget returned no sessionId")?;
    cdp.session = Some(session.to_owned());
    cdp.call("Network.enable", json!({})).await?;
    cdp.call("Runtime.enable", json!({})).await?;

    let url = format!("{}/graphql", base_url.trim_end_matches('/'));
    let navigation = cdp.call("Page.navigate", json!({ "url": url })).await?;
    if let Some(error) = navigation["errorText"].as_str() {
        bail!("cannot load {url}: {error}");
    }

    cdp.wait_for(
        "GraphiQL to render its query editor",
        &format!("!!document.querySelector({QUERY_EDITOR:?})?.CodeMirror"),
        |rendered| rendered.as_bool() == Some(true),
    )
    .await?;
    let query = serde_json::to_string(query)?;
    cdp.eval(&format!(
        "document.querySelector({QUERY_EDITOR:?}).CodeMirror.setValue({query})"
    ))
    .await?;
    // GraphiQL digests edits after a 100 ms debounce, ending with saving the query to
    // localStorage; clicking earlier would run with the previous query's parsed
    // document and, for a subscription, send it over HTTP instead of the WebSocket.
    cdp.wait_for(
        "GraphiQL to take in the query",
        &format!("localStorage.getItem('graphiql:query') === {query}"),
        |taken| taken.as_bool() == Some(true),
    )
    .await?;
    let clicked = cdp
        .eval(&format!(
            "(button => (button?.click(), !!button))(document.querySelector({EXECUTE_BUTTON:?}))"
        ))
        .await?;
    ensure!(
        clicked.as_bool() == Some(true),
        "GraphiQL has no execute button ({EXECUTE_BUTTON})"
    );
    let result = cdp
        .wait_for(
            &format!("the result pane to contain {expect:?}"),
            &format!("document.querySelector({RESULT_PANE:?})?.CodeMirror.getValue() ?? ''"),
            |text| text.as_str().is_some_and(|text| text.contains(expect)),
        )
        .await?;

    let foreign: Vec<&String> = cdp
        .requests
        .iter()
        .filter(|request| !same_origin(request, base_url))
        .collect();
    ensure!(
        foreign.is_empty(),
        "GraphiQL requested resources from outside {base_url}: {foreign:?}"
    );
    Ok(result.as_str().unwrap_or_default().to_owned())
}

/// Non-network URLs (data:, blob:, about:) count as local: they are never fetched.
fn same_origin(url: &str, base_url: &str) -> bool {
    fn origin(url: &str) -> Option<(&str, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        Some((scheme, authority))
    }
    let scheme = url.split(':').next().unwrap_or_default();
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        return true;
    }
    match (origin(url), origin(base_url)) {
        (Some((_, authority)), Some((_, base_authority))) => {
            authority.eq_ignore_ascii_case(base_authority)
        }
        _ => false,
    }
}

/// A Chromium process with its own throw-away profile; dropping it kills the
/// process and deletes the profile, also when the caller fails or is cancelled.
struct Chromium {
    // Declared before `dir` so the process dies before its profile is removed.
    child: Child,
    dir: TempDir,
}

impl Chromium {
    fn launch() -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let stderr = std::fs::File::create(dir.stderr_log())
            .context("cannot create Chromium's stderr log")?;
        let program = std::env::var_os(CHROMIUM_ENV).unwrap_or_else(|| CHROMIUM_DEFAULT.into());
        let child = Command::new(&program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                // Without these Chromium phones home, and stalls on a machine without internet.
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.profile().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (install it with `apt-get install -y chromium`, \
                     or set {CHROMIUM_ENV} to a Chromium binary)",
                    Path::new(&program).display()
                )
            })?;
        Ok(Self { child, dir })
    }

    /// With `--remote-debugging-port=0` Chromium picks a free port and only tells
    /// through this file.
    async fn devtools_url(&mut self, deadline: Instant) -> anyhow::Result<String> {
        let file = self.dir.profile().join("DevToolsActivePort");
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&file).await {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return Ok(format!("ws://127.0.0.1:{port}{path}"));
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("Chromium exited before opening DevTools ({status})");
            }
            if Instant::now() >= deadline {
                bail!("Chromium did not write {} in time", file.display());
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Appends the end of Chromium's stderr, which usually says why Chromium failed;
    /// a failure in the page of a browser that still runs is explained well enough.
    fn explain(&mut self, error: anyhow::Error, connected: bool) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(None) if connected => return error,
            Ok(None) => "is still running".to_owned(),
            Ok(Some(status)) => format!("has exited ({status})"),
            Err(wait_error) => format!("is in an unknown state ({wait_error})"),
        };
        let log = std::fs::read_to_string(self.dir.stderr_log()).unwrap_or_default();
        // Without a system bus (containers, CI) Chromium logs D-Bus errors that never matter.
        let lines: Vec<&str> = log.lines().filter(|line| !line.contains("dbus")).collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        anyhow!("{error:#}\n\nChromium {status}; its stderr ends with:\n{tail}")
    }

    /// `closing`: Chromium acknowledged `Browser.close`, so it is worth waiting for.
    async fn shutdown(mut self, closing: bool) {
        let exited = closing
            && timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok();
        if !exited {
            let _ = self.child.kill().await;
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "evently-chromium-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from a crashed run with a recycled pid must not be reused.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    fn profile(&self) -> PathBuf {
        self.0.join("profile")
    }

    fn stderr_log(&self) -> PathBuf {
        self.0.join("stderr.log")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal DevTools protocol client: one request at a time, with the events that
/// arrive meanwhile kept only as far as they explain a failure.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    deadline: Instant,
    /// The attached page; `None` addresses the browser itself.
    session: Option<String>,
    /// Every URL the page requested, WebSockets included.
    requests: Vec<String>,
    /// Uncaught exceptions, console errors and failed loads, to explain a timeout.
    problems: Vec<String>,
}

impl Cdp {
    async fn connect(url: &str, deadline: Instant) -> anyhow::Result<Self> {
        let (ws, _) = timeout_at(deadline, connect_async(url))
            .await
            .context("timed out connecting to Chromium's DevTools")?
            .with_context(|| format!("cannot connect to Chromium's DevTools at {url}"))?;
        Ok(Self {
            ws,
            next_id: 0,
            deadline,
            session: None,
            requests: Vec::new(),
            problems: Vec::new(),
        })
    }

    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            request["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .with_context(|| format!("cannot send {method} to Chromium"))?;
        loop {
            let frame = timeout_at(self.deadline, self.ws.next())
                .await
                .with_context(|| format!("timed out waiting for Chromium to answer {method}"))?
                .with_context(|| format!("Chromium closed DevTools during {method}"))?
                .with_context(|| format!("DevTools connection failed during {method}"))?;
            let Message::Text(text) = frame else {
                continue;
            };
            let mut message: Value = serde_json::from_str(text.as_str())
                .context("Chromium sent a DevTools message that is not JSON")?;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    bail!("{method} failed: {error}");
                }
                return Ok(message["result"].take());
            }
            self.record(&message);
        }
    }

    fn record(&mut self, event: &Value) {
        let params = &event["params"];
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => self.requests.push(text(&params["request"]["url"])),
            "Network.webSocketCreated" => self.requests.push(text(&params["url"])),
            "Network.responseReceived" => {
                let response = &params["response"];
                if response["status"]
                    .as_u64()
                    .is_some_and(|status| status >= 400)
                {
                    self.problems.push(format!(
                        "HTTP {} for {}",
                        response["status"],
                        text(&response["url"])
                    ));
                }
            }
            "Network.loadingFailed" => self
                .problems
                .push(format!("load failed: {}", text(&params["errorText"]))),
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                let description = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("unknown exception");
                self.problems
                    .push(format!("uncaught exception: {description}"));
            }
            "Runtime.consoleAPICalled" if params["type"] == "error" => {
                let args = params["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let message: Vec<String> = args
                    .iter()
                    .map(|arg| match arg.get("value") {
                        Some(Value::String(value)) => value.clone(),
                        Some(value) => value.to_string(),
                        None => text(&arg["description"]),
                    })
                    .collect();
                self.problems
                    .push(format!("console.error: {}", message.join(" ")));
            }
            _ => {}
        }
    }

    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let mut reply = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            bail!(
                "script failed in the page: {}\nscript: {expression}",
                details["exception"]["description"]
                    .as_str()
                    .unwrap_or("unknown exception")
            );
        }
        Ok(reply["result"]["value"].take())
    }

    /// Polls `expression` until `done` accepts its value.
    pub async fn wait_for(
        &mut self,
        what: &str,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        loop {
            let value = self.eval(expression).await?;
            if done(&value) {
                return Ok(value);
            }
            if Instant::now() + POLL_INTERVAL >= self.deadline {
                bail!(
                    "timed out waiting for {what}; last value: {value}\npage problems: {:#?}",
                    self.problems
                );
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether Chromium agreed to close; one that did not is killed instead.
    async fn close_browser(&mut self) -> bool {
        self.session = None;
        self.deadline = Instant::now() + Duration::from_secs(5);
        self.call("Browser.close", json!({})).await.is_ok()
    }
}
