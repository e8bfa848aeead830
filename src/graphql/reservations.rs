//! What a user has or waits for at an event, across bookings, holds and the waiting list: the
//! `Reservation` interface and `myBookingUpdates`, which sends each of them as it changes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_graphql::{Context, ID, Interface, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, stream};
use uuid::Uuid;

use super::bookings::BookingView;
use super::context::{Caller, ContextExt, require_viewer};
use super::events::EventView;
use super::holds::HoldView;
use super::orders::OrderView;
use super::users::UserView;
use super::waitlist::WaitlistEntryView;
use crate::app::AppState;
use crate::db::models::{Booking, Hold, WaitlistEntry};
use crate::domain::auth;
use crate::domain::commerce::find_order;
use crate::error::AppError;
use crate::realtime::{Missed, RESYNC_MARGIN, Topic, Update, Updates, reservation_changes_since};

/// Something a user has or waits for at an event: a booking, a hold (a checkout in progress or
/// a waiting-list offer), a place on the waiting list, or an order of ticket types.
/// `myBookingUpdates` sends these.
#[derive(Interface)]
#[graphql(
    field(name = "id", ty = "ID"),
    field(name = "event", ty = "EventView"),
    field(name = "user", ty = "UserView"),
    field(name = "quantity", ty = "i32"),
    field(name = "created_at", ty = "DateTime<Utc>")
)]
pub enum Reservation {
    Booking(BookingView),
    Hold(HoldView),
    WaitlistEntry(WaitlistEntryView),
    Order(OrderView),
}

/// Bookings a `myBookingUpdates` subscription remembers the latest state of, to drop stale
/// repeats; forgetting (past this many) only risks a harmless repeat.
const MAX_REMEMBERED_BOOKINGS: usize = 10_000;

#[derive(Default)]
pub struct ReservationSubscription;

#[Subscription]
impl ReservationSubscription {
    /// The signed-in user's bookings, holds and waiting-list entries as they change: each new
    /// booking and each cancellation (by the user, an admin, or because the event was
    /// cancelled); each hold as it starts and ends, including a waiting-list offer (a `Hold`
    /// with `isOffer`) and its lapsing; each waiting-list entry as it moves; each of the user's
    /// orders as it is placed and at every change of its status or payment (PENDING_PAYMENT to
    /// PAID, EXPIRED or CANCELLED, refunds), as it is then. Only changes are
    /// sent; read `myBookings`, `myHolds` and `myWaitlistEntries` for the lists. Every change
    /// arrives, however many come at once: a subscriber that falls behind gets the current
    /// state of what changed meanwhile (an item may then come again, never older than sent
    /// before). Ends with an UNAUTHENTICATED error when the access token expires or the session
    /// ends (sign in again and resubscribe).
    async fn my_booking_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Reservation>> + use<>> {
        let viewer = require_viewer(ctx).await?;
        let app = ctx.app().clone();
        let token = match ctx.caller() {
            Caller::Connection(token) => Some(token.clone()),
            _ => None,
        };
        let expires_in = token
            .as_deref()
            .and_then(|token| app.tokens.decode(token).ok())
            .map_or(Duration::MAX, |claims| {
                let left = claims.exp - chrono::Utc::now().timestamp();
                Duration::from_secs(left.max(0).unsigned_abs())
            });
        let state = BookingWatch {
            user_id: viewer.id(),
            updates: app.bus.subscribe(Topic::UserBookings(viewer.id())),
            // Attached now: a change missed later cannot be older than this.
            complete_since: Utc::now() - RESYNC_MARGIN,
            resent: VecDeque::new(),
            expiry: Box::pin(tokio::time::sleep(
                expires_in.min(Duration::from_secs(100 * 365 * 86_400)),
            )),
            seen: HashMap::new(),
            app,
            token,
            ended: false,
        };
        Ok(stream::unfold(state, BookingWatch::next))
    }
}

