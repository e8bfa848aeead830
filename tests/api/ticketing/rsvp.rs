//! RSVP to free events: a seat or a place in line, given back, and never more seats than
//! capacity however many answer at once.

use super::*;

async fn free_event(app: &TestApp, capacity: i32) -> EventId {
    let organizer = app.user(Role::Organizer).await;
    let input = merged(
        event_input("Free Meetup", capacity),
        json!({ "free": true }),
    );
    app.create_event(&organizer, input).await
}

#[tokio::test]
async fn rsvp_takes_a_seat_or_a_place_in_line_and_gives_it_back() {
    let app = TestApp::spawn().await;
    let event_id = free_event(&app, 1).await;
    let (first, second, third) = (
        app.user(Role::User).await,
        app.user(Role::User).await,
        app.user(Role::User).await,
    );
    let rsvp = |user: &TestUser, response: &str| {
        let token = user.token.clone();
        let variables = json!({ "id": event_id, "r": response });
        let app = &app;
        async move { app.gql(Some(&token), RSVP, variables).await }
    };
    let going = rsvp(&first, "GOING").await;
    assert_eq!(
        going["data"]["rsvp"]["booking"]["status"], "CONFIRMED",
        "{going}"
    );
    // Saying it again changes nothing.
    let again = rsvp(&first, "GOING").await;
    assert_eq!(
        again["data"]["rsvp"]["booking"]["id"],
        going["data"]["rsvp"]["booking"]["id"]
    );
    let full = rsvp(&second, "GOING").await;
    assert_eq!(full["data"]["rsvp"]["booking"], Value::Null);
    assert_eq!(full["data"]["rsvp"]["waitlistEntry"]["position"], 1);
    rsvp(&third, "MAYBE").await;
    let shown = app
        .gql_ok(Some(&second.token), COUNTS, json!({ "id": event_id }))
        .await;
    assert_eq!(
        shown["event"]["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 1, "maybe": 1, "notGoing": 0 })
    );
    assert_eq!(shown["event"]["myRsvp"], "GOING");

    // Changing to NOT_GOING frees the seat, and the one in line is booked straight away.
    let declined = rsvp(&first, "NOT_GOING").await;
    assert_eq!(
        declined["data"]["rsvp"]["booking"],
        Value::Null,
        "{declined}"
    );
    let shown = app
        .gql_ok(Some(&second.token), COUNTS, json!({ "id": event_id }))
        .await;
    assert_eq!(
        shown["event"]["rsvpCounts"],
        json!({ "going": 1, "waitlisted": 0, "maybe": 1, "notGoing": 1 })
    );
    assert_eq!(shown["event"]["seatsAvailable"], 0);
    assert_eq!(
        app.count("bookings WHERE status = 'CONFIRMED'").await,
        1,
        "exactly one seat is taken"
    );
    // A ticketed event does not take RSVPs, and a free one does not sell tickets.
    let organizer = app.user(Role::Organizer).await;
    let ticketed = app.event(&organizer, 5).await;
    let refused = app
        .gql(
            Some(&first.token),
            RSVP,
            json!({ "id": ticketed, "r": "GOING" }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["reason"], "NOT_FREE");
    let refused = app.try_book(&third, &event_id, 1).await;
    assert_eq!(refused["errors"][0]["extensions"]["reason"], "FREE_EVENT");
    assert_no_double_allocation(&app).await;
}

#[tokio::test]
async fn concurrent_rsvps_never_seat_more_than_capacity_or_anyone_twice() {
    let app = TestApp::spawn().await;
    let event_id = free_event(&app, 5).await;
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(app.user(Role::User).await);
    }
    // Everyone says GOING twice at once, and some change their minds at the same time.
    let answers = join_all(users.iter().enumerate().flat_map(|(i, user)| {
        let app = &app;
        let event_id = &event_id;
        let second = if i % 3 == 0 { "NOT_GOING" } else { "GOING" };
        ["GOING", second].map(move |response| async move {
            app.gql(
                Some(&user.token),
                RSVP,
                json!({ "id": event_id, "r": response }),
            )
            .await
        })
    }))
    .await;
    assert!(answers.iter().all(|a| a["errors"].is_null()), "{answers:?}");
    let seated = app
        .count(&format!(
            "bookings WHERE event_id = '{event_id}' AND status = 'CONFIRMED'"
        ))
        .await;
    assert!(seated <= 5);
    let going_with_seat = app
        .count(&format!(
            "rsvps WHERE event_id = '{event_id}' AND response = 'GOING' AND booking_id IS NOT NULL"
        ))
        .await;
    assert_eq!(
        going_with_seat, seated,
        "every seat belongs to a GOING answer"
    );
    // Seats are only free when nobody is waiting for one.
    let waiting = app
        .count(&format!(
            "waitlist_entries WHERE event_id = '{event_id}' AND status = 'WAITING'"
        ))
        .await;
    let (available, _) = counts(&app, &event_id).await;
    assert!(
        available == 0 || waiting == 0,
        "{available} free seats while {waiting} wait"
    );
    assert_no_double_allocation(&app).await;
}
