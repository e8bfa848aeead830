//! The sold-out hint. Once a batch finds an event sold out, the instance remembers it briefly
//! and answers SOLD_OUT without touching PostgreSQL: to requests without an idempotency key,
//! and to those whose key no booking of the event had at that version (the keys are loaded
//! once per sold-out version). A retry whose key booked gets its booking back. The hint only
//! ever refuses, never confirms; it lapses after [`SOLD_OUT_HINT_TTL`], and is dropped as soon
//! as the bus shows the event at any other version, committed by any instance (a key may have
//! booked since): the layer above the domain feeds it those versions
//! ([`super::Announcer::seat_versions`]). With Redis down, other instances' commits are
//! unseen: the TTL bounds that.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use uuid::Uuid;

use crate::db::DbPool;
use crate::db::models::{Event, EventStatus};
use crate::db::schema::bookings;
use crate::error::AppResult;

/// How long a sold-out event is answered from memory before PostgreSQL is asked again.
pub const SOLD_OUT_HINT_TTL: Duration = Duration::from_millis(250);

/// The versions of an event's seat counts as committed by any instance (see
/// `Announcer::seat_versions`).
pub type SeatVersions = BoxStream<'static, i32>;

/// What this instance knows about a sold-out event.
struct SoldOut {
    /// When PostgreSQL last said so.
    at: Instant,
    /// The event's version then; `None` when only a refusal was seen.
    version: Option<i32>,
    /// Fingerprints of the idempotency keys booked for the event as of `version`, loaded once
    /// per sold-out version: a request with a key not among them is not the retry of a booking
    /// and is refused without a query. `None` until loaded.
    keys: Option<Arc<HashSet<u64>>>,
}

/// The hints of one instance: when PostgreSQL last said each event was sold out. Lapsed hints
/// are dropped whenever one is added, so the map holds only events that sold out recently.
pub(super) struct SoldOutHints {
    hints: Arc<Mutex<HashMap<Uuid, SoldOut>>>,
    /// Where a new sold-out version's keys are read.
    db: DbPool,
}

/// A hint older than this is forgotten; one younger than it but past [`SOLD_OUT_HINT_TTL`] is
/// kept, not trusted, so a batch finding the same sold-out version again reuses its keys.
const HINT_KEPT: Duration = Duration::from_secs(60);

fn forget_old_hints(hints: &mut HashMap<Uuid, SoldOut>) {
    hints.retain(|_, hint| hint.at.elapsed() < HINT_KEPT);
}

fn lock(hints: &Mutex<HashMap<Uuid, SoldOut>>) -> MutexGuard<'_, HashMap<Uuid, SoldOut>> {
    hints.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loads the keys booked for a sold-out event as of `version`, then drops the hint as soon as
/// the bus shows the event at another version (a cancellation, a booking on another
/// instance), or once the hint is gone.
async fn watch_sold_out(
    hints: Arc<Mutex<HashMap<Uuid, SoldOut>>>,
    db: DbPool,
    event_id: Uuid,
    version: i32,
    mut versions: SeatVersions,
) {
    let is_current = |hint: Option<&SoldOut>| hint.is_some_and(|h| h.version == Some(version));
    let rows: AppResult<Vec<(Uuid, Option<String>)>> = async {
        let mut conn = db.get().await?;
        Ok(bookings::table
            .filter(bookings::event_id.eq(event_id))
            .filter(bookings::idempotency_key.is_not_null())
            .select((bookings::user_id, bookings::idempotency_key))
            .load(&mut conn)
            .await?)
    }
    .await;
    // Without them, requests with a key keep asking PostgreSQL.
    if let Ok(rows) = rows {
        let keys: HashSet<u64> = rows
            .iter()
            .filter_map(|(user, key)| Some(fingerprint(*user, key.as_deref()?)))
            .collect();
        match lock(&hints).get_mut(&event_id) {
            Some(hint) if hint.version == Some(version) => hint.keys = Some(Arc::new(keys)),
            _ => return,
        }
    }
    loop {
        match tokio::time::timeout(SOLD_OUT_HINT_TTL, versions.next()).await {
            Ok(Some(seen)) if seen != version => {
                let mut hints = lock(&hints);
                if is_current(hints.get(&event_id)) {
                    hints.remove(&event_id);
                }
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(_quiet) if !is_current(lock(&hints).get(&event_id)) => return,
            Err(_quiet) => {}
        }
    }
}

/// A collision only sends a request the slow way, never refuses a retry.
fn fingerprint(user_id: Uuid, key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (user_id, key).hash(&mut hasher);
    hasher.finish()
}

impl SoldOutHints {
    pub(super) fn new(db: DbPool) -> Self {
        Self {
            hints: Arc::default(),
            db,
        }
    }

    /// Whether the event is known to be sold out, lately enough to be trusted.
    pub(super) fn known(&self, event_id: Uuid) -> bool {
        lock(&self.hints)
            .get(&event_id)
            .is_some_and(|hint| hint.at.elapsed() < SOLD_OUT_HINT_TTL)
    }

    /// Whether a request for the event, by `user_id` with `key`, is certain to be refused:
    /// the event is known to be sold out, and the request has no key, or one that no booking
    /// of the event had when it sold out.
    pub(super) fn refuses(&self, event_id: Uuid, user_id: Uuid, key: Option<&str>) -> bool {
        let hints = lock(&self.hints);
        let Some(hint) = hints.get(&event_id) else {
            return false;
        };
        if hint.at.elapsed() >= SOLD_OUT_HINT_TTL {
            return false;
        }
        match (key, &hint.keys) {
            (None, _) => true,
            (Some(key), Some(keys)) => !keys.contains(&fingerprint(user_id, key)),
            (Some(_), None) => false,
        }
    }

    /// Seats came back or the event changed: stop answering from memory.
    pub(super) fn forget(&self, event_id: Uuid) {
        lock(&self.hints).remove(&event_id);
    }

    /// A refusal was seen, with no version: refuse requests without a key for a while.
    pub(super) fn mark(&self, event_id: Uuid) {
        let mut hints = lock(&self.hints);
        forget_old_hints(&mut hints);
        hints
            .entry(event_id)
            .and_modify(|hint| hint.at = Instant::now())
            .or_insert(SoldOut {
                at: Instant::now(),
                version: None,
                keys: None,
            });
    }

    /// Records the event as a committed transaction left it. A new sold-out version gets its
    /// keys loaded, and is watched through `seat_versions`: any other version, committed by
    /// any instance, drops the hint, since keys may have booked since.
    pub(super) fn note(&self, event: &Event, seat_versions: impl FnOnce(Uuid) -> SeatVersions) {
        if event.seats_available > 0 || event.status != EventStatus::Published {
            self.forget(event.id);
            return;
        }
        let mut hints = lock(&self.hints);
        forget_old_hints(&mut hints);
        match hints.get_mut(&event.id) {
            Some(hint) if hint.version == Some(event.version) => hint.at = Instant::now(),
            _ => {
                let hint = SoldOut {
                    at: Instant::now(),
                    version: Some(event.version),
                    keys: None,
                };
                hints.insert(event.id, hint);
                // Attached before the keys are read, so no later commit goes unseen.
                let versions = seat_versions(event.id);
                tokio::spawn(watch_sold_out(
                    self.hints.clone(),
                    self.db.clone(),
                    event.id,
                    event.version,
                    versions,
                ));
            }
        }
    }
}
