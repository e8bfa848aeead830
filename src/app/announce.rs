//! Announcing what the domain committed: the one place that turns a transaction's [`Changes`]
//! into the realtime bus's updates and publishes them. `App::commit` comes here after every
//! domain write; so does the booking queue, for what it commits on behalf of callers that left
//! (as its [`Announcer`]), and the queue's sold-out hint hears the seat versions the bus
//! shows through the same door.

use std::sync::Arc;

use futures_util::StreamExt;
use uuid::Uuid;

use crate::domain::changes::Changes;
use crate::domain::group_commit::{Announcer, SeatVersions};
use crate::realtime::{Bus, OrderUpdate, SeatMapUpdate, SeatUpdate, Topic, Update};

/// Announces what a committed transaction changed: the event's seat counts (and, when its
/// details changed, the event itself) to its watchers, each booking, hold, waiting-list entry
/// and order to its owner's `myBookingUpdates` (and each order to its `orderUpdated`), and the seats whose state changed to the event's
/// `seatMap` (seat changes always come with the event's new version).
pub(super) fn publish(bus: &Bus, changes: Changes) {
    crate::telemetry::metrics::record_expired_holds(&changes.holds);
    let mut updates = Vec::with_capacity(
        3 + changes.bookings.len() + changes.holds.len() + changes.waitlist.len(),
    );
    if let Some(event) = changes.event {
        if !changes.seats.is_empty() {
            updates.push(Update::SeatMap(Arc::new(SeatMapUpdate {
                event_id: event.id,
                previous_version: changes.previous_version,
                version: event.version,
                seats: changes.seats,
            })));
        }
        updates.push(Update::Seats(SeatUpdate::from(&event)));
        if changes.event_details {
            updates.push(Update::Event(Arc::new(event)));
        }
    }
    updates.extend(
        changes
            .bookings
            .into_iter()
            .map(|b| Update::Booking(Arc::new(b))),
    );
    updates.extend(changes.holds.into_iter().map(|h| Update::Hold(Arc::new(h))));
    updates.extend(
        changes
            .waitlist
            .into_iter()
            .map(|w| Update::Waitlist(Arc::new(w))),
    );
    for order in changes.orders {
        let update = OrderUpdate {
            order_id: order.id,
            user_id: order.user_id,
            event_id: order.event_id,
            version: order.version,
        };
        updates.push(Update::UserOrder(update.clone()));
        updates.push(Update::Order(update));
    }
    bus.publish_all(updates);
}

/// The bus as the booking queue sees it: where its own announcements go, and where it hears
/// the seat versions every instance commits.
impl Announcer for Bus {
    fn announce(&self, changes: Changes) {
        publish(self, changes);
    }

    fn seat_versions(&self, event_id: Uuid) -> SeatVersions {
        self.subscribe(Topic::Seats(event_id))
            .filter_map(|update| async move {
                match update {
                    Update::Seats(seats) => Some(seats.version),
                    _ => None,
                }
            })
            .boxed()
    }
}
