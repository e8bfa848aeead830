//! Waiting for a condition the test cannot be told about: poll it, with a deadline.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How long a test waits for what should come at once (a message, a probe's change, a slot
/// given back) before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a condition is looked at again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// What one look at a condition found: done (with a value), or not yet (and what it saw).
pub trait Check {
    type Done;
    fn done(self) -> Result<Self::Done, String>;
}

impl Check for bool {
    type Done = ();
    fn done(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("still false".into())
        }
    }
}

impl<T> Check for Option<T> {
    type Done = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "still nothing".into())
    }
}

impl<T, E: Debug> Check for Result<T, E> {
    type Done = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:?}"))
    }
}

/// Runs `check` until it is done, and returns what it found; fails the test with the last thing
/// it saw if `within` runs out first. For conditions on state (a count in SQL, a number of
/// subscribers, a probe's answer, a slot given back), never as a pause.
pub async fn eventually<C: Check, F: Future<Output = C>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> C::Done {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await.done() {
            Ok(done) => return done,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {seen}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
