//! Orders paid through Stripe, against the Stripe stand-in: the real client creates intents
//! and refunds on it, and its signed webhooks reach `POST /webhooks/stripe`.

use std::time::Duration;

use evently::config::{Secret, StripeConfig};
use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::*;
use crate::support::stripe::STANDIN_SECRET_KEY;
use crate::support::stripe::webhooks::signature_header;
use crate::support::{StripeStandIn, WAIT, eventually};

const WEBHOOK_SECRET: &str = "whsec_commerce_0123456789abcdef";

const SETTINGS: &str = "mutation($id: ID!) {
  updatePaymentSettings(eventId: $id, input: { paymentProvider: STRIPE }) { paymentProvider } }";

struct Shop {
    app: TestApp,
    stripe: StripeStandIn,
    organizer: TestUser,
    event: String,
    regular: String,
}

/// A server paid through the stand-in (webhooks to it), and an event of `capacity` seats sold
/// through Stripe with one ticket type at 25 EUR.
async fn shop(capacity: i32, reconcile_after: Duration) -> Shop {
    shop_with(capacity, reconcile_after, |_| {}).await
}

/// [`shop`] with the first instance's configuration changed by `tweak`.
async fn shop_with(
    capacity: i32,
    reconcile_after: Duration,
    tweak: impl FnOnce(&mut evently::config::Config),
) -> Shop {
    let stripe = StripeStandIn::start().await;
    let api_base = stripe.url();
    let app = TestApp::spawn_with(move |config| {
        config.stripe = Some(StripeConfig {
            api_base,
            secret_key: Secret::new(STANDIN_SECRET_KEY),
            webhook_secret: Secret::new(WEBHOOK_SECRET),
            webhook_tolerance: Duration::from_secs(300),
        });
        config.reconcile_after = reconcile_after;
        tweak(config);
    })
    .await;
    stripe
        .webhooks()
        .endpoint(&format!("{}/webhooks/stripe", app.base_url), WEBHOOK_SECRET);
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, capacity).await;
    app.gql_ok(Some(&organizer.token), SETTINGS, json!({ "id": event }))
        .await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    Shop {
        app,
        stripe,
        organizer,
        event,
        regular,
    }
}

const AN_HOUR: Duration = Duration::from_secs(3600);

impl Shop {
    /// A Stripe order of `quantity` tickets: (order id, intent id).
    async fn order(&self, buyer: &TestUser, quantity: i32) -> (String, String) {
        let placed = order(&self.app, buyer, &self.event, &self.regular, quantity).await;
        assert_eq!(placed["payment"]["provider"], "STRIPE");
        let secret = placed["payment"]["clientSecret"]
            .as_str()
            .expect("a client secret");
        let intent = secret.split("_secret").next().unwrap().to_owned();
        assert!(intent.starts_with("pi_"), "{secret}");
        (placed["id"].as_str().unwrap().to_owned(), intent)
    }

    async fn status(&self, buyer: &TestUser, order_id: &str) -> Value {
        read_order(&self.app, buyer, order_id).await
    }

    async fn wait_for(&self, buyer: &TestUser, order_id: &str, status: &str) -> Value {
        eventually(WAIT, || async {
            let order = self.status(buyer, order_id).await;
            (order["status"] == status).then_some(order)
        })
        .await
    }
}

#[tokio::test]
async fn a_card_payment_confirmed_by_webhook_makes_the_order_paid_with_its_tickets() {
    let shop = shop(10, AN_HOUR).await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 2).await;
    let created = shop.stripe.intent(&intent).unwrap();
    assert_eq!(created["amount"], 5000);
    assert_eq!(created["currency"], "eur");
    shop.stripe.succeed(&intent);
    let paid = shop.wait_for(&buyer, &id, "PAID").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 2);
    shop.stripe.webhooks().settled().await;
    assert!(
        shop.stripe
            .webhooks()
            .deliveries()
            .iter()
            .all(|d| d.succeeded())
    );
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_400_and_changes_nothing() {
    let shop = shop(10, AN_HOUR).await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 1).await;
    shop.stripe.webhooks().hold();
    shop.stripe.succeed(&intent);
    let event = shop.stripe.webhooks().events().pop().unwrap();
    let payload = serde_json::to_vec(&event).unwrap();
    let now = chrono::Utc::now().timestamp();
    let forged = signature_header(&payload, "whsec_someone_else", now);
    let answer = post_webhook(&shop.app, &payload, &forged).await;
    assert_eq!(answer, 400);
    let stale = signature_header(&payload, WEBHOOK_SECRET, now - 3600);
    assert_eq!(post_webhook(&shop.app, &payload, &stale).await, 400);
    assert_eq!(shop.status(&buyer, &id).await["status"], "PENDING_PAYMENT");
    // (Only `payment_intent.created`, which moves nothing, came through.)
    assert_eq!(
        shop.app
            .count("provider_events WHERE kind <> 'ignored'")
            .await,
        0
    );
}

