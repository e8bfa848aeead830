//! The sale rules a red team pushed on: one account hoarding an event with holds, someone
//! else's draft telling that it exists, RSVP answers outliving what they answered, and seats
//! freed while sales are paused skipping the waiting list.

use std::time::Duration;

use chrono::Utc;
use evently::db::models::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    BOOK, BookingId, CANCEL, EventId, TestApp, TestUser, error_code, event_input, eventually,
    merged,
};
use crate::support::{SEATS, operation_errors};

const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id quantity } }";
const JOIN: &str =
    "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id status } }";
const LEAVE: &str = "mutation($id: ID!) { leaveWaitlist(eventId: $id) { id status } }";
const ENTRIES: &str = "{ myWaitlistEntries(all: true) { status quantity event { id } } }";
const RSVP: &str = "mutation($id: ID!, $r: RsvpResponse!) { rsvp(eventId: $id, response: $r) { response booking { id } waitlistEntry { id } } }";
const COUNTS: &str = "query($id: ID!) { event(id: $id) { status rsvpCounts { going waitlisted maybe notGoing } myRsvp } }";

async fn create(app: &TestApp, organizer: &TestUser, extra: Value) -> EventId {
    app.create_event(organizer, merged(event_input("Sale rules", 10), extra))
        .await
}

fn reason(body: &Value) -> (&str, &Value) {
    (error_code(body), &body["errors"][0]["extensions"]["reason"])
}

