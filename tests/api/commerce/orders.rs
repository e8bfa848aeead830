//! Orders: placing one holds its seats, paying issues its tickets, idempotency, free orders,
//! promo codes, bad input, expiry by the sweeper, and payments that come after the hold
//! expired.

use evently::db::models::Role;
use serde_json::json;

use super::*;
use crate::support::{WAIT, error_code, eventually};

#[tokio::test]
async fn an_order_holds_its_seats_until_marked_paid_then_has_one_ticket_per_seat() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let placed = order(&app, &buyer, &event, &regular, 3).await;
    assert_eq!(placed["status"], "PENDING_PAYMENT");
    assert_eq!(
        placed["total"],
        json!({ "amount": 7500, "currency": "EUR" })
    );
    assert_eq!(placed["payment"]["provider"], "MANUAL");
    assert_eq!(placed["tickets"], json!([]));
    let id = placed["id"].as_str().unwrap();
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_held = 3 AND seats_available = 7"
        ))
        .await,
        1
    );
    // Only the organizer (or an admin) marks a manual payment received.
    let refused = app
        .gql(Some(&buyer.token), MARK_PAID, json!({ "id": id }))
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    let paid = mark_paid(&app, &organizer, id).await;
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["payment"]["amountPaid"]["amount"], 7500);
    assert_eq!(paid["payment"]["reference"], "bank transfer 42");
    let tickets = paid["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 3);
    let mut codes: Vec<&str> = tickets
        .iter()
        .map(|t| t["code"].as_str().unwrap())
        .collect();
    codes.dedup();
    assert_eq!(codes.len(), 3, "each ticket has its own code");
    // Marking it again changes nothing.
    let again = mark_paid(&app, &organizer, id).await;
    assert_eq!(again["tickets"], paid["tickets"]);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_held = 0 AND seats_available = 7"
        ))
        .await,
        1
    );
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_order_even_at_once() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let extra = json!({ "idempotencyKey": "checkout-1" });
    let answers = futures_util::future::join_all(
        (0..8).map(|_| try_order(&app, &buyer, &event, &regular, 2, extra.clone())),
    )
    .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| {
            assert!(a.get("errors").is_none(), "{a}");
            a["data"]["placeOrder"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count("orders").await, 1);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_free_order_is_paid_at_once() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let free = priced(&app, &organizer, &event, "Community", 0).await;
    let placed = order(&app, &buyer, &event, &free, 2).await;
    assert_eq!(placed["status"], "PAID");
    assert_eq!(placed["tickets"].as_array().unwrap().len(), 2);
    assert_eq!(app.count("holds").await, 0);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn bad_orders_get_bad_user_input_with_a_reason() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let limited = ticket_type(
        &app,
        &organizer,
        &event,
        json!({ "name": "Pair", "price": eur(1000), "minPerOrder": 2, "maxPerOrder": 4 }),
    )
    .await;
    let later = ticket_type(
        &app,
        &organizer,
        &event,
        json!({ "name": "Later", "price": eur(1000), "salesStartAt": "2099-01-01T00:00:00Z" }),
    )
    .await;
    for (ticket_type, quantity, extra, why) in [
        (&limited, 1, json!({}), "QUANTITY_OUT_OF_RANGE"),
        (&limited, 5, json!({}), "QUANTITY_OUT_OF_RANGE"),
        (&later, 1, json!({}), "TICKET_TYPE_NOT_ON_SALE"),
        (
            &limited,
            2,
            json!({ "promoCode": "NOPE" }),
            "INVALID_PROMO_CODE",
        ),
    ] {
        let body = try_order(&app, &buyer, &event, ticket_type, quantity, extra).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(reason(&body), why, "{body}");
    }
    let zero = try_order(&app, &buyer, &event, &limited, 0, json!({})).await;
    assert_eq!(error_code(&zero), "BAD_USER_INPUT");
    let no_lines = app
        .gql(
            Some(&buyer.token),
            PLACE_ORDER,
            json!({ "input": { "eventId": event, "lines": [] } }),
        )
        .await;
    assert_eq!(reason(&no_lines), "INVALID_LINES");
    let plain = app.event(&organizer, 10).await;
    let body = try_order(&app, &buyer, &plain, &limited, 2, json!({})).await;
    assert_eq!(reason(&body), "NO_TICKET_TYPES");
    assert_eq!(app.count("orders").await, 0);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn promo_codes_are_case_insensitive_and_discount_the_lines_they_apply_to() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 20).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3333).await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "Spring25", "discount": "PERCENT", "value": 25 } }),
    )
    .await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "TENOFF", "discount": "FIXED", "value": 1000000 } }),
    )
    .await;
    let percent = try_order(
        &app,
        &buyer,
        &event,
        &regular,
        3,
        json!({ "promoCode": "spring25" }),
    )
    .await;
    let placed = &percent["data"]["placeOrder"];
    assert_eq!(placed["subtotal"]["amount"], 9999);
    // 25 % of 99.99, rounded down to the cent.
    assert_eq!(placed["discount"]["amount"], 2499);
    assert_eq!(placed["total"]["amount"], 7500);
    // A fixed discount never takes the total below zero: the order is then free, and paid.
    let fixed = try_order(
        &app,
        &buyer,
        &event,
        &regular,
        1,
        json!({ "promoCode": "tenoff" }),
    )
    .await;
    assert_eq!(fixed["data"]["placeOrder"]["total"]["amount"], 0);
    assert_eq!(fixed["data"]["placeOrder"]["status"], "PAID");
    let duplicate = app
        .gql(
            Some(&organizer.token),
            CREATE_PROMO,
            json!({ "eventId": event, "input": { "code": "SPRING25", "discount": "FIXED", "value": 1 } }),
        )
        .await;
    assert_eq!(error_code(&duplicate), "CONFLICT");
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn the_sweeper_expires_an_unpaid_order_and_its_seats_go_back() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 5).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let code = json!({ "eventId": event, "input": { "code": "ONCE", "discount": "PERCENT", "value": 10, "maxUses": 1 } });
    app.gql_ok(Some(&organizer.token), CREATE_PROMO, code).await;
    let placed = try_order(
        &app,
        &buyer,
        &event,
        &regular,
        5,
        json!({ "promoCode": "ONCE" }),
    )
    .await;
    let id = placed["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_out_of_time(&app, &id).await;
    let expired = eventually(WAIT, || async {
        let order = read_order(&app, &buyer, &id).await;
        (order["status"] == "EXPIRED").then_some(order)
    })
    .await;
    assert_eq!(expired["reason"], "the order was not paid in time");
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 5 AND seats_held = 0"
        ))
        .await,
        1
    );
    // The code's use came back with the seats.
    let again = try_order(
        &app,
        &buyer,
        &event,
        &regular,
        5,
        json!({ "promoCode": "once" }),
    )
    .await;
    assert!(again.get("errors").is_none(), "{again}");
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_payment_after_expiry_takes_the_seats_again_when_they_are_still_free() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 5).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let id = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_out_of_time(&app, &id).await;
    eventually(WAIT, || async {
        read_order(&app, &buyer, &id).await["status"] == "EXPIRED"
    })
    .await;
    let paid = mark_paid(&app, &organizer, &id).await;
    assert_eq!(paid["status"], "PAID", "{paid}");
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 2);
    assert!(paid["reason"].as_str().unwrap().contains("still free"));
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_payment_after_expiry_is_refunded_when_the_seats_are_gone() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let rival = app.user(Role::User).await;
    let event = event(&app, &organizer, 2).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    let id = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_out_of_time(&app, &id).await;
    // Someone else buys the seats the expired hold gave back.
    order(&app, &rival, &event, &regular, 2).await;
    let late = mark_paid(&app, &organizer, &id).await;
    assert_eq!(late["status"], "REFUNDED", "{late}");
    assert_eq!(late["payment"]["amountPaid"]["amount"], 5000);
    assert_eq!(late["payment"]["amountRefunded"]["amount"], 5000);
    assert!(late["reason"].as_str().unwrap().contains("refunded"));
    assert_eq!(late["tickets"], json!([]));
    assert_money_invariants(&app).await;
}
