//! Socket accounting: how many WebSockets this instance holds (at most `max_connections`, more
//! refused with 503 before the upgrade), how many one address holds anonymously or waiting for
//! `connection_init` (at most `max_anonymous_per_address` each), and how many one user holds
//! (on this instance, and across instances through the bus's connection slots in Redis when it
//! can say). Each place is a guard that gives it back when dropped, so a connection cannot end
//! without returning what it took. Also the shutdown signal and the tracker shutdown waits on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::connection::CLOSE_GRACE;
use crate::config::WebSocketConfig;
use crate::graphql::seats::SeatMaps;
use crate::realtime::Bus;

/// What every WebSocket connection of one server shares: its limits, the shutdown signal, the
/// tracker shutdown waits on, the counts of connections (in all, per user, per address) and
/// the seat maps its viewers share.
pub struct Sockets {
    pub(super) config: WebSocketConfig,
    pub(in crate::http) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    per_user: Mutex<HashMap<Uuid, usize>>,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, AddressCount>>,
    pub(in crate::http) seat_maps: Arc<SeatMaps>,
    /// `evently_ws_messages_sent_total`, looked up once rather than for every message.
    pub(super) messages_sent: metrics::Counter,
}

/// One address's connections that are not signed in.
#[derive(Default)]
struct AddressCount {
    /// Upgraded, `connection_init` not yet received.
    waiting: usize,
    anonymous: usize,
}

#[derive(Clone, Copy)]
pub(in crate::http) enum AddressUse {
    Waiting,
    Anonymous,
}

impl AddressCount {
    fn of(&mut self, kind: AddressUse) -> &mut usize {
        match kind {
            AddressUse::Waiting => &mut self.waiting,
            AddressUse::Anonymous => &mut self.anonymous,
        }
    }
}

/// A connection's place among the instance's, given back when the connection ends.
pub(in crate::http) struct OpenSlot(Arc<Sockets>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("evently_live_connections").decrement(1);
    }
}

/// A connection's place in its address's count, given back when it ends or signs in.
pub(in crate::http) struct AddressSlot {
    sockets: Arc<Sockets>,
    ip: IpAddr,
    kind: AddressUse,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut per_address = self.sockets.lock_addresses();
        if let Some(count) = per_address.get_mut(&self.ip) {
            *count.of(self.kind) -= 1;
            if count.waiting == 0 && count.anonymous == 0 {
                per_address.remove(&self.ip);
            }
        }
    }
}

impl Sockets {
    pub fn new(config: WebSocketConfig) -> Self {
        Self {
            config,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            per_user: Mutex::default(),
            open: AtomicUsize::new(0),
            per_address: Mutex::default(),
            seat_maps: Arc::default(),
            messages_sent: metrics::counter!("evently_ws_messages_sent_total"),
        }
    }

    /// Takes one of the instance's connection places, if any is left.
    pub(in crate::http) fn admit(self: &Arc<Self>) -> Option<OpenSlot> {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        metrics::gauge!("evently_live_connections").increment(1);
        Some(OpenSlot(self.clone()))
    }

    /// Takes one of the address's places for a waiting or an anonymous connection, if any is
    /// left.
    pub(in crate::http) fn claim_address(
        self: &Arc<Self>,
        ip: IpAddr,
        kind: AddressUse,
    ) -> Option<AddressSlot> {
        let max = self.config.max_anonymous_per_address;
        let mut per_address = self.lock_addresses();
        let count = per_address.entry(ip).or_default();
        if max > 0 && *count.of(kind) >= max {
            return None;
        }
        *count.of(kind) += 1;
        Some(AddressSlot {
            sockets: self.clone(),
            ip,
            kind,
        })
    }

    fn lock_addresses(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, AddressCount>> {
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks every connection to finish its operations in flight and close with 1012 (service restart).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits for every connection (at most the drain time and a little more).
    pub async fn shut_down(&self) {
        self.begin_shutdown();
        self.tracker.close();
        let limit = self.config.shutdown_drain + CLOSE_GRACE + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections still open after the shutdown drain");
        }
    }

    /// Takes one of the user's connection slots, if any is left: on this instance, and across
    /// instances when Redis can say.
    pub(in crate::http) async fn claim(
        self: &Arc<Self>,
        bus: &Bus,
        user: Uuid,
    ) -> Option<UserSlot> {
        {
            let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_user.entry(user).or_default();
            if *count >= self.config.max_connections_per_user {
                return None;
            }
            *count += 1;
        }
        // Made before asking Redis, so the local count is given back whatever the answer.
        let slot = UserSlot {
            sockets: self.clone(),
            bus: bus.clone(),
            user,
            connection: Uuid::new_v4(),
            held_in_redis: false,
        };
        self.claim_shared(slot).await
    }

    async fn claim_shared(&self, mut slot: UserSlot) -> Option<UserSlot> {
        let max = self.config.max_connections_per_user;
        let claimed = slot
            .bus
            .claim_connection_slot(slot.user, slot.connection, max, self.slot_lease())
            .await;
        match claimed {
            Some(false) => None,
            Some(true) => {
                slot.held_in_redis = true;
                Some(slot)
            }
            None => Some(slot),
        }
    }

    /// Renewed at every ping, and a connection silent for the idle timeout is closed, so a
    /// lease this long outlives only connections whose instance died.
    fn slot_lease(&self) -> Duration {
        self.config.idle_timeout + self.config.ping_interval * 2
    }
}

/// A signed-in connection's place in its user's count, given back when the connection ends.
pub(in crate::http) struct UserSlot {
    sockets: Arc<Sockets>,
    bus: Bus,
    pub(super) user: Uuid,
    connection: Uuid,
    held_in_redis: bool,
}

impl UserSlot {
    pub(in crate::http) fn renew(&self) {
        if self.held_in_redis {
            let lease = self.sockets.slot_lease();
            self.bus
                .renew_connection_slot(self.user, self.connection, lease);
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if self.held_in_redis {
            self.bus.release_connection_slot(self.user, self.connection);
        }
        let mut per_user = self
            .sockets
            .per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}
