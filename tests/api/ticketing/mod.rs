//! Holds, the waiting list and RSVP, through the API: each flow, and each race the issue names,
//! ending with the invariant checked in SQL and nobody holding a seat twice.

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::WsClient;
use crate::support::operations::{CONFIRM, HOLD};
use crate::support::{
    BookingId, CANCEL, EventId, TestApp, TestUser, error_code, event_input, eventually, merged,
};

mod holds;
mod rsvp;
mod waitlist;

const RELEASE: &str = "mutation($id: ID!) { releaseHold(holdId: $id) { id status } }";
const JOIN: &str = "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id status position quantity } }";
const LEAVE: &str = "mutation($id: ID!) { leaveWaitlist(eventId: $id) { id status } }";
const ENTRIES: &str =
    "{ myWaitlistEntries { id status position quantity hold { id status expiresAt } } }";
const RSVP: &str = "mutation($id: ID!, $r: RsvpResponse!) { rsvp(eventId: $id, response: $r) { response booking { id status } waitlistEntry { id status position } } }";
const COUNTS: &str = "query($id: ID!) { event(id: $id) { seatsAvailable rsvpCounts { going waitlisted maybe notGoing } myRsvp } }";
const UPDATES: &str = "subscription { myBookingUpdates { __typename id quantity event { id } ... on Hold { status isOffer } ... on Booking { status } ... on WaitlistEntry { status } } }";

async fn counts(app: &TestApp, event_id: &str) -> (i64, i64) {
    let data = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { seatsAvailable seatsHeld } }",
            json!({ "id": event_id }),
        )
        .await;
    (
        data["event"]["seatsAvailable"].as_i64().unwrap(),
        data["event"]["seatsHeld"].as_i64().unwrap(),
    )
}

/// Runs a statement against the test database: how tests move a hold's clock.
async fn execute(app: &TestApp, sql: &str) -> usize {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap()
}

/// Moves a hold's expiry into the past, as if its time had run out.
async fn expire(app: &TestApp, hold_id: &str) {
    let sql =
        format!("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = '{hold_id}'");
    assert_eq!(execute(app, &sql).await, 1);
}

/// Nobody has a seat twice: every offer's hold is live or has ended with its entry, no hold
/// belongs to two entries, nobody has two live entries for one event or two seats from one RSVP.
async fn assert_no_double_allocation(app: &TestApp) {
    app.assert_invariant().await;
    let offered_without_live_hold = app
        .count(
            "waitlist_entries w JOIN holds h ON h.id = w.hold_id \
             WHERE w.status = 'OFFERED' AND h.status <> 'HELD'",
        )
        .await;
    assert_eq!(offered_without_live_hold, 0, "an offer outlived its hold");
    let live_holds_of_ended_entries = app
        .count(
            "waitlist_entries w JOIN holds h ON h.id = w.hold_id \
             WHERE w.status IN ('LEFT', 'EXPIRED', 'CLOSED') AND h.status = 'HELD'",
        )
        .await;
    assert_eq!(
        live_holds_of_ended_entries, 0,
        "an ended entry kept its seats"
    );
    let doubled_entries = app
        .count(
            "(SELECT event_id, user_id FROM waitlist_entries WHERE status IN ('WAITING', 'OFFERED') \
              GROUP BY event_id, user_id HAVING count(*) > 1) AS d",
        )
        .await;
    assert_eq!(doubled_entries, 0, "a user is on one waiting list twice");
    let doubled_rsvp_seats = app
        .count(
            "(SELECT b.event_id, b.user_id FROM bookings b JOIN events e ON e.id = b.event_id \
              WHERE e.free AND b.status = 'CONFIRMED' GROUP BY b.event_id, b.user_id \
              HAVING count(*) > 1) AS d",
        )
        .await;
    assert_eq!(doubled_rsvp_seats, 0, "an RSVP took two seats");
}