/// Seats a user keeps in live holds of an event.
async fn held_by(app: &TestApp, user: &TestUser, event_id: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Held {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let held: Held = diesel::sql_query(format!(
        "SELECT coalesce(sum(quantity), 0)::bigint AS n FROM holds WHERE event_id = '{event_id}' \
         AND user_id = '{}' AND status = 'HELD'",
        user.id
    ))
    .get_result(&mut app.db().await)
    .await
    .unwrap();
    held.n
}

/// The status of the user's latest waiting-list entry for the event.
async fn entry_status(app: &TestApp, user: &TestUser, event_id: &str) -> Value {
    let data = app.gql_ok(Some(&user.token), ENTRIES, json!({})).await;
    data["myWaitlistEntries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["event"]["id"] == event_id)
        .map(|entry| entry["status"].clone())
        .unwrap_or(Value::Null)
}

async fn execute(app: &TestApp, sql: String) {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn one_account_cannot_hold_more_than_a_booking_of_an_event_at_once() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let (hoarder, other) = (app.user(Role::User).await, app.user(Role::User).await);
    // No maxPerUser: live holds are capped at maxPerBooking (10 by default).
    let event_id = app.event(&organizer, 100).await;
    app.hold(&hoarder, &event_id, 6).await;
    let first = app.hold(&hoarder, &event_id, 4).await;
    let body = app.try_hold(&hoarder, &event_id, 1).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    assert_eq!(held_by(&app, &hoarder, &event_id).await, 10);
    // Someone else is not affected, and a confirmed hold no longer counts as held.
    app.hold(&other, &event_id, 10).await;
    app.confirm(&hoarder, &first).await;
    app.hold(&hoarder, &event_id, 4).await;
    assert_eq!(held_by(&app, &hoarder, &event_id).await, 10);

    // With maxPerUser, that is the cap (bookings count too).
    let limited = create(
        &app,
        &organizer,
        json!({ "capacity": 100, "maxPerUser": 3 }),
    )
    .await;
    app.hold(&hoarder, &limited, 2).await;
    let body = app.try_hold(&hoarder, &limited, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    app.assert_invariant().await;
}

#[tokio::test]
async fn a_waiting_list_offer_never_takes_a_user_past_the_hold_cap() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let (hoarder, filler, next) = (
        app.user(Role::User).await,
        app.user(Role::User).await,
        app.user(Role::User).await,
    );
    let event_id = app.event(&organizer, 20).await;
    app.hold(&hoarder, &event_id, 10).await;
    let booking = app.book(&filler, &event_id, 10).await;
    // Sold out: the hoarder queues for more while holding ten, then someone else.
    app.gql_ok(
        Some(&hoarder.token),
        JOIN,
        json!({ "id": event_id, "q": 5 }),
    )
    .await;
    app.gql_ok(Some(&next.token), JOIN, json!({ "id": event_id, "q": 2 }))
        .await;
    app.gql_ok(Some(&filler.token), CANCEL, json!({ "id": booking }))
        .await;
    // Ten seats free: an offer of five would give the hoarder fifteen held. It keeps its place;
    // the next in line is offered.
    assert_eq!(held_by(&app, &hoarder, &event_id).await, 10);
    assert_eq!(entry_status(&app, &hoarder, &event_id).await, "WAITING");
    assert_eq!(entry_status(&app, &next, &event_id).await, "OFFERED");
    app.assert_invariant().await;
}

#[tokio::test]
async fn an_rsvp_takes_one_seat_per_account_however_often_it_is_given() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let user = app.user(Role::User).await;
    let event_id = create(&app, &organizer, json!({ "capacity": 5, "free": true })).await;
    for response in ["GOING", "GOING", "MAYBE", "GOING", "GOING"] {
        app.gql_ok(
            Some(&user.token),
            RSVP,
            json!({ "id": event_id, "r": response }),
        )
        .await;
    }
    let seats = app
        .count(&format!(
            "bookings WHERE event_id = '{event_id}' AND status = 'CONFIRMED'"
        ))
        .await;
    assert_eq!(seats, 1);
    // And a free event cannot be held around the RSVP.
    let body = app.try_hold(&user, &event_id, 1).await;
    assert_eq!(reason(&body), ("BAD_USER_INPUT", &json!("FREE_EVENT")));
    app.assert_invariant().await;
}

/// What a caller is told for `id`: the errors (code and message) and the data.
fn answer(body: &Value) -> (Value, Value, Value) {
    (
        body["errors"][0]["extensions"]["code"].clone(),
        body["errors"][0]["message"].clone(),
        body["data"].clone(),
    )
}

#[tokio::test]
async fn someone_elses_draft_answers_exactly_as_a_missing_event_on_every_operation() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let stranger = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let free_draft = create(&app, &organizer, json!({ "status": "DRAFT", "free": true })).await;
    let missing = Uuid::new_v4().to_string();

    type Vars = fn(&str) -> Value;
    let operations: Vec<(&str, &TestUser, &str, Vars)> = vec![
        (
            "bookSeats",
            &buyer,
            BOOK,
            |id| json!({ "input": { "eventId": id, "quantity": 1 } }),
        ),
        (
            "holdSeats",
            &buyer,
            HOLD,
            |id| json!({ "input": { "eventId": id, "quantity": 1 } }),
        ),
        (
            "joinWaitlist",
            &buyer,
            JOIN,
            |id| json!({ "id": id, "q": 1 }),
        ),
        ("leaveWaitlist", &buyer, LEAVE, |id| json!({ "id": id })),
        ("rsvp", &buyer, RSVP, |id| json!({ "id": id, "r": "GOING" })),
        (
            "updateEvent",
            &stranger,
            "mutation($id: ID!) { updateEvent(id: $id, input: { title: \"Mine\" }) { id } }",
            |id| json!({ "id": id }),
        ),
        (
            "publishEvent",
            &stranger,
            "mutation($id: ID!) { publishEvent(id: $id) { id } }",
            |id| json!({ "id": id }),
        ),
        (
            "cancelEvent",
            &stranger,
            "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
            |id| json!({ "id": id }),
        ),
        (
            "event and its seats",
            &buyer,
            "query($id: ID!) { event(id: $id) { id seats { id } } }",
            |id| json!({ "id": id }),
        ),
        (
            "eventBookings",
            &stranger,
            "query($id: ID!) { eventBookings(eventId: $id) { edges { node { id } } } }",
            |id| json!({ "id": id }),
        ),
    ];
    for (name, user, query, variables) in operations {
        for hidden in [&draft, &free_draft] {
            let seen = app.gql(Some(&user.token), query, variables(hidden)).await;
            let expected = app.gql(Some(&user.token), query, variables(&missing)).await;
            assert_eq!(
                answer(&seen),
                answer(&expected),
                "{name}: a draft answered {seen}, a missing id {expected}"
            );
        }
    }
    // Live updates too, signed in as someone else.
    let init = json!({ "Authorization": format!("Bearer {}", stranger.token) });
    let mut client = app.connect_ws(init).await;
    const SEAT_MAP: &str = "subscription($id: ID!) { seatMap(eventId: $id) { version } }";
    const UPDATED: &str = "subscription($id: ID!) { eventUpdated(eventId: $id) { version } }";
    let subscriptions = [SEATS, SEAT_MAP, UPDATED]
        .into_iter()
        .flat_map(|query| [(query, draft.as_str()), (query, missing.as_str())]);
    for (n, (query, id)) in subscriptions.enumerate() {
        let operation = n.to_string();
        client
            .subscribe(&operation, query, json!({ "id": id }))
            .await;
        // Its first answer, past the end of the previous operation.
        let message = loop {
            let message = client.next_message().await.unwrap();
            if message["id"] == operation.as_str() {
                break message;
            }
        };
        let errors = operation_errors(&message);
        assert_eq!(
            errors[0]["extensions"]["code"], "NOT_FOUND",
            "{query}: {message}"
        );
        assert_eq!(
            errors[0]["message"], "event not found",
            "{query}: {message}"
        );
    }
    assert_eq!(app.count("bookings").await, 0);
    assert_eq!(app.count("holds").await, 0);
    assert_eq!(app.count("waitlist_entries").await, 0);
    assert_eq!(app.count("rsvps").await, 0);
}

