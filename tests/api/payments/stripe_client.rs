//! The real Stripe client against the stand-in: what it sends, how it reads the answers, and
//! how it retries.

use std::time::Duration;

use evently::payments::stripe::StripeClient;
use evently::payments::{
    IntentStatus, NewIntent, NewRefund, PaymentError, PaymentProvider, RefundStatus,
};
use uuid::Uuid;

use crate::support::stripe::STANDIN_SECRET_KEY;
use crate::support::{StripeStandIn, WAIT, eventually};

fn intent<'a>(order_id: Uuid, amount: i64, key: &'a str) -> NewIntent<'a> {
    NewIntent {
        order_id,
        amount,
        currency: "EUR",
        idempotency_key: key,
        description: Some("2 × Early bird, Rust Nation"),
    }
}

fn refused_code(result: Result<impl std::fmt::Debug, PaymentError>) -> String {
    match result {
        Err(PaymentError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn creating_an_intent_sends_stripes_parameters_and_returns_the_client_secret() {
    let stripe = StripeStandIn::start().await;
    let order_id = Uuid::new_v4();
    let created = stripe
        .client()
        .create_intent(intent(order_id, 4200, "order-1"))
        .await
        .unwrap();

    assert!(created.id.starts_with("pi_"), "{created:?}");
    let secret = created.client_secret.clone().unwrap();
    assert!(
        secret.starts_with(&format!("{}_secret_", created.id)),
        "{secret}"
    );
    assert_eq!(created.status, IntentStatus::AwaitingBuyer);
    assert_eq!((created.amount, created.currency.as_str()), (4200, "EUR"));
    assert_eq!(created.order_id, Some(order_id));

    let seen = stripe.intent(&created.id).unwrap();
    assert_eq!(seen["currency"], "eur");
    assert_eq!(seen["metadata"]["order_id"], order_id.to_string());
    assert_eq!(seen["automatic_payment_methods"]["enabled"], true);
    assert_eq!(seen["description"], "2 × Early bird, Rust Nation");
    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("POST", "/v1/payment_intents")
    );
    assert_eq!(requests[0].idempotency_key.as_deref(), Some("order-1"));
}

#[tokio::test]
async fn the_same_idempotency_key_twice_makes_one_intent() {
    let stripe = StripeStandIn::start().await;
    let client = stripe.client();
    let order_id = Uuid::new_v4();
    let first = client
        .create_intent(intent(order_id, 4200, "order-2"))
        .await
        .unwrap();
    let again = client
        .create_intent(intent(order_id, 4200, "order-2"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(stripe.intents().len(), 1);

    // The same key with other parameters is a mistake Stripe refuses.
    let other = client
        .create_intent(intent(order_id, 5000, "order-2"))
        .await;
    assert_eq!(refused_code(other), "idempotency_error");
    assert_eq!(stripe.intents().len(), 1);
}

#[tokio::test]
async fn an_intent_is_retrieved_and_canceled_once() {
    let stripe = StripeStandIn::start().await;
    let client = stripe.client();
    let created = client
        .create_intent(intent(Uuid::new_v4(), 900, "order-3"))
        .await
        .unwrap();

    assert_eq!(client.retrieve_intent(&created.id).await.unwrap(), created);
    let canceled = client.cancel_intent(&created.id).await.unwrap();
    assert_eq!(canceled.status, IntentStatus::Canceled);
    assert_eq!(
        client.retrieve_intent(&created.id).await.unwrap().status,
        IntentStatus::Canceled
    );
    assert_eq!(
        refused_code(client.cancel_intent(&created.id).await),
        "payment_intent_unexpected_state"
    );
    assert_eq!(
        refused_code(client.retrieve_intent("pi_missing").await),
        "resource_missing"
    );
    // An id that would change the path never leaves the process.
    let before = stripe.requests().len();
    assert_eq!(
        refused_code(client.retrieve_intent("pi_1/../../v1/refunds").await),
        "resource_missing"
    );
    assert_eq!(stripe.requests().len(), before);
}

#[tokio::test]
async fn a_paid_intent_is_refunded_in_part_then_in_full() {
    let stripe = StripeStandIn::start().await;
    let client = stripe.client();
    let created = client
        .create_intent(intent(Uuid::new_v4(), 4200, "order-4"))
        .await
        .unwrap();
    stripe.succeed(&created.id);
    assert_eq!(
        client.retrieve_intent(&created.id).await.unwrap().status,
        IntentStatus::Succeeded
    );

    let partial = NewRefund {
        intent_id: &created.id,
        amount: 1000,
        idempotency_key: "refund-4-a",
        reason: Some("the organizer moved the date"),
    };
    let first = client.refund(partial.clone()).await.unwrap();
    assert!(first.id.starts_with("re_"));
    assert_eq!(
        (first.amount, first.status),
        (1000, RefundStatus::Succeeded)
    );
    // A retried refund (same key) refunds once.
    assert_eq!(client.refund(partial).await.unwrap(), first);
    let seen = stripe.refunds();
    assert_eq!(seen.len(), 1);
    // Our reason is not one of Stripe's: it travels in metadata only.
    assert_eq!(seen[0]["reason"], serde_json::Value::Null);
    assert_eq!(
        seen[0]["metadata"]["reason"],
        "the organizer moved the date"
    );

    let too_much = NewRefund {
        amount: 3201,
        idempotency_key: "refund-4-b",
        ..first_refund(&created.id)
    };
    assert_eq!(
        refused_code(client.refund(too_much).await),
        "amount_too_large"
    );
    let rest = NewRefund {
        amount: 3200,
        idempotency_key: "refund-4-c",
        ..first_refund(&created.id)
    };
    assert_eq!(client.refund(rest).await.unwrap().amount, 3200);
    let last = stripe
        .refunds()
        .into_iter()
        .find(|r| r["amount"] == 3200)
        .unwrap();
    assert_eq!(last["reason"], "requested_by_customer");
    assert_eq!(
        stripe.charge_of(&created.id).unwrap()["amount_refunded"],
        4200
    );

    let more = NewRefund {
        amount: 1,
        idempotency_key: "refund-4-d",
        ..first_refund(&created.id)
    };
    assert_eq!(
        refused_code(client.refund(more).await),
        "charge_already_refunded"
    );
}

fn first_refund(intent_id: &str) -> NewRefund<'_> {
    NewRefund {
        intent_id,
        amount: 0,
        idempotency_key: "",
        reason: Some("requested_by_customer"),
    }
}

#[tokio::test]
async fn a_refused_request_is_refused_with_stripes_code_and_not_retried() {
    let stripe = StripeStandIn::start().await;
    let too_small = stripe
        .client()
        .create_intent(intent(Uuid::new_v4(), 10, "order-5"))
        .await;
    assert_eq!(refused_code(too_small), "amount_too_small");

    let wrong_key = StripeClient::new(&stripe.url(), "sk_test_not_the_key");
    let refused = wrong_key
        .create_intent(intent(Uuid::new_v4(), 4200, "order-6"))
        .await;
    assert!(
        matches!(&refused, Err(PaymentError::Refused { message, .. }) if message.starts_with("Invalid API Key")),
        "{refused:?}"
    );
    assert_eq!(stripe.requests().len(), 2, "4xx answers are final");
    assert!(stripe.intents().is_empty());
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_with_the_same_key_to_one_intent() {
    let stripe = StripeStandIn::start().await;
    stripe.fail_next(1, 500);
    stripe.fail_next(1, 429);
    stripe.fail_next(1, 503);
    let created = stripe
        .client()
        .create_intent(intent(Uuid::new_v4(), 4200, "order-7"))
        .await
        .unwrap();
    assert_eq!(stripe.intents().len(), 1);
    let requests = stripe.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some("order-7"))
    );
    assert_eq!(
        stripe.intent(&created.id).unwrap()["id"],
        created.id.as_str()
    );
}

#[tokio::test]
async fn an_answer_lost_to_a_timeout_is_replayed_on_retry_instead_of_making_a_second_intent() {
    let stripe = StripeStandIn::start().await;
    stripe.slow_responses(Duration::from_secs(2));
    let client = stripe
        .client()
        .with_timeouts(Duration::from_secs(1), Duration::from_millis(300));
    let create = tokio::spawn(async move {
        client
            .create_intent(intent(Uuid::new_v4(), 4200, "order-8"))
            .await
    });
    // The first attempt is done at Stripe (an intent exists) but its answer will come too late.
    eventually(WAIT, || async { !stripe.intents().is_empty() }).await;
    stripe.slow_responses(Duration::ZERO);
    let created = create.await.unwrap().unwrap();
    assert_eq!(stripe.intents().len(), 1);
    assert_eq!(stripe.intents()[0]["id"], created.id.as_str());
    assert!(stripe.requests().len() >= 2, "{:?}", stripe.requests());
}

#[tokio::test]
async fn stripe_out_of_reach_is_unavailable() {
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = StripeClient::new(&format!("http://{unreachable}"), STANDIN_SECRET_KEY)
        .with_retries(2, Duration::from_millis(10));
    let result = client
        .create_intent(intent(Uuid::new_v4(), 4200, "order-9"))
        .await;
    assert!(
        matches!(result, Err(PaymentError::Unavailable(_))),
        "{result:?}"
    );

    // And a Stripe that keeps failing is unavailable once the retries are spent.
    let stripe = StripeStandIn::start().await;
    stripe.fail_next(10, 500);
    let result = stripe.client().retrieve_intent("pi_123").await;
    assert!(
        matches!(&result, Err(PaymentError::Unavailable(reason)) if !reason.contains(STANDIN_SECRET_KEY)),
        "{result:?}"
    );
    assert_eq!(
        stripe.requests().len(),
        4,
        "the first attempt and 3 retries"
    );
}
