//! The event lifecycle: drafts seen only by their organizer and admins, publishing, sales
//! windows, the per-user limit, and completing events that have ended.

use chrono::{Duration, Utc};
use diesel_async::RunQueryDsl;
use evently::db::models::Role;
use serde_json::{Value, json};

use crate::support::{BOOK, CANCEL, EventId, TestApp, TestUser, error_code, event_input};
use crate::support::{SEATS, WsClient, operation_errors};

const CREATE: &str = "mutation($input: CreateEventInput!) { createEvent(input: $input) { id status version onSale } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateEventInput!) { updateEvent(id: $id, input: $input) { id salesStartAt salesEndAt onSale } }";
const PUBLISH: &str = "mutation($id: ID!) { publishEvent(id: $id) { id status version onSale } }";
const CANCEL_EVENT: &str = "mutation($id: ID!) { cancelEvent(id: $id) { id status } }";
const EVENT: &str = "query($id: ID!) { event(id: $id) { id status } }";
const DRAFTS: &str = "{ events(filter: { status: DRAFT }) { edges { node { id } } } }";
const UPDATED: &str = "subscription($id: ID!) { eventUpdated(eventId: $id) { version status } }";
const LISTED: &str = "{ events { edges { node { id } } } }";
const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id } }";
const CONFIRM: &str = "mutation($id: ID!) { confirmHold(holdId: $id) { id } }";
const JOIN: &str =
    "mutation($id: ID!, $q: Int!) { joinWaitlist(eventId: $id, quantity: $q) { id } }";

/// An event input with `extra` fields merged in.
fn input_with(extra: Value) -> Value {
    let mut input = event_input("Lifecycle", 10);
    for (key, value) in extra.as_object().unwrap() {
        input[key] = value.clone();
    }
    input
}

async fn create(app: &TestApp, organizer: &TestUser, extra: Value) -> EventId {
    app.create_event(organizer, input_with(extra)).await
}

fn ids(data: &Value) -> Vec<EventId> {
    data["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| EventId(edge["node"]["id"].as_str().unwrap().to_owned()))
        .collect()
}

fn reason(body: &Value) -> (&str, &Value) {
    (error_code(body), &body["errors"][0]["extensions"]["reason"])
}

async fn version(app: &TestApp, id: &str) -> i32 {
    let data = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { version } }",
            json!({ "id": id }),
        )
        .await;
    i32::try_from(data["event"]["version"].as_i64().unwrap()).unwrap()
}

/// The error code of operation `id`'s first answer, skipping other operations' messages.
async fn operation_code(client: &mut WsClient, id: &str) -> Value {
    loop {
        let message = client.next_message().await.unwrap();
        if message["id"] == id {
            return operation_errors(&message)[0]["extensions"]["code"].clone();
        }
    }
}

/// The data of operation `id`'s next result, skipping other operations' messages.
async fn operation_data(client: &mut WsClient, id: &str) -> Value {
    loop {
        let message = client.next_message().await.unwrap();
        if message["id"] == id {
            assert_eq!(message["type"], "next", "{message}");
            return message["payload"]["data"].clone();
        }
    }
}

