//! Node, running the scripts of tests/js (npm `graphql-ws`, pinned in tests/js/package-lock.json)
//! against a real server. `scripts/test.sh` runs `npm ci` in tests/js first.

use std::time::Duration;

use serde_json::Value;

/// Runs a script of tests/js with Node and the given environment, and returns the JSON it
/// prints; fails the test if it fails or takes over a minute.
pub async fn run_node(script: &str, env: &[(&str, &str)]) -> Value {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    assert!(
        std::path::Path::new(js)
            .join("node_modules/graphql-ws")
            .exists(),
        "run `npm ci` in tests/js (scripts/test.sh does)"
    );
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(script)
            .current_dir(js)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the node client finishes")
    .expect("node is installed (scripts/services.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}