#[tokio::test]
async fn rsvp_counts_follow_a_queued_answer_that_leaves_and_an_event_that_is_cancelled() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = create(&app, &organizer, json!({ "capacity": 1, "free": true })).await;
    let (seated, queued, unsure) = (
        app.user(Role::User).await,
        app.user(Role::User).await,
        app.user(Role::User).await,
    );
    for (user, response) in [(&seated, "GOING"), (&queued, "GOING"), (&unsure, "MAYBE")] {
        app.gql_ok(
            Some(&user.token),
            RSVP,
            json!({ "id": event_id, "r": response }),
        )
        .await;
    }
    let shown = |user: &TestUser| {
        let token = user.token.clone();
        let app = &app;
        let id = event_id.clone();
        async move { app.gql_ok(Some(&token), COUNTS, json!({ "id": id })).await["event"].clone() }
    };
    assert_eq!(
        shown(&queued).await["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 1, "maybe": 1, "notGoing": 0 })
    );

    // Leaving the queue is no longer going.
    let left = app
        .gql_ok(Some(&queued.token), LEAVE, json!({ "id": event_id }))
        .await;
    assert_eq!(left["leaveWaitlist"]["status"], "LEFT");
    let after_leaving = shown(&queued).await;
    assert_eq!(
        after_leaving["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 0, "maybe": 1, "notGoing": 1 }),
        "{after_leaving}"
    );
    assert_eq!(after_leaving["myRsvp"], "NOT_GOING");

    // A cancelled event has nobody going.
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status } }",
        json!({ "id": event_id }),
    )
    .await;
    let cancelled = shown(&seated).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(
        cancelled["rsvpCounts"],
        json!({ "going": 0, "waitlisted": 0, "maybe": 1, "notGoing": 2 }),
        "{cancelled}"
    );
    assert_eq!(cancelled["myRsvp"], "NOT_GOING");
    let linked = app
        .count(&format!(
            "rsvps WHERE event_id = '{event_id}' AND booking_id IS NOT NULL"
        ))
        .await;
    assert_eq!(linked, 0, "an RSVP still points at a cancelled booking");
    app.assert_invariant().await;
}

struct Queued {
    organizer: TestUser,
    owner: TestUser,
    event_id: EventId,
    booking: BookingId,
    waiting: TestUser,
}

/// A sold-out event with sales open, whose one booking of `capacity` seats can be cancelled,
/// and a user waiting for all of them.
async fn sold_out_with_a_queue(app: &TestApp, capacity: i64) -> Queued {
    let organizer = app.user(Role::Organizer).await;
    let owner = app.user(Role::User).await;
    let waiting = app.user(Role::User).await;
    let sales_start = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let event_id = create(
        app,
        &organizer,
        json!({ "capacity": capacity, "salesStartAt": sales_start }),
    )
    .await;
    let booking = app.book(&owner, &event_id, capacity).await;
    app.gql_ok(
        Some(&waiting.token),
        JOIN,
        json!({ "id": event_id, "q": capacity }),
    )
    .await;
    Queued {
        organizer,
        owner,
        event_id,
        booking,
        waiting,
    }
}

const UPDATE_WINDOW: &str = "mutation($id: ID!, $start: DateTime, $end: DateTime) { updateEvent(id: $id, input: { salesStartAt: $start, salesEndAt: $end }) { onSale } }";

