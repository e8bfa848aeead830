//! Events that have ended are completed once, however many instances sweep.

use super::*;

#[tokio::test]
async fn events_that_have_ended_are_completed_once() {
    use evently::domain::{events, holds, waitlist};

    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let ended = app.event(&organizer, 10).await;
    let upcoming = app.event(&organizer, 10).await;
    let ended_draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let ended_cancelled = app.event(&organizer, 10).await;
    app.gql_ok(
        Some(&organizer.token),
        CANCEL_EVENT,
        json!({ "id": ended_cancelled }),
    )
    .await;
    app.book(&buyer, &ended, 2).await;
    let mut conn = app.db().await;
    let request = holds::HoldRequest {
        event_id: ended.parse().unwrap(),
        quantity: Some(3),
        seat_ids: Vec::new(),
    };
    holds::hold_seats(&mut conn, buyer.id, request)
        .await
        .map_err(|e| e.message())
        .unwrap();
    // The rest sold, and someone waiting for a seat to come back.
    let fan = app.user(Role::User).await;
    app.book(&fan, &ended, 5).await;
    let waiting = app.user(Role::User).await;
    waitlist::join(&mut conn, waiting.id, ended.parse().unwrap(), 1, None)
        .await
        .map_err(|e| e.message())
        .unwrap();
    for id in [&ended, &ended_draft, &ended_cancelled] {
        sql(
            &app,
            format!(
                "UPDATE events SET starts_at = now() - interval '3 hours', \
                 ends_at = now() - interval '1 hour' WHERE id = '{id}'"
            ),
        )
        .await;
    }
    let before = version(&app, &ended).await;

    // Two instances sweeping at once complete it once.
    let mut other_conn = app.db().await;
    let (first, second) = tokio::join!(
        events::complete_ended(&mut conn, 100),
        events::complete_ended(&mut other_conn, 100),
    );
    let mut all: Vec<_> = first
        .map_err(|e| e.message())
        .unwrap()
        .into_iter()
        .chain(second.map_err(|e| e.message()).unwrap())
        .collect();
    assert_eq!(all.len(), 1);
    let completed = all.pop().unwrap();
    let changes = &completed.changes;
    let event = changes.event.as_ref().unwrap();
    assert_eq!(event.id.to_string(), ended);
    assert_eq!(
        (event.seats_available, event.seats_held, event.version),
        (3, 0, before + 1)
    );
    assert_eq!(changes.previous_version, Some(before));
    assert_eq!((changes.holds.len(), changes.waitlist.len()), (1, 1));
    // As the sweeper does: the booking path remembers a sold-out event until it hears otherwise.
    app.state.commit(completed);
    assert!(
        events::complete_ended(&mut conn, 100)
            .await
            .map_err(|e| e.message())
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.count("holds WHERE status = 'EXPIRED'").await, 1);
    assert_eq!(app.count("bookings WHERE status = 'CONFIRMED'").await, 2);
    assert_eq!(
        app.count("waitlist_entries WHERE status = 'CLOSED'").await,
        1
    );
    let statuses = app
        .gql_ok(
            Some(&organizer.token),
            "query($a: ID!, $b: ID!, $c: ID!, $d: ID!) { a: event(id: $a) { status onSale seatsHeld } \
             b: event(id: $b) { status } c: event(id: $c) { status } d: event(id: $d) { status } }",
            json!({ "a": ended, "b": upcoming, "c": ended_draft, "d": ended_cancelled }),
        )
        .await;
    assert_eq!(
        statuses,
        json!({
            "a": { "status": "COMPLETED", "onSale": false, "seatsHeld": 0 },
            "b": { "status": "PUBLISHED" },
            "c": { "status": "DRAFT" },
            "d": { "status": "CANCELLED" },
        })
    );

    // It is over: nothing more happens to it.
    let body = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": ended } }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    for (query, variables) in [
        (PUBLISH, json!({ "id": ended })),
        (CANCEL_EVENT, json!({ "id": ended })),
        (
            UPDATE,
            json!({ "id": ended, "input": { "title": "Again" } }),
        ),
    ] {
        let body = app.gql(Some(&organizer.token), query, variables).await;
        assert_eq!(
            reason(&body),
            ("BAD_USER_INPUT", &json!("EVENT_COMPLETED")),
            "{query}: {body}"
        );
    }
    app.assert_invariant().await;
}
