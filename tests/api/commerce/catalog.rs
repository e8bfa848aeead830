//! What an organizer sets up: ticket types with prices in one currency, quotas shared by
//! types, hidden types behind access codes, and the bad input each refuses.

use evently::db::models::Role;
use serde_json::json;

use super::*;
use crate::support::{BOOK, error_code};

#[tokio::test]
async fn the_first_ticket_type_fixes_the_currency_and_the_event_then_sells_only_through_orders() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 100).await;
    // Before: bookSeats works as it always did.
    let booked = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event } }),
        )
        .await;
    assert!(booked.get("errors").is_none(), "{booked}");
    priced(&app, &organizer, &event, "Regular", 4500).await;
    let data = app.gql_ok(None, TICKET_TYPES, json!({ "id": event })).await;
    assert_eq!(data["event"]["currency"], "EUR");
    assert_eq!(data["event"]["ticketTypes"][0]["available"], 99);
    let refused = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event } }),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT");
    assert_eq!(reason(&refused), "ORDERS_ONLY");
    let mixed = app
        .gql(
            Some(&organizer.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": event, "input": { "name": "VIP", "price": { "amount": 100, "currency": "USD" } } }),
        )
        .await;
    assert_eq!(reason(&mixed), "MIXED_CURRENCIES");
}

#[tokio::test]
async fn bad_ticket_types_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let stranger = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 100).await;
    for (input, why) in [
        (json!({ "name": "Neg", "price": eur(-1) }), "NEGATIVE_PRICE"),
        (
            json!({ "name": "Odd", "price": { "amount": 100, "currency": "EURO" } }),
            "UNKNOWN_CURRENCY",
        ),
        (
            json!({ "name": "Odd", "price": { "amount": 100, "currency": "XYZ" } }),
            "UNKNOWN_CURRENCY",
        ),
        (
            json!({ "name": "Min", "price": eur(100), "minPerOrder": 3, "maxPerOrder": 2 }),
            "INVALID_PER_ORDER",
        ),
        (
            json!({ "name": "Window", "price": eur(100), "salesStartAt": "2030-01-02T00:00:00Z",
                    "salesEndAt": "2030-01-01T00:00:00Z" }),
            "INVALID_SALES_WINDOW",
        ),
    ] {
        let body = app
            .gql(
                Some(&organizer.token),
                CREATE_TICKET_TYPE,
                json!({ "eventId": event, "input": input }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(reason(&body), why, "{body}");
    }
    let body = app
        .gql(
            Some(&stranger.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": event, "input": { "name": "Mine", "price": eur(1) } }),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");
    assert_eq!(app.count("ticket_types").await, 0);
}

#[tokio::test]
async fn a_types_availability_is_the_least_of_its_own_its_quotas_and_the_event() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 50).await;
    let early = ticket_type(
        &app,
        &organizer,
        &event,
        json!({ "name": "Early", "price": eur(2000), "quantity": 10 }),
    )
    .await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let vip = priced(&app, &organizer, &event, "VIP", 9000).await;
    quota(&app, &organizer, &event, 30, &[&early, &regular]).await;
    let available = |data: serde_json::Value| -> Vec<i64> {
        data["event"]["ticketTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["available"].as_i64().unwrap())
            .collect()
    };
    let data = app.gql_ok(None, TICKET_TYPES, json!({ "id": event })).await;
    assert_eq!(available(data), vec![10, 30, 50]);
    let placed = order(&app, &buyer, &event, &early, 4).await;
    mark_paid(&app, &organizer, placed["id"].as_str().unwrap()).await;
    let data = app.gql_ok(None, TICKET_TYPES, json!({ "id": event })).await;
    // Early: 6 of its own; Regular: 26 of the shared quota; VIP: 46 of the event.
    assert_eq!(available(data), vec![6, 26, 46]);
    let too_many = try_order(&app, &buyer, &event, &vip, 1, json!({})).await;
    assert!(too_many.get("errors").is_none(), "{too_many}");
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_hidden_type_is_seen_and_sold_only_with_its_access_code() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 50).await;
    priced(&app, &organizer, &event, "Regular", 3000).await;
    let backstage = ticket_type(
        &app,
        &organizer,
        &event,
        json!({ "name": "Backstage", "price": eur(15000), "hidden": true }),
    )
    .await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "CREW", "discount": "PERCENT", "value": 0,
                "ticketTypeIds": [backstage], "unlocksHidden": true } }),
    )
    .await;
    let names = |data: &serde_json::Value| -> Vec<String> {
        data["event"]["ticketTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let public = app
        .gql_ok(Some(&buyer.token), TICKET_TYPES, json!({ "id": event }))
        .await;
    assert_eq!(names(&public), vec!["Regular"]);
    let unlocked = app
        .gql_ok(
            Some(&buyer.token),
            TICKET_TYPES,
            json!({ "id": event, "code": "crew" }),
        )
        .await;
    assert_eq!(names(&unlocked), vec!["Regular", "Backstage"]);
    let wrong = app
        .gql_ok(
            Some(&buyer.token),
            TICKET_TYPES,
            json!({ "id": event, "code": "nope" }),
        )
        .await;
    assert_eq!(names(&wrong), vec!["Regular"]);
    let without = try_order(&app, &buyer, &event, &backstage, 1, json!({})).await;
    assert_eq!(error_code(&without), "NOT_FOUND");
    let with = try_order(
        &app,
        &buyer,
        &event,
        &backstage,
        1,
        json!({ "promoCode": "Crew" }),
    )
    .await;
    assert!(with.get("errors").is_none(), "{with}");
    assert_eq!(with["data"]["placeOrder"]["total"]["amount"], 15000);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_quota_cannot_start_below_what_its_types_have_sold() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 50).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    order(&app, &buyer, &event, &regular, 3).await;
    let body = app
        .gql(
            Some(&organizer.token),
            CREATE_QUOTA,
            json!({ "eventId": event, "name": "Small", "size": 2, "types": [regular] }),
        )
        .await;
    assert_eq!(reason(&body), "QUOTA_BELOW_SOLD");
    let data = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_QUOTA,
            json!({ "eventId": event, "name": "Ok", "size": 5, "types": [regular] }),
        )
        .await;
    assert_eq!(data["createQuota"]["held"], 3);
    assert_eq!(data["createQuota"]["available"], 2);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn the_demo_data_sells_a_concert_a_free_meetup_and_a_theatre_in_tiers_and_can_be_seeded_twice()
 {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        evently::domain::seed::seed_demo(&app.state.db, &app.state.passwords)
            .await
            .unwrap_or_else(|e| panic!("seeding failed: {}", e.message()));
    }
    assert_eq!(app.count("events WHERE title = 'Summer Concert'").await, 1);
    assert_eq!(
        app.count(
            "ticket_types t JOIN events e ON e.id = t.event_id WHERE e.title = 'Summer Concert'"
        )
        .await,
        3
    );
    assert_eq!(app.count("ticket_types WHERE hidden").await, 1);
    assert_eq!(app.count("quotas").await, 1);
    assert_eq!(app.count("promo_codes WHERE code = 'SUMMER10'").await, 1);
    assert_eq!(app.count("ticket_types WHERE price_amount = 0").await, 1);
    assert_eq!(
        app.count("ticket_types WHERE name IN ('Stalls', 'Balcony')")
            .await,
        2
    );
    // The theatre's tiers are its sections.
    assert_eq!(
        app.count("ticket_types WHERE sections = ARRAY[name]").await,
        2
    );
    assert_money_invariants(&app).await;
}
