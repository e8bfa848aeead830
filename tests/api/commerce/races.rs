//! Races on a real server, two instances where it matters, with the money invariants checked
//! in SQL afterwards.

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::json;

use super::*;
use crate::support::error_code;

async fn buyers(app: &TestApp, n: usize) -> Vec<TestUser> {
    join_all((0..n).map(|_| app.user(Role::User))).await
}

/// `placeOrder` as a client does it under load: with an idempotency key, again while the
/// server answers that it is busy (SERVICE_UNAVAILABLE: no database connection free in time).
async fn order_retrying(
    server: &TestApp,
    buyer: &TestUser,
    event: &str,
    ticket_type: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut extra = extra;
    extra["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
    loop {
        let answer = try_order(server, buyer, event, ticket_type, 1, extra.clone()).await;
        if answer.get("errors").is_none() || error_code(&answer) != "SERVICE_UNAVAILABLE" {
            return answer;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_ticket_of_a_quota_shared_by_two_types_sells_once_to_a_hundred_buyers() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 100).await;
    let early = priced(&app, &organizer, &event, "Early", 2000).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    quota(&app, &organizer, &event, 1, &[&early, &regular]).await;
    let people = buyers(&app, 100).await;
    let answers = join_all(people.iter().enumerate().map(|(i, buyer)| {
        let (server, ticket_type) = match i % 4 {
            0 => (&app, &early),
            1 => (&peer, &early),
            2 => (&app, &regular),
            _ => (&peer, &regular),
        };
        order_retrying(server, buyer, &event, ticket_type, json!({}))
    }))
    .await;
    let placed = answers.iter().filter(|a| a.get("errors").is_none()).count();
    let sold_out = answers
        .iter()
        .filter(|a| a.get("errors").is_some() && error_code(a) == "SOLD_OUT")
        .count();
    assert_eq!(placed, 1, "one order takes the quota's last ticket");
    assert_eq!(sold_out, 99);
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promo_code_with_five_uses_is_used_five_times_by_a_hundred_concurrent_orders() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 500).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "FIVE", "discount": "PERCENT", "value": 50, "maxUses": 5 } }),
    )
    .await;
    let people = buyers(&app, 100).await;
    let answers = join_all(people.iter().enumerate().map(|(i, buyer)| {
        let server = if i % 2 == 0 { &app } else { &peer };
        order_retrying(
            server,
            buyer,
            &event,
            &regular,
            json!({ "promoCode": "five" }),
        )
    }))
    .await;
    let placed = answers.iter().filter(|a| a.get("errors").is_none()).count();
    let used_up = answers
        .iter()
        .filter(|a| {
            a.get("errors").is_some()
                && a["errors"][0]["extensions"]["reason"] == "PROMO_CODE_USED_UP"
        })
        .count();
    let other: Vec<_> = answers
        .iter()
        .filter(|a| {
            a.get("errors").is_some()
                && a["errors"][0]["extensions"]["reason"] != "PROMO_CODE_USED_UP"
        })
        .collect();
    assert!(other.is_empty(), "other refusals: {other:?}");
    assert_eq!(placed, 5);
    assert_eq!(used_up, 95);
    assert_eq!(app.count("promo_codes WHERE uses = 5").await, 1);
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_manual_payment_marked_ten_times_on_two_instances_pays_once() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let id = order(&app, &buyer, &event, &regular, 3).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answers = join_all((0..10).map(|i| {
        let server = if i % 2 == 0 { &app } else { &peer };
        server.gql(
            Some(&organizer.token),
            MARK_PAID,
            json!({ "id": id, "reference": "transfer" }),
        )
    }))
    .await;
    for answer in &answers {
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(answer["data"]["markOrderPaid"]["status"], "PAID");
    }
    assert_eq!(app.count("tickets").await, 3);
    assert_eq!(app.count("provider_events").await, 1);
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_racing_the_buyers_cancellation_refunds_once() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!, $until: DateTime!) {
           updatePaymentSettings(eventId: $id, input: { refundUntil: $until }) { refundUntil } }",
        json!({ "id": event, "until": future }),
    )
    .await;
    let id = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &id).await;
    let mut attempts = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &app } else { &peer };
        attempts.push(server.gql(Some(&organizer.token), REFUND, json!({ "id": id })));
        attempts.push(server.gql(Some(&buyer.token), CANCEL_ORDER, json!({ "id": id })));
    }
    join_all(attempts).await;
    let order = read_order(&app, &organizer, &id).await;
    assert_eq!(order["status"], "REFUNDED");
    assert_eq!(order["payment"]["amountRefunded"]["amount"], 6000);
    assert_eq!(app.count("refunds WHERE status = 'SUCCEEDED'").await, 1);
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event}' AND seats_available = 10"
        ))
        .await,
        1
    );
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_an_event_during_an_onsale_leaves_no_money_and_no_ticket_behind() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 40).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let people = buyers(&app, 40).await;
    // Some paid already, some pending, more arriving while it is cancelled.
    for buyer in &people[..10] {
        let id = order(&app, buyer, &event, &regular, 1).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        mark_paid(&app, &organizer, &id).await;
    }
    for buyer in &people[10..20] {
        order(&peer, buyer, &event, &regular, 1).await;
    }
    let cancel = app.gql(
        Some(&organizer.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { status } }",
        json!({ "id": event }),
    );
    let late_orders = join_all(people[20..].iter().enumerate().map(|(i, buyer)| {
        let server = if i % 2 == 0 { &app } else { &peer };
        try_order(server, buyer, &event, &regular, 1, json!({}))
    }));
    let (cancelled, _) = tokio::join!(cancel, late_orders);
    assert!(cancelled.get("errors").is_none(), "{cancelled}");
    crate::support::eventually(crate::support::WAIT, || async {
        app.count("refunds WHERE status = 'PENDING'").await == 0
    })
    .await;
    assert_eq!(
        app.count("orders WHERE status IN ('PENDING_PAYMENT', 'PAID', 'PARTIALLY_REFUNDED')")
            .await,
        0,
        "every order is refunded or cancelled"
    );
    assert_eq!(app.count("tickets WHERE status = 'VALID'").await, 0);
    assert_money_invariants(&app).await;
}