struct BookingWatch {
    user_id: Uuid,
    updates: Updates,
    /// Whatever changed before this was delivered (or re-read): where a re-read starts.
    complete_since: DateTime<Utc>,
    /// Changes re-read from the database after falling behind, sent before newer messages.
    resent: VecDeque<Update>,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    seen: HashMap<Uuid, i64>,
    app: AppState,
    /// The connection's token, checked again before each message: a logout ends the stream.
    token: Option<String>,
    ended: bool,
}

impl BookingWatch {
    async fn next(mut self) -> Option<(async_graphql::Result<Reservation>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let update = match self.resent.pop_front() {
                Some(update) => update,
                None => tokio::select! {
                    () = &mut self.expiry => {
                        self.ended = true;
                        let error = AppError::Unauthenticated("access token expired; sign in again");
                        return Some((Err(error.into()), self));
                    }
                    update = self.updates.next_or_missed() => match update? {
                        Ok(update) => update,
                        Err(missed) => {
                            if let Err(error) = self.catch_up(missed).await {
                                // Better an error the client sees (and resubscribes after)
                                // than a gap it cannot.
                                self.ended = true;
                                return Some((Err(error.into()), self));
                            }
                            continue;
                        }
                    },
                },
            };
            let Some((id, rank)) = update.reservation_rank() else {
                continue;
            };
            if self.seen.get(&id).is_some_and(|seen| *seen >= rank) {
                continue;
            }
            if self.seen.len() >= MAX_REMEMBERED_BOOKINGS {
                self.seen.clear();
            }
            self.seen.insert(id, rank);
            if let Some(token) = &self.token {
                let still_signed_in = match self.app.conn().await {
                    Ok(mut conn) => auth::authenticate(&mut conn, &self.app.tokens, token).await,
                    Err(error) => Err(error),
                };
                // Only a verdict on the session ends the stream, not a busy database.
                if let Err(error @ AppError::Unauthenticated(_)) = still_signed_in {
                    self.ended = true;
                    return Some((Err(error.into()), self));
                }
            }
            let reservation = match update {
                Update::Booking(booking) => {
                    Reservation::Booking(BookingView(Booking::clone(&booking)))
                }
                Update::Hold(hold) => Reservation::Hold(HoldView(Hold::clone(&hold))),
                Update::Waitlist(entry) => {
                    Reservation::WaitlistEntry(WaitlistEntry::clone(&entry).into())
                }
                Update::UserOrder(update) => {
                    // The message only says the order moved: send the order as it is now.
                    let order = match self.app.conn().await {
                        Ok(mut conn) => find_order(&mut conn, update.order_id).await,
                        Err(error) => Err(error),
                    };
                    match order {
                        Ok(order) => {
                            self.seen
                                .insert(order.id, rank.max(i64::from(order.version)));
                            Reservation::Order(OrderView(order))
                        }
                        Err(error) => {
                            self.ended = true;
                            return Some((Err(error.into()), self));
                        }
                    }
                }
                Update::Seats(_) | Update::Event(_) | Update::SeatMap(_) | Update::Order(_) => {
                    continue;
                }
            };
            return Some((Ok(reservation), self));
        }
    }

    /// Re-reads what changed since the stream was last complete, after the channel dropped
    /// messages this subscriber was too slow for. Duplicates of what was sent are dropped by
    /// rank, like any repeat.
    async fn catch_up(&mut self, Missed(missed): Missed) -> Result<(), AppError> {
        tracing::debug!(
            missed,
            "myBookingUpdates fell behind; re-reading from the database"
        );
        let read_at = Utc::now();
        let changes = {
            let mut conn = self.app.conn().await?;
            reservation_changes_since(&mut conn, &[self.user_id], self.complete_since).await?
        };
        self.resent.extend(changes);
        self.complete_since = read_at - RESYNC_MARGIN;
        Ok(())
    }
}