fn hours(n: i64) -> String {
    (Utc::now() + chrono::Duration::hours(n)).to_rfc3339()
}

impl Queued {
    async fn move_window(&self, app: &TestApp, start: i64, end: Option<i64>) -> Value {
        let variables =
            json!({ "id": self.event_id, "start": hours(start), "end": end.map(hours) });
        let data = app
            .gql_ok(Some(&self.organizer.token), UPDATE_WINDOW, variables)
            .await;
        data["updateEvent"]["onSale"].clone()
    }

    /// The booking is cancelled while sales are paused: the waiting list cannot be offered it.
    async fn cancel_while_paused(&self, app: &TestApp) {
        app.gql_ok(
            Some(&self.owner.token),
            CANCEL,
            json!({ "id": self.booking }),
        )
        .await;
        assert_eq!(
            entry_status(app, &self.waiting, &self.event_id).await,
            "WAITING"
        );
    }

    /// The sales opening time passes (moved, not waited for).
    async fn opening_passes(&self, app: &TestApp) {
        execute(
            app,
            format!(
                "UPDATE events SET sales_start_at = now() - interval '1 minute' WHERE id = '{}'",
                self.event_id
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn seats_freed_while_sales_are_paused_go_to_the_waiting_list_when_sales_reopen() {
    // The sweeper stays out of the way: the buyer comes first.
    let app = TestApp::spawn_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let buyer = app.user(Role::User).await;

    // Sales moved later by the organizer when the seats come back; then the opening time
    // passes and a buyer arrives before anything else happens.
    let queued = sold_out_with_a_queue(&app, 2).await;
    assert_eq!(queued.move_window(&app, 1, None).await, false);
    queued.cancel_while_paused(&app).await;
    queued.opening_passes(&app).await;
    let body = app.try_book(&buyer, &queued.event_id, 1).await;
    assert_eq!(error_code(&body), "SOLD_OUT", "{body}");
    // (The booking may have been refused from the onsale path's sold-out memory, which does
    // not touch the database; a hold always reaches it.)
    let body = app.try_hold(&buyer, &queued.event_id, 1).await;
    assert_eq!(error_code(&body), "SOLD_OUT", "{body}");
    assert_eq!(
        entry_status(&app, &queued.waiting, &queued.event_id).await,
        "OFFERED"
    );

    // Joining the waiting list: the seats are not "available to book instead"; the new
    // entry queues behind the one that is offered them.
    let queued = sold_out_with_a_queue(&app, 2).await;
    queued.move_window(&app, 1, None).await;
    queued.cancel_while_paused(&app).await;
    queued.opening_passes(&app).await;
    let joined = app
        .gql_ok(
            Some(&buyer.token),
            JOIN,
            json!({ "id": queued.event_id, "q": 1 }),
        )
        .await;
    assert_eq!(joined["joinWaitlist"]["status"], "WAITING");
    assert_eq!(
        entry_status(&app, &queued.waiting, &queued.event_id).await,
        "OFFERED"
    );

    // Sales ended, then reopened by an update.
    let queued = sold_out_with_a_queue(&app, 2).await;
    assert_eq!(queued.move_window(&app, -2, Some(-1)).await, false);
    queued.cancel_while_paused(&app).await;
    assert_eq!(queued.move_window(&app, -2, None).await, true);
    assert_eq!(
        entry_status(&app, &queued.waiting, &queued.event_id).await,
        "OFFERED"
    );
    app.assert_invariant().await;
}

#[tokio::test]
async fn the_sweeper_offers_seats_freed_while_paused_once_sales_open() {
    let app = TestApp::spawn().await;
    let queued = sold_out_with_a_queue(&app, 2).await;
    queued.move_window(&app, 1, None).await;
    queued.cancel_while_paused(&app).await;
    queued.opening_passes(&app).await;
    // Nobody buys: the sweeper (every second in tests) makes the offer. A generous deadline:
    // the CPU is shared.
    eventually(Duration::from_secs(30), || async {
        let status = entry_status(&app, &queued.waiting, &queued.event_id).await;
        (status == "OFFERED").then_some(()).ok_or(format!(
            "the waiting list was never offered the freed seats: {status}"
        ))
    })
    .await;
    app.assert_invariant().await;
}