async fn post_webhook(app: &TestApp, payload: &[u8], signature: &str) -> u16 {
    app.client
        .post(format!("{}/webhooks/stripe", app.base_url))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_webhook_ten_times_at_once_on_two_instances_pays_once() {
    let shop = shop(10, AN_HOUR).await;
    let peer = shop.app.spawn_peer().await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 3).await;
    shop.stripe.webhooks().hold();
    shop.stripe.succeed(&intent);
    let event = shop.stripe.webhooks().events().pop().unwrap();
    let payload = serde_json::to_vec(&event).unwrap();
    let signature = signature_header(&payload, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    let answers = join_all((0..10).map(|i| {
        let server = if i % 2 == 0 { &shop.app } else { &peer };
        post_webhook(server, &payload, &signature)
    }))
    .await;
    assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
    let paid = shop.status(&buyer, &id).await;
    assert_eq!(paid["status"], "PAID");
    assert_eq!(shop.app.count("tickets").await, 3);
    assert_eq!(shop.app.count("bookings").await, 1);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn a_failure_delivered_after_the_success_changes_nothing() {
    let shop = shop(10, AN_HOUR).await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 1).await;
    shop.stripe.webhooks().hold();
    shop.stripe.fail(&intent, "Your card was declined.");
    shop.stripe.succeed(&intent);
    // Stripe sent the failure first; the success arrives first here.
    shop.stripe.webhooks().release(true);
    shop.stripe.webhooks().settled().await;
    let order = shop.status(&buyer, &id).await;
    assert_eq!(order["status"], "PAID", "{order}");
    assert_eq!(order["payment"]["status"], "succeeded");
    assert_eq!(
        shop.app
            .count("provider_events WHERE kind <> 'ignored'")
            .await,
        2
    );
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn a_card_payment_after_expiry_takes_free_seats_and_refunds_when_they_are_gone() {
    let shop = shop(2, AN_HOUR).await;
    let first = shop.app.user(Role::User).await;
    let second = shop.app.user(Role::User).await;
    let rival = shop.app.user(Role::User).await;
    // Seats still free: the late payment takes them again.
    let (id, intent) = shop.order(&first, 1).await;
    run_out_of_time(&shop.app, &id).await;
    shop.wait_for(&first, &id, "EXPIRED").await;
    shop.stripe.succeed(&intent);
    let paid = shop.wait_for(&first, &id, "PAID").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    // Seats gone: refunded at once through Stripe, and the buyer is told.
    let (late, late_intent) = shop.order(&second, 1).await;
    run_out_of_time(&shop.app, &late).await;
    shop.wait_for(&second, &late, "EXPIRED").await;
    shop.order(&rival, 1).await;
    shop.stripe.succeed(&late_intent);
    let refunded = shop.wait_for(&second, &late, "REFUNDED").await;
    assert!(
        refunded["reason"].as_str().unwrap().contains("refunded"),
        "{refunded}"
    );
    let refunds = shop.stripe.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], 2500);
    assert_eq!(refunds[0]["payment_intent"], late_intent.as_str());
    assert_money_invariants(&shop.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_racing_the_sweepers_expiry_ends_paid_either_way() {
    let shop = shop(20, AN_HOUR).await;
    let peer = shop.app.spawn_peer().await;
    let mut orders = Vec::new();
    for _ in 0..8 {
        let buyer = shop.app.user(Role::User).await;
        let (id, intent) = shop.order(&buyer, 2).await;
        orders.push((buyer, id, intent));
    }
    // Each hold runs out as its payment arrives: the sweepers of both instances and the
    // webhooks race for every order.
    for (_, id, intent) in &orders {
        run_out_of_time(&shop.app, id).await;
        shop.stripe.succeed(intent);
    }
    for (buyer, id, _) in &orders {
        shop.wait_for(buyer, id, "PAID").await;
    }
    drop(peer);
    assert_eq!(shop.app.count("tickets WHERE status = 'VALID'").await, 16);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_on_one_instance_racing_the_sweeper_of_another_ends_paid_either_way() {
    // Instance A takes the webhooks and never sweeps; instance B sweeps all the time.
    let shop = shop_with(20, AN_HOUR, |config| {
        config.sweep_interval = AN_HOUR;
    })
    .await;
    let sweeper = shop
        .app
        .spawn_peer_with(|config| config.sweep_interval = Duration::from_millis(10))
        .await;
    let mut orders = Vec::new();
    for _ in 0..8 {
        let buyer = shop.app.user(Role::User).await;
        let (id, intent) = shop.order(&buyer, 2).await;
        orders.push((buyer, id, intent));
    }
    for (_, id, intent) in &orders {
        run_out_of_time(&shop.app, id).await;
        shop.stripe.succeed(intent);
    }
    for (buyer, id, _) in &orders {
        let paid = shop.wait_for(buyer, id, "PAID").await;
        assert_eq!(paid["tickets"].as_array().unwrap().len(), 2, "{paid}");
    }
    shop.stripe.webhooks().settled().await;
    assert!(
        shop.stripe
            .webhooks()
            .deliveries()
            .iter()
            .all(|d| d.succeeded())
    );
    assert_eq!(shop.app.count("tickets WHERE status = 'VALID'").await, 16);
    assert_eq!(
        shop.stripe.refunds().len(),
        0,
        "seats were free: nobody refunded"
    );
    drop(sweeper);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stripe_refund_racing_the_buyers_cancellation_on_two_instances_refunds_once() {
    let shop = shop(10, AN_HOUR).await;
    let peer = shop.app.spawn_peer().await;
    let future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    shop.app
        .gql_ok(
            Some(&shop.organizer.token),
            "mutation($id: ID!, $until: DateTime!) {
               updatePaymentSettings(eventId: $id, input: { refundUntil: $until }) { refundUntil } }",
            json!({ "id": shop.event, "until": future }),
        )
        .await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 2).await;
    shop.stripe.succeed(&intent);
    shop.wait_for(&buyer, &id, "PAID").await;
    let mut attempts = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &shop.app } else { &peer };
        attempts.push(server.gql(Some(&shop.organizer.token), REFUND, json!({ "id": id })));
        attempts.push(server.gql(Some(&buyer.token), CANCEL_ORDER, json!({ "id": id })));
    }
    join_all(attempts).await;
    let order = shop.wait_for(&buyer, &id, "REFUNDED").await;
    assert_eq!(order["payment"]["amountRefunded"]["amount"], 5000);
    // One refund at Stripe, of the whole payment, and one recorded.
    let refunds = shop.stripe.refunds();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["amount"], 5000);
    assert_eq!(refunds[0]["payment_intent"], intent.as_str());
    assert_eq!(
        shop.app.count("refunds WHERE status = 'SUCCEEDED'").await,
        1
    );
    assert_eq!(
        shop.app
            .count(&format!(
                "events WHERE id = '{}' AND seats_available = 10",
                shop.event
            ))
            .await,
        1
    );
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn a_waiting_list_offer_of_a_card_event_gets_its_intent_and_is_paid_by_webhook() {
    let shop = shop(1, AN_HOUR).await;
    let buyer = shop.app.user(Role::User).await;
    let waiter = shop.app.user(Role::User).await;
    let (sold, intent) = shop.order(&buyer, 1).await;
    shop.stripe.succeed(&intent);
    shop.wait_for(&buyer, &sold, "PAID").await;
    let joined = shop
        .app
        .gql(
            Some(&waiter.token),
            "mutation($id: ID!, $type: ID) {
               joinWaitlist(eventId: $id, quantity: 1, ticketTypeId: $type) { status } }",
            json!({ "id": shop.event, "type": shop.regular }),
        )
        .await;
    assert_eq!(
        joined["data"]["joinWaitlist"]["status"], "WAITING",
        "{joined}"
    );
    shop.app
        .gql_ok(Some(&shop.organizer.token), REFUND, json!({ "id": sold }))
        .await;
    // The sweeper creates the offered order's intent: its client secret appears.
    let offered = eventually(WAIT, || async {
        let entries = shop
            .app
            .gql_ok(
                Some(&waiter.token),
                "{ myWaitlistEntries { status order { id payment { clientSecret } } } }",
                json!({}),
            )
            .await;
        let entry = entries["myWaitlistEntries"][0].clone();
        entry["order"]["payment"]["clientSecret"]
            .is_string()
            .then_some(entry)
    })
    .await;
    assert_eq!(offered["status"], "OFFERED");
    let order_id = offered["order"]["id"].as_str().unwrap().to_owned();
    let secret = offered["order"]["payment"]["clientSecret"]
        .as_str()
        .unwrap();
    let offer_intent = secret.split("_secret").next().unwrap().to_owned();
    assert_eq!(shop.stripe.intent(&offer_intent).unwrap()["amount"], 2500);
    shop.stripe.succeed(&offer_intent);
    let paid = shop.wait_for(&waiter, &order_id, "PAID").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn reconciliation_finds_a_payment_whose_webhook_never_came() {
    let shop = shop(10, Duration::ZERO).await;
    let buyer = shop.app.user(Role::User).await;
    shop.stripe.webhooks().hold();
    let (id, intent) = shop.order(&buyer, 1).await;
    shop.stripe.succeed(&intent);
    let paid = shop.wait_for(&buyer, &id, "PAID").await;
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(
        shop.app
            .count(&format!(
                "provider_events WHERE event_id = 'reconcile:{intent}:succeeded'"
            ))
            .await,
        1
    );
    // The webhook arriving at last changes nothing.
    shop.stripe.webhooks().release(false);
    shop.stripe.webhooks().settled().await;
    assert_eq!(shop.app.count("tickets").await, 1);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn an_organizers_refund_goes_through_stripe() {
    let shop = shop(10, AN_HOUR).await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 2).await;
    shop.stripe.succeed(&intent);
    shop.wait_for(&buyer, &id, "PAID").await;
    let refunded = shop
        .app
        .gql_ok(
            Some(&shop.organizer.token),
            REFUND,
            json!({ "id": id, "input": { "amount": 1000, "reason": "late start" } }),
        )
        .await["refundOrder"]
        .clone();
    assert_eq!(refunded["status"], "PARTIALLY_REFUNDED");
    let refunds = shop.stripe.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], 1000);
    assert_money_invariants(&shop.app).await;
}

#[tokio::test]
async fn order_updated_carries_the_order_from_pending_to_paid_on_another_instance() {
    let shop = shop(10, AN_HOUR).await;
    let peer = shop.app.spawn_peer().await;
    let buyer = shop.app.user(Role::User).await;
    let (id, intent) = shop.order(&buyer, 2).await;
    // Watching on the peer; the webhook lands on the first instance.
    let mut watcher = peer
        .connect_ws(json!({ "Authorization": format!("Bearer {}", buyer.token) }))
        .await;
    watcher
        .subscribe(
            "order",
            "subscription($id: ID!) { orderUpdated(id: $id) { status version tickets { code } } }",
            json!({ "id": id }),
        )
        .await;
    let first = watcher.next_message().await.unwrap();
    let first = first["payload"].clone();
    assert_eq!(
        first["data"]["orderUpdated"]["status"], "PENDING_PAYMENT",
        "{first}"
    );
    shop.stripe.succeed(&intent);
    let paid = loop {
        let next = watcher.next_data().await;
        if next["data"]["orderUpdated"]["status"] == "PAID" {
            break next;
        }
    };
    assert_eq!(
        paid["data"]["orderUpdated"]["tickets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
