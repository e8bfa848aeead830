//! The stand-in's webhooks, received by a small endpoint that verifies each with
//! `verify_and_parse`: since the verifier is checked against the documented formula (its unit
//! tests), this shows the stand-in signs as Stripe does, and what its delivery options do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use evently::payments::stripe::verify_and_parse;
use evently::payments::{
    IntentStatus, NewIntent, NewRefund, PaymentProvider, ProviderEvent, ProviderEventKind,
    RefundStatus,
};
use uuid::Uuid;

use crate::support::StripeStandIn;

const SECRET: &str = "whsec_standin_0123456789abcdef";

/// A webhook endpoint: verifies with `secret`, answers 400 to what does not verify, 500 to
/// the first `fail_first` deliveries, 200 otherwise, and keeps the events it accepted.
struct Endpoint {
    url: String,
    received: Arc<Received>,
}

#[derive(Default)]
struct Received {
    secret: String,
    fail_first: AtomicUsize,
    events: Mutex<Vec<ProviderEvent>>,
}

impl Endpoint {
    async fn start(secret: &str, fail_first: usize) -> Self {
        let received = Arc::new(Received {
            secret: secret.to_owned(),
            fail_first: AtomicUsize::new(fail_first),
            events: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/webhooks/stripe", axum::routing::post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/webhooks/stripe"),
            received,
        }
    }

    fn events(&self) -> Vec<ProviderEvent> {
        self.received.events.lock().unwrap().clone()
    }
}

async fn receive(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let tolerance = Duration::from_secs(300);
    match verify_and_parse(
        &body,
        signature,
        &received.secret,
        tolerance,
        SystemTime::now(),
    ) {
        Err(_) => StatusCode::BAD_REQUEST,
        Ok(_)
            if received
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Ok(event) => {
            received.events.lock().unwrap().push(event);
            StatusCode::OK
        }
    }
}

async fn paid_intent(stripe: &StripeStandIn, order_id: Uuid) -> String {
    let new = NewIntent {
        order_id,
        amount: 4200,
        currency: "EUR",
        idempotency_key: &order_id.to_string(),
        description: None,
    };
    stripe.client().create_intent(new).await.unwrap().id
}

fn kinds(events: &[ProviderEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|event| match &event.kind {
            ProviderEventKind::PaymentSucceeded { .. } => "succeeded",
            ProviderEventKind::PaymentFailed { .. } => "failed",
            ProviderEventKind::PaymentCanceled { .. } => "canceled",
            ProviderEventKind::RefundUpdated { .. } => "refund",
            ProviderEventKind::Ignored { .. } => "ignored",
        })
        .collect()
}

#[tokio::test]
async fn the_stand_ins_webhooks_verify_with_verify_and_parse() {
    let stripe = StripeStandIn::start().await;
    let endpoint = Endpoint::start(SECRET, 0).await;
    stripe.webhooks().endpoint(&endpoint.url, SECRET);
    let order_id = Uuid::new_v4();
    let intent_id = paid_intent(&stripe, order_id).await;
    stripe.webhooks().settled().await;
    let succeeded = stripe.succeed(&intent_id);
    stripe.webhooks().settled().await;
    let refund = NewRefund {
        intent_id: &intent_id,
        amount: 200,
        idempotency_key: "r1",
        reason: None,
    };
    stripe.client().refund(refund).await.unwrap();
    stripe.webhooks().settled().await;

    let deliveries = stripe.webhooks().deliveries();
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
    let events = endpoint.events();
    // payment_intent.created, payment_intent.succeeded, refund.created, charge.refunded
    assert_eq!(
        kinds(&events),
        ["ignored", "succeeded", "refund", "ignored"]
    );
    let ProviderEventKind::PaymentSucceeded { intent } = &events[1].kind else {
        unreachable!()
    };
    assert_eq!(events[1].id, succeeded);
    assert_eq!(
        (intent.id.as_str(), intent.status.clone()),
        (intent_id.as_str(), IntentStatus::Succeeded)
    );
    assert_eq!(intent.order_id, Some(order_id));
    assert!(
        matches!(&events[2].kind, ProviderEventKind::RefundUpdated { intent_id: id, refund } if *id == intent_id && refund.amount == 200)
    );
}