async fn sql(app: &TestApp, statement: String) {
    diesel::sql_query(statement)
        .execute(&mut app.db().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_draft_is_seen_only_by_its_organizer_and_admins_until_published() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let other = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let published = app.event(&organizer, 10).await;

    let sees = |token: Option<String>| {
        let app = &app;
        let draft = draft.clone();
        async move {
            let data = app
                .gql_ok(token.as_deref(), EVENT, json!({ "id": draft }))
                .await;
            !data["event"].is_null()
        }
    };
    assert!(!sees(None).await);
    assert!(!sees(Some(other.token.clone())).await);
    assert!(!sees(Some(buyer.token.clone())).await);
    assert!(sees(Some(organizer.token.clone())).await);
    assert!(sees(Some(admin.token.clone())).await);

    // Listing drafts: one's own, all for an admin, none signed out; never by default.
    let drafts = |token: Option<String>| {
        let app = &app;
        async move { ids(&app.gql_ok(token.as_deref(), DRAFTS, json!({})).await) }
    };
    assert_eq!(
        drafts(Some(organizer.token.clone())).await,
        [draft.as_str()]
    );
    assert!(drafts(Some(other.token.clone())).await.is_empty());
    assert!(drafts(None).await.is_empty());
    assert_eq!(drafts(Some(admin.token.clone())).await, [draft.as_str()]);
    for token in [None, Some(organizer.token.as_str())] {
        assert_eq!(
            ids(&app.gql_ok(token, LISTED, json!({})).await),
            [published.as_str()]
        );
    }

    // Not bookable, and no one else can act on it (or tell it exists).
    let body = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": draft } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "event not found", "{body}");
    // Its organizer is told why instead.
    let body = app
        .gql(
            Some(&organizer.token),
            BOOK,
            json!({ "input": { "eventId": draft } }),
        )
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_NOT_PUBLISHED")),
        "{body}"
    );
    for query in [PUBLISH, CANCEL_EVENT] {
        let body = app
            .gql(Some(&other.token), query, json!({ "id": draft }))
            .await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    }
    let body = app
        .gql(
            Some(&other.token),
            UPDATE,
            json!({ "id": draft, "input": { "title": "Mine now" } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");

    // Its live updates likewise: NOT_FOUND for a stranger, there for its organizer.
    let mut anonymous = WsClient::connect(&app.ws_url(), "graphql-transport-ws", json!({}))
        .await
        .unwrap();
    anonymous
        .subscribe("1", SEATS, json!({ "id": draft }))
        .await;
    assert_eq!(operation_code(&mut anonymous, "1").await, "NOT_FOUND");
    anonymous
        .subscribe("2", UPDATED, json!({ "id": draft }))
        .await;
    assert_eq!(operation_code(&mut anonymous, "2").await, "NOT_FOUND");
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut owner = WsClient::connect(&app.ws_url(), "graphql-transport-ws", init)
        .await
        .unwrap();
    owner.subscribe("1", UPDATED, json!({ "id": draft })).await;
    let data = owner.next_data().await;
    assert_eq!(data["data"]["eventUpdated"]["version"], 1, "{data}");
    // Seat counts are shared by all their subscribers, executed as a signed-out caller, so a
    // draft's are hidden from its organizer too; a draft's seats do not move anyway.
    owner.subscribe("2", SEATS, json!({ "id": draft })).await;
    assert_eq!(operation_code(&mut owner, "2").await, "NOT_FOUND");

    // Published: everyone sees it and can book it.
    let data = app
        .gql_ok(Some(&organizer.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(
        data["publishEvent"],
        json!({ "id": draft, "status": "PUBLISHED", "version": 2, "onSale": true })
    );
    let data = operation_data(&mut owner, "1").await;
    assert_eq!(
        data["eventUpdated"],
        json!({ "version": 2, "status": "PUBLISHED" })
    );
    assert!(sees(None).await);
    assert!(drafts(Some(organizer.token.clone())).await.is_empty());
    app.book(&buyer, &draft, 2).await;
    // Publishing again changes nothing; an admin may publish too.
    let now = version(&app, &draft).await;
    let again = app
        .gql_ok(Some(&admin.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(again["publishEvent"]["status"], "PUBLISHED");
    assert_eq!(again["publishEvent"]["version"], now);
    // A published event is no longer hidden: a stranger is told they may not, not that it is
    // missing.
    let body = app
        .gql(Some(&other.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    app.assert_invariant().await;
}

#[tokio::test]
async fn only_a_draft_can_be_published_and_a_draft_can_be_cancelled() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let data = app
        .gql_ok(Some(&organizer.token), CANCEL_EVENT, json!({ "id": draft }))
        .await;
    assert_eq!(data["cancelEvent"]["status"], "CANCELLED");
    let body = app
        .gql(Some(&organizer.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_CANCELLED")),
        "{body}"
    );
    // Cancelled, it is still nobody else's business: by id and in lists, only its organizer
    // and admins see it. A cancelled event that was published stays public.
    let (other, buyer, admin) = (
        app.user(Role::Organizer).await,
        app.user(Role::User).await,
        app.user(Role::Admin).await,
    );
    let was_public = app.event(&organizer, 5).await;
    app.gql_ok(
        Some(&organizer.token),
        CANCEL_EVENT,
        json!({ "id": was_public }),
    )
    .await;
    const CANCELLED: &str = "{ events(filter: { status: CANCELLED }) { edges { node { id } } } }";
    for (who, token, sees_draft) in [
        ("anonymous", None, false),
        ("another user", Some(&buyer.token), false),
        ("another organizer", Some(&other.token), false),
        ("its organizer", Some(&organizer.token), true),
        ("an admin", Some(&admin.token), true),
    ] {
        let token = token.map(String::as_str);
        let data = app.gql_ok(token, EVENT, json!({ "id": draft })).await;
        let expected = if sees_draft {
            json!({ "id": draft, "status": "CANCELLED" })
        } else {
            Value::Null
        };
        assert_eq!(data["event"], expected, "{who} by id");
        let listed = ids(&app.gql_ok(token, CANCELLED, json!({})).await);
        let expected = if sees_draft {
            vec![draft.clone(), was_public.clone()]
        } else {
            vec![was_public.clone()]
        };
        let mut listed = listed;
        let mut expected = expected;
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected, "{who} listing cancelled events");
        assert!(ids(&app.gql_ok(token, LISTED, json!({})).await).is_empty());
        let data = app.gql_ok(token, EVENT, json!({ "id": was_public })).await;
        assert_eq!(data["event"]["status"], "CANCELLED", "{who}");
    }

    // A draft left until its start has passed must be moved before it can go on sale.
    let late = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    sql(
        &app,
        format!("UPDATE events SET starts_at = now() - interval '1 minute' WHERE id = '{late}'"),
    )
    .await;
    let body = app
        .gql(Some(&organizer.token), PUBLISH, json!({ "id": late }))
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_STARTED")),
        "{body}"
    );
    // Only DRAFT or PUBLISHED at creation; a plain user cannot publish anything.
    let body = app
        .gql(
            Some(&organizer.token),
            CREATE,
            json!({ "input": input_with(json!({ "status": "COMPLETED" })) }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "status", "{body}");
    let user = app.user(Role::User).await;
    let published = app.event(&organizer, 5).await;
    let body = app
        .gql(Some(&user.token), PUBLISH, json!({ "id": published }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = app.gql(None, PUBLISH, json!({ "id": published })).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}

#[tokio::test]
async fn sales_terms_are_validated_on_create_and_update() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let starts = Utc::now() + Duration::days(7);
    let ends = starts + Duration::hours(2);
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339();
    // The event's own dates, exactly, so the window can be set against them.
    let dated = |extra: &Value| {
        let mut input = json!({ "startsAt": at(starts), "endsAt": at(ends) });
        for (key, value) in extra.as_object().unwrap() {
            input[key] = value.clone();
        }
        input_with(input)
    };
    let bad = [
        (
            json!({ "salesStartAt": at(starts - Duration::days(2)), "salesEndAt": at(starts - Duration::days(2)) }),
            "salesEndAt",
        ),
        (
            json!({ "salesStartAt": at(starts - Duration::days(1)), "salesEndAt": at(starts - Duration::days(2)) }),
            "salesEndAt",
        ),
        (json!({ "salesStartAt": at(starts) }), "salesStartAt"),
        (
            json!({ "salesEndAt": at(ends + Duration::seconds(1)) }),
            "salesEndAt",
        ),
        (json!({ "maxPerUser": 0 }), "maxPerUser"),
        (json!({ "maxPerUser": 1001 }), "maxPerUser"),
        (json!({ "holdMinutes": 0 }), "holdMinutes"),
        (json!({ "holdMinutes": 1441 }), "holdMinutes"),
        (json!({ "offerMinutes": 0 }), "offerMinutes"),
        (json!({ "offerMinutes": 10081 }), "offerMinutes"),
    ];
    for (extra, field) in &bad {
        let body = app
            .gql(
                Some(&organizer.token),
                CREATE,
                json!({ "input": dated(extra) }),
            )
            .await;
        assert_eq!(
            (error_code(&body), &body["errors"][0]["extensions"]["field"]),
            ("BAD_USER_INPUT", &json!(field)),
            "{extra}: {body}"
        );
    }
    assert_eq!(app.count("events").await, 0);

    // The limits of the ranges are fine, and a window may end when the event ends.
    let id = create(
        &app,
        &organizer,
        dated(&json!({
            "salesStartAt": at(Utc::now() - Duration::days(1)),
            "salesEndAt": at(ends),
            "maxPerUser": 1000, "holdMinutes": 1440, "offerMinutes": 10080,
        })),
    )
    .await;
    for (extra, field) in &bad {
        // On update both dates of a pair move together; the event's own dates stay.
        let body = app
            .gql(
                Some(&organizer.token),
                UPDATE,
                json!({ "id": id, "input": extra }),
            )
            .await;
        assert_eq!(
            (error_code(&body), &body["errors"][0]["extensions"]["field"]),
            ("BAD_USER_INPUT", &json!(field)),
            "{extra}: {body}"
        );
    }
    // Moving the event before its sales open is refused too.
    let sales_open = starts - Duration::days(1);
    app.gql_ok(
        Some(&organizer.token),
        UPDATE,
        json!({ "id": id, "input": { "salesStartAt": at(sales_open) } }),
    )
    .await;
    let body = app
        .gql(
            Some(&organizer.token),
            UPDATE,
            json!({ "id": id, "input": { "startsAt": at(sales_open - Duration::hours(1)) } }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "salesStartAt",
        "{body}"
    );
    let fields = app
        .gql_ok(
            None,
            "query($id: ID!) { event(id: $id) { maxPerUser holdMinutes offerMinutes seatsHeld free } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        fields["event"],
        json!({ "maxPerUser": 1000, "holdMinutes": 1440, "offerMinutes": 10080, "seatsHeld": 0, "free": false })
    );
    // `null` removes the limit.
    app.gql_ok(
        Some(&organizer.token),
        UPDATE,
        json!({ "id": id, "input": { "maxPerUser": null } }),
    )
    .await;
    assert_eq!(app.count("events WHERE max_per_user IS NULL").await, 1);
}

#[tokio::test]
async fn bookings_wait_for_the_sales_window_and_stop_when_it_closes() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let opens = Utc::now() + Duration::days(1);
    let id = create(
        &app,
        &organizer,
        json!({ "salesStartAt": opens.to_rfc3339() }),
    )
    .await;
    let book = || {
        app.gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": id } }),
        )
    };
    let body = book().await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("SALES_NOT_STARTED")),
        "{body}"
    );

    let window = |start: Duration, end: Duration| {
        json!({ "id": id, "input": {
            "salesStartAt": (Utc::now() + start).to_rfc3339(),
            "salesEndAt": (Utc::now() + end).to_rfc3339(),
        } })
    };
    let data = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE,
            window(Duration::hours(-2), Duration::hours(-1)),
        )
        .await;
    assert_eq!(data["updateEvent"]["onSale"], false);
    let body = book().await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("SALES_ENDED")),
        "{body}"
    );

    let data = app
        .gql_ok(
            Some(&organizer.token),
            UPDATE,
            window(Duration::hours(-1), Duration::hours(1)),
        )
        .await;
    assert_eq!(data["updateEvent"]["onSale"], true);
    let body = book().await;
    assert!(body.get("errors").is_none(), "{body}");
    app.assert_invariant().await;
}

#[tokio::test]

async fn a_user_gets_at_most_max_per_user_seats_of_an_event() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let other = app.user(Role::User).await;
    let id = create(&app, &organizer, json!({ "maxPerUser": 4 })).await;
    let app = &app;
    let book = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": id, "quantity": quantity } });
        async move { app.gql(Some(&token), BOOK, input).await }
    };
    assert!(book(&buyer, 3).await.get("errors").is_none());
    let body = book(&buyer, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    assert!(book(&buyer, 1).await.get("errors").is_none());
    assert!(book(&other, 4).await.get("errors").is_none());
    assert_eq!(app.count("bookings").await, 3);

    // Holds count, and a confirmation keeps within the limit.
    let held = create(app, &organizer, json!({ "maxPerUser": 4 })).await;
    let hold = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": held, "quantity": quantity } });
        async move { app.gql(Some(&token), HOLD, input).await }
    };
    let first = hold(&buyer, 3).await;
    assert!(first.get("errors").is_none(), "{first}");
    let body = hold(&buyer, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    let body = app.try_book(&buyer, &held, 2).await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER")),
        "{body}"
    );
    app.gql_ok(
        Some(&buyer.token),
        CONFIRM,
        json!({ "id": first["data"]["holdSeats"]["id"] }),
    )
    .await;
    assert!(hold(&buyer, 1).await.get("errors").is_none());
    assert_eq!(
        reason(&hold(&buyer, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );

    // The waiting list: an entry counts for what it waits for, and its offer cannot take the
    // user past the limit.
    let queued = create(app, &organizer, json!({ "capacity": 5, "maxPerUser": 4 })).await;
    let (filler, single) = (app.user(Role::User).await, app.user(Role::User).await);
    let book_in = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let input = json!({ "input": { "eventId": queued, "quantity": quantity } });
        async move { app.gql(Some(&token), BOOK, input).await }
    };
    let fill = book_in(&filler, 4).await;
    let single_booking = book_in(&single, 1).await["data"]["bookSeats"]["id"].clone();
    let join = |user: &TestUser, quantity: i32| {
        let token = user.token.clone();
        let variables = json!({ "id": queued, "q": quantity });
        async move { app.gql(Some(&token), JOIN, variables).await }
    };
    // The filler has four: no place in line for more.
    assert_eq!(
        reason(&join(&filler, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );
    assert!(join(&buyer, 4).await.get("errors").is_none());
    // One seat comes back; the buyer's entry for four does not fit it, and the entry already
    // counts four towards the buyer's limit, so the buyer cannot book it on the side.
    app.gql_ok(Some(&single.token), CANCEL, json!({ "id": single_booking }))
        .await;
    assert_eq!(
        reason(&book_in(&buyer, 1).await),
        ("BAD_USER_INPUT", &json!("LIMIT_PER_USER"))
    );
    // Four more come back: the offer, confirmed, gives the buyer exactly four.
    app.gql_ok(
        Some(&filler.token),
        CANCEL,
        json!({ "id": fill["data"]["bookSeats"]["id"] }),
    )
    .await;
    let entries = app
        .gql_ok(
            Some(&buyer.token),
            "{ myWaitlistEntries { status hold { id } } }",
            json!({}),
        )
        .await;
    let entry = &entries["myWaitlistEntries"][0];
    assert_eq!(entry["status"], "OFFERED", "{entries}");
    app.gql_ok(
        Some(&buyer.token),
        CONFIRM,
        json!({ "id": entry["hold"]["id"] }),
    )
    .await;
    let seats = app
        .count(&format!(
            "bookings b, generate_series(1, b.quantity) WHERE b.event_id = '{queued}' \
             AND b.user_id = '{}' AND b.status = 'CONFIRMED'",
            buyer.id
        ))
        .await;
    assert_eq!(seats, 4);
    app.assert_invariant().await;
}

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
    waitlist::join(&mut conn, waiting.id, ended.parse().unwrap(), 1)
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
    let changes = all.pop().unwrap();
    let event = changes.event.as_ref().unwrap();
    assert_eq!(event.id.to_string(), ended);
    assert_eq!(
        (event.seats_available, event.seats_held, event.version),
        (3, 0, before + 1)
    );
    assert_eq!(changes.previous_version, Some(before));
    assert_eq!((changes.holds.len(), changes.waitlist.len()), (1, 1));
    // As the sweeper does: the booking path remembers a sold-out event until it hears otherwise.
    app.state.publish(changes, true);
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
