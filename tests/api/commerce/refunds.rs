//! Refunds by the organizer (full, by line, by amount), the buyer's cancellation under the
//! event's refund policy, and a cancelled event's paid orders.

use evently::db::models::Role;
use serde_json::json;

use super::*;
use crate::support::{WAIT, error_code, eventually};

const SETTINGS: &str = "mutation($id: ID!, $input: PaymentSettingsInput!) {
  updatePaymentSettings(eventId: $id, input: $input) { paymentProvider refundUntil } }";

/// A paid order of one line of `a` tickets and one of `b` (two types), and its id.
async fn paid_two_lines(
    app: &TestApp,
    organizer: &TestUser,
    buyer: &TestUser,
    event: &str,
    a: i32,
    b: i32,
) -> (String, serde_json::Value) {
    let regular = priced(app, organizer, event, "Regular", 3000).await;
    let vip = priced(app, organizer, event, "VIP", 7000).await;
    let body = app
        .gql(
            Some(&buyer.token),
            PLACE_ORDER,
            json!({ "input": { "eventId": event, "lines": [
                { "ticketTypeId": regular, "quantity": a },
                { "ticketTypeId": vip, "quantity": b } ] } }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let id = body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = mark_paid(app, organizer, &id).await;
    (id, paid)
}

#[tokio::test]
async fn refunding_a_line_gives_its_seats_back_and_the_rest_stays_valid() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let (id, _) = paid_two_lines(&app, &organizer, &buyer, &event, 2, 1).await;
    let order = read_order(&app, &organizer, &id).await;
    let vip_line = order["lines"][1]["id"].clone();
    let refunded = app
        .gql_ok(
            Some(&organizer.token),
            REFUND,
            json!({ "id": id, "input": { "lines": [vip_line], "reason": "seat broken" } }),
        )
        .await["refundOrder"]
        .clone();
    assert_eq!(refunded["status"], "PARTIALLY_REFUNDED");
    assert_eq!(refunded["payment"]["amountRefunded"]["amount"], 7000);
    assert_eq!(refunded["lines"][1]["refunded"], true);
    let valid = refunded["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "VALID")
        .count();
    assert_eq!(valid, 2);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 8"
        ))
        .await,
        1
    );
    // The same line twice: refused, nothing moves.
    let twice = app
        .gql(
            Some(&organizer.token),
            REFUND,
            json!({ "id": id, "input": { "lines": [vip_line] } }),
        )
        .await;
    assert_eq!(reason(&twice), "LINE_ALREADY_REFUNDED");
    // An amount larger than what is left.
    let too_much = app
        .gql(
            Some(&organizer.token),
            REFUND,
            json!({ "id": id, "input": { "amount": 6001 } }),
        )
        .await;
    assert_eq!(reason(&too_much), "REFUND_TOO_LARGE");
    // The rest, in full.
    let rest = app
        .gql_ok(Some(&organizer.token), REFUND, json!({ "id": id }))
        .await["refundOrder"]
        .clone();
    assert_eq!(rest["status"], "REFUNDED");
    assert_eq!(rest["payment"]["amountRefunded"]["amount"], 13000);
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn a_buyer_cancels_for_a_full_refund_only_before_refund_until() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let (id, _) = paid_two_lines(&app, &organizer, &buyer, &event, 1, 1).await;
    let none = app
        .gql(Some(&buyer.token), CANCEL_ORDER, json!({ "id": id }))
        .await;
    assert_eq!(reason(&none), "REFUNDS_NOT_OFFERED");
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    app.gql_ok(
        Some(&organizer.token),
        SETTINGS,
        json!({ "id": event, "input": { "refundUntil": past } }),
    )
    .await;
    let late = app
        .gql(Some(&buyer.token), CANCEL_ORDER, json!({ "id": id }))
        .await;
    assert_eq!(error_code(&late), "BAD_USER_INPUT");
    assert_eq!(reason(&late), "REFUND_PERIOD_OVER");
    let future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    app.gql_ok(
        Some(&organizer.token),
        SETTINGS,
        json!({ "id": event, "input": { "refundUntil": future } }),
    )
    .await;
    let cancelled = app
        .gql_ok(Some(&buyer.token), CANCEL_ORDER, json!({ "id": id }))
        .await["cancelOrder"]
        .clone();
    assert_eq!(cancelled["status"], "REFUNDED");
    assert_eq!(cancelled["payment"]["amountRefunded"]["amount"], 10000);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 10"
        ))
        .await,
        1
    );
    assert_money_invariants(&app).await;
}

#[tokio::test]
async fn cancelling_an_event_refunds_every_paid_order_and_cancels_the_pending_ones() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let waiting = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let (paid, _) = paid_two_lines(&app, &organizer, &buyer, &event, 2, 1).await;
    let regular = app
        .gql_ok(None, TICKET_TYPES, json!({ "id": event }))
        .await["event"]["ticketTypes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pending = order(&app, &waiting, &event, &regular, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status } }",
        json!({ "id": event }),
    )
    .await;
    let pending = read_order(&app, &waiting, &pending).await;
    assert_eq!(pending["status"], "CANCELLED");
    let refunded = eventually(WAIT, || async {
        let order = read_order(&app, &buyer, &paid).await;
        (order["status"] == "REFUNDED").then_some(order)
    })
    .await;
    assert_eq!(refunded["payment"]["amountRefunded"]["amount"], 13000);
    assert!(
        refunded["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "CANCELLED")
    );
    assert_money_invariants(&app).await;
}
