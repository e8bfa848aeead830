//! Logs as an operator's log shipper reads them: the `evently` binary in a process of its own
//! with `LOG_FORMAT=json`, its stderr read line by line.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{TEST_JWT_SECRET, WAIT, eventually, fresh_database};

/// A server process and the lines it has written to stderr so far.
pub struct ServerProcess {
    _child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The `evently` binary serving on a port of its own over `database_url`, with the in-process
/// bus and the environment `env` adds; its address is read from what it prints once it
/// serves. Its stderr is collected (and echoed when TEST_LOG is set).
pub async fn evently_process(database_url: &str, env: &[(&str, &str)]) -> (ServerProcess, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evently"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("EVENTLY_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the evently binary starts");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let kept = stderr.clone();
    // Drained as it comes, so a chatty server never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("{line}");
            }
            kept.lock().unwrap().push(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT * 4, stdout.next_line())
        .await
        .expect("evently says where it serves")
        .unwrap()
        .unwrap_or_else(|| panic!("no line on stdout; stderr: {:?}", stderr.lock().unwrap()));
    let address = line
        .strip_prefix("GraphiQL: http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    let server = ServerProcess {
        _child: child,
        stderr,
    };
    (server, format!("http://{address}"))
}

/// The first JSON log line the server wrote that `wanted` accepts, waiting for it.
pub async fn json_log_line(server: &mut ServerProcess, wanted: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, || async {
        let lines = server.stderr.lock().unwrap();
        lines
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| wanted(line))
            .ok_or_else(|| format!("no such line in:\n{}", lines.join("\n")))
    })
    .await
}

#[tokio::test]
async fn json_log_lines_of_a_request_carry_its_request_id_and_trace_id() {
    let database = fresh_database().await;
    let (mut server, base) = evently_process(
        &database.url,
        &[
            ("LOG_FORMAT", "json"),
            // tower-http logs each response at debug: one line per request.
            ("RUST_LOG", "evently=info,tower_http=debug,warn"),
        ],
    )
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("x-request-id", "logged-request-77c1")
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = json_log_line(&mut server, |line| {
        line["span"]["request_id"] == "logged-request-77c1"
    })
    .await;
    // Traces are off here: the trace id is the one the request came with.
    assert_eq!(line["span"]["trace_id"], trace_id, "{line}");
    assert!(
        line["timestamp"].is_string() && line["level"].is_string(),
        "{line}"
    );

    // Every line is JSON, the start-up lines too.
    let lines = server.stderr.lock().unwrap().clone();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[tokio::test]
async fn without_a_traceparent_a_request_has_no_trace_id_when_traces_are_off() {
    let database = fresh_database().await;
    let (mut server, base) = evently_process(
        &database.url,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "evently=info,tower_http=debug,warn"),
        ],
    )
    .await;
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("x-request-id", "untraced-request-3f0a")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let line = json_log_line(&mut server, |line| {
        line["span"]["request_id"] == "untraced-request-3f0a"
    })
    .await;
    assert!(line["span"].get("trace_id").is_none(), "{line}");
}
