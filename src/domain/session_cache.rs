//! Signed-in sessions cached per instance, so a signed-in request does not read its session
//! from PostgreSQL each time, while a logout, a revocation or a role change still takes effect
//! on every instance before it answers, Redis down or not.
//!
//! # Why an ended session is never served from a cache after its logout answered
//!
//! PostgreSQL keeps one counter, the session epoch, raised in the transaction of every change
//! that ends a session or narrows its user's rights (`auth::revoke_session`,
//! `auth::revoke_user_sessions`, `users::set_role`). Each instance reads it every
//! `lease / 5` and holds a **lease**: the cache may answer until `lease` after the start of its
//! last successful read (taken once the connection is in hand, so the read's snapshot is
//! later than that instant); when the counter moved, the cache is emptied first. The change,
//! once committed, **waits out one lease** ([`SessionCache::settle`]) before it answers.
//!
//! Say the change committed at `c` and answers at `a >= c + lease`. An instance whose last read
//! started after `c` saw the new epoch and emptied its cache. One whose last read started at
//! `s < c` may answer from its cache only until `s + lease < c + lease <= a`. So no request
//! arriving after the answer is served a session the change ended. A session being read from
//! PostgreSQL while the cache is emptied is not kept (a read is stored only if no emptying
//! happened since it began), and a read that starts after `c` sees the change itself.
//!
//! Nothing here depends on Redis or on clocks agreeing across machines (only on each
//! machine's clock running at about the same rate over one lease): with PostgreSQL out of
//! reach the lease runs out and every request asks PostgreSQL, as before. The price is one
//! tiny read per instance every `lease / 5` and a logout that takes one lease longer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::Viewer;
use super::auth::{self, Claims};
use crate::db::DbPool;
use crate::error::AppResult;

/// Sessions kept at most; the cache is emptied when it is full (a new lease fills it again).
const MAX_ENTRIES: usize = 100_000;
/// An entry is read again after this long even if nothing changed, so that anything the
/// epoch does not cover (an operator's hand edit) heals by itself.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct SessionCache(Arc<Inner>);

struct Inner {
    /// Zero: no cache, every lookup reads PostgreSQL.
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    epoch: Option<i64>,
    /// Raised whenever the entries are dropped, so a read that began before is not stored.
    generation: u64,
    /// The cache may answer until then.
    valid_until: Option<Instant>,
    entries: HashMap<Uuid, Entry>,
}

struct Entry {
    viewer: Viewer,
    session_expires_at: DateTime<Utc>,
    stored_at: Instant,
}

impl SessionCache {
    /// A cache holding leases of `lease`; zero turns it off. [`SessionCache::spawn_reader`]
    /// starts the epoch reads.
    pub fn new(lease: Duration) -> Self {
        Self(Arc::new(Inner {
            lease,
            state: Mutex::new(State::default()),
        }))
    }

    /// Reads the session epoch every `lease / 5` for as long as the process runs.
    pub fn spawn_reader(&self, pool: DbPool) {
        if self.0.lease.is_zero() {
            return;
        }
        let inner = Arc::downgrade(&self.0);
        let every = self.0.lease / 5;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let Ok(mut conn) = pool.get().await else {
                    continue;
                };
                let started = Instant::now();
                match auth::session_epoch(&mut conn).await {
                    Ok(epoch) => inner.renew(epoch, started),
                    Err(error) => tracing::debug!(%error, "session epoch not read"),
                }
            }
        });
    }

    /// The signed-in user of a token whose signature and expiry were checked (`claims`): from
    /// the cache while the lease holds, else read from PostgreSQL (with `conn`'s connection)
    /// and kept.
    pub async fn viewer<C, F>(&self, claims: &Claims, conn: F) -> AppResult<Viewer>
    where
        F: FnOnce() -> C,
        C: std::future::Future<Output = AppResult<crate::db::DbConn>>,
    {
        let generation = match self.cached(claims) {
            Ok(viewer) => return Ok(viewer),
            Err(generation) => generation,
        };
        let mut conn = conn().await?;
        let (viewer, expires_at) = auth::session_viewer(&mut conn, claims).await?;
        if !self.0.lease.is_zero() {
            self.0.store(generation, &viewer, expires_at);
        }
        Ok(viewer)
    }

    /// Waits out one lease: after a committed change that raised the epoch, and before it
    /// answers, so that every instance has let go of what it changed (see the module doc).
    pub async fn settle(&self) {
        tokio::time::sleep(self.0.lease).await;
    }

    /// The cached viewer, or the generation to store a fresh read under.
    fn cached(&self, claims: &Claims) -> Result<Viewer, u64> {
        let state = self.0.state.lock().unwrap();
        let now = Instant::now();
        let leased = state.valid_until.is_some_and(|until| now < until);
        match state.entries.get(&claims.sid) {
            Some(entry)
                if leased
                    && entry.viewer.user.id == claims.sub
                    && entry.session_expires_at > Utc::now()
                    && now.duration_since(entry.stored_at) < MAX_AGE =>
            {
                Ok(entry.viewer.clone())
            }
            _ => Err(state.generation),
        }
    }
}

impl Inner {
    fn renew(&self, epoch: i64, started: Instant) {
        let mut state = self.state.lock().unwrap();
        if state.epoch != Some(epoch) {
            state.entries.clear();
            state.generation += 1;
            state.epoch = Some(epoch);
        }
        let until = started + self.lease;
        if state.valid_until.is_none_or(|current| current < until) {
            state.valid_until = Some(until);
        }
    }

    fn store(&self, generation: u64, viewer: &Viewer, session_expires_at: DateTime<Utc>) {
        let mut state = self.state.lock().unwrap();
        if state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(
            viewer.session_id,
            Entry {
                viewer: viewer.clone(),
                session_expires_at,
                stored_at: Instant::now(),
            },
        );
    }
}
