//! Waiting for a condition the test cannot be told about: poll it, with a deadline.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often a condition is looked at again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Runs `check` until it returns `Ok`, and returns that value; fails the test with the last
/// `Err` (what the condition looked like) if `within` runs out first. For conditions on state
/// (a count in SQL, a number of subscribers, a probe's answer), never as a pause: a test that
/// needs time to pass says so with the clock it waits for.
pub async fn eventually<T, E, F>(within: Duration, mut check: impl FnMut() -> F) -> T
where
    E: Debug,
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(state) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {state:?}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