#[tokio::test]
async fn deliveries_refused_by_the_endpoint_are_sent_again_by_retry_failed() {
    let stripe = StripeStandIn::start().await;
    // A wrong secret: every delivery is refused with 400 and nothing is accepted.
    let wrong = Endpoint::start("whsec_not_the_one", 0).await;
    stripe.webhooks().endpoint(&wrong.url, SECRET);
    let intent_id = paid_intent(&stripe, Uuid::new_v4()).await;
    stripe.webhooks().settled().await;
    let refused = &stripe.webhooks().deliveries()[0];
    assert_eq!(
        (refused.event_type.as_str(), refused.status),
        ("payment_intent.created", Some(400))
    );
    assert!(wrong.events().is_empty());

    // An endpoint that cannot apply the first two events answers 500; Stripe retries them.
    let endpoint = Endpoint::start(SECRET, 2).await;
    stripe.webhooks().endpoint(&endpoint.url, SECRET);
    stripe.succeed(&intent_id);
    stripe.fail(&intent_id, "declined");
    stripe.webhooks().settled().await;
    let retried = stripe.webhooks().retry_failed();
    assert_eq!(
        retried.len(),
        3,
        "the created event (400) and the two refused with 500"
    );
    stripe.webhooks().settled().await;
    assert_eq!(endpoint.events().len(), 3);
    assert!(
        stripe.webhooks().retry_failed().is_empty(),
        "every event has had a 2xx"
    );
    let log = stripe.webhooks().deliveries();
    assert_eq!(
        log.iter().filter(|d| d.status == Some(500)).count(),
        2,
        "{log:?}"
    );
}

#[tokio::test]
async fn webhooks_can_be_duplicated_delayed_and_reordered() {
    let stripe = StripeStandIn::start().await;
    let endpoint = Endpoint::start(SECRET, 0).await;
    stripe.webhooks().endpoint(&endpoint.url, SECRET);
    stripe.webhooks().hold();
    let intent_id = paid_intent(&stripe, Uuid::new_v4()).await;
    stripe.fail(&intent_id, "Your card was declined.");
    stripe.succeed(&intent_id);
    stripe.webhooks().settled().await;
    assert!(endpoint.events().is_empty(), "held back");

    stripe.webhooks().duplicate(3);
    stripe.webhooks().delay(Duration::from_millis(50));
    stripe.webhooks().release(true);
    stripe.webhooks().settled().await;
    let events = endpoint.events();
    assert_eq!(events.len(), 9);
    let mut order = kinds(&events);
    order.dedup();
    assert_eq!(order, ["succeeded", "failed", "ignored"], "newest first");
    for copies in events.chunks(3) {
        assert!(
            copies.iter().all(|event| event.id == copies[0].id),
            "three copies of one event"
        );
    }
    let ProviderEventKind::PaymentFailed { message, .. } = &events[3].kind else {
        unreachable!()
    };
    assert_eq!(message.as_deref(), Some("Your card was declined."));
    assert!(
        events[0].created >= events[3].created,
        "`created` tells the true order"
    );
}

#[tokio::test]
async fn a_pending_refund_settles_with_refund_updated_or_refund_failed() {
    let stripe = StripeStandIn::start().await;
    let endpoint = Endpoint::start(SECRET, 0).await;
    stripe.webhooks().endpoint(&endpoint.url, SECRET);
    let intent_id = paid_intent(&stripe, Uuid::new_v4()).await;
    stripe.succeed(&intent_id);
    stripe.refunds_pending(true);
    let client = stripe.client();
    let refund = |amount, key| NewRefund {
        intent_id: &intent_id,
        amount,
        idempotency_key: key,
        reason: None,
    };
    let kept = client.refund(refund(1000, "r-kept")).await.unwrap();
    let lost = client.refund(refund(3200, "r-lost")).await.unwrap();
    assert_eq!(kept.status, RefundStatus::Pending);
    stripe.settle_refund(&kept.id, true);
    stripe.settle_refund(&lost.id, false);
    stripe.webhooks().settled().await;

    let settled: Vec<_> = endpoint
        .events()
        .into_iter()
        .filter_map(|event| match event.kind {
            ProviderEventKind::RefundUpdated { refund, .. } => Some((refund.id, refund.status)),
            _ => None,
        })
        .collect();
    assert_eq!(settled.len(), 4, "{settled:?}");
    assert!(settled.contains(&(kept.id.clone(), RefundStatus::Succeeded)));
    assert!(settled.contains(&(lost.id.clone(), RefundStatus::Failed)));
    // The failed refund's money counts as not refunded: it can be refunded again.
    assert_eq!(
        stripe.charge_of(&intent_id).unwrap()["amount_refunded"],
        1000
    );
    stripe.refunds_pending(false);
    assert_eq!(
        client.refund(refund(3200, "r-again")).await.unwrap().status,
        RefundStatus::Succeeded
    );
}
