//! The verifier against signatures computed here from Stripe's documented formula, with
//! `hmac` and `sha2` directly: hex(HMAC-SHA256(secret, "<t>.<payload>")).

use super::*;
use crate::payments::{Intent, IntentStatus, Refund, RefundStatus};

const SECRET: &str = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
const NOW: i64 = 1_760_000_000;
const TOLERANCE: Duration = Duration::from_secs(300);

fn at(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds as u64)
}

/// The documented formula, written out.
fn v1(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut signed_payload = format!("{timestamp}.").into_bytes();
    signed_payload.extend_from_slice(payload);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&signed_payload);
    hex::encode(mac.finalize().into_bytes())
}

fn succeeded_event() -> Vec<u8> {
    serde_json::json!({
        "id": "evt_1PZ9",
        "object": "event",
        "api_version": "2024-06-20",
        "created": NOW - 2,
        "type": "payment_intent.succeeded",
        "livemode": false,
        "pending_webhooks": 1,
        "data": {"object": {
            "id": "pi_3PZ9",
            "object": "payment_intent",
            "amount": 4200,
            "amount_received": 4200,
            "currency": "eur",
            "status": "succeeded",
            "client_secret": "pi_3PZ9_secret_abc",
            "metadata": {"order_id": "6f1c7a0e-8a36-4c55-9a53-0d2b3f7e9a11"},
            "latest_charge": "ch_3PZ9",
            "last_payment_error": null
        }}
    })
    .to_string()
    .into_bytes()
}

fn check(payload: &[u8], header: &str) -> Result<ProviderEvent, WebhookError> {
    verify_and_parse(payload, header, SECRET, TOLERANCE, at(NOW))
}

#[test]
fn a_signature_made_by_the_documented_formula_verifies() {
    let payload = succeeded_event();
    let header = format!("t={NOW},v1={}", v1(SECRET, NOW, &payload));
    let event = check(&payload, &header).unwrap();
    assert_eq!(
        event,
        ProviderEvent {
            id: "evt_1PZ9".into(),
            created: NOW - 2,
            kind: ProviderEventKind::PaymentSucceeded {
                intent: Intent {
                    id: "pi_3PZ9".into(),
                    client_secret: Some("pi_3PZ9_secret_abc".into()),
                    status: IntentStatus::Succeeded,
                    amount: 4200,
                    currency: "EUR".into(),
                    order_id: Some("6f1c7a0e-8a36-4c55-9a53-0d2b3f7e9a11".parse().unwrap()),
                }
            }
        }
    );
    // What the stand-in signs with is the same formula.
    assert_eq!(sign(&payload, SECRET, NOW), header);
}

#[test]
fn a_wrong_secret_is_refused() {
    let payload = succeeded_event();
    let header = format!("t={NOW},v1={}", v1("whsec_other", NOW, &payload));
    assert_eq!(check(&payload, &header), Err(WebhookError::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let payload = succeeded_event();
    let header = format!("t={NOW},v1={}", v1(SECRET, NOW, &payload));
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace("4200", "1")
        .into_bytes();
    assert_eq!(check(&tampered, &header), Err(WebhookError::BadSignature));
}

#[test]
fn a_signature_for_another_timestamp_is_refused() {
    // The timestamp is signed: moving it forward to get past the tolerance breaks the signature.
    let payload = succeeded_event();
    let old = NOW - 3600;
    let header = format!("t={NOW},v1={}", v1(SECRET, old, &payload));
    assert_eq!(check(&payload, &header), Err(WebhookError::BadSignature));
}

#[test]
fn an_old_timestamp_is_refused_even_when_correctly_signed() {
    let payload = succeeded_event();
    let old = NOW - 301;
    let header = format!("t={old},v1={}", v1(SECRET, old, &payload));
    assert_eq!(check(&payload, &header), Err(WebhookError::TooOld));
    // At the edge of the tolerance it still counts.
    let edge = NOW - 300;
    let header = format!("t={edge},v1={}", v1(SECRET, edge, &payload));
    assert!(check(&payload, &header).is_ok());
    // A timestamp from the future past the tolerance is refused too (|now - t|).
    let future = NOW + 301;
    let header = format!("t={future},v1={}", v1(SECRET, future, &payload));
    assert_eq!(check(&payload, &header), Err(WebhookError::TooOld));
}

#[test]
fn one_right_v1_among_several_is_enough() {
    // While a secret is rolled, Stripe signs with the old and the new one.
    let payload = succeeded_event();
    let header = format!(
        "t={NOW},v1={},v1={},v0={}",
        v1("whsec_old", NOW, &payload),
        v1(SECRET, NOW, &payload),
        v1("whsec_v0", NOW, &payload),
    );
    assert!(check(&payload, &header).is_ok());
    let garbage_first = format!("t={NOW},v1=zz-not-hex,v1={}", v1(SECRET, NOW, &payload));
    assert!(check(&payload, &garbage_first).is_ok());
}

#[test]
fn a_v0_signature_alone_is_refused() {
    // v0 is Stripe's test scheme; its libraries accept only v1.
    let payload = succeeded_event();
    let header = format!("t={NOW},v0={}", v1(SECRET, NOW, &payload));
    assert_eq!(check(&payload, &header), Err(WebhookError::BadSignature));
}

#[test]
fn headers_that_are_not_stripe_signatures_are_bad_headers() {
    let payload = succeeded_event();
    let sig = v1(SECRET, NOW, &payload);
    for header in [
        String::new(),
        "garbage".into(),
        format!("v1={sig}"),
        format!("t=yesterday,v1={sig}"),
    ] {
        assert_eq!(
            check(&payload, &header),
            Err(WebhookError::BadHeader),
            "{header:?}"
        );
    }
}

fn signed(event: serde_json::Value) -> Result<ProviderEvent, WebhookError> {
    let payload = event.to_string().into_bytes();
    let header = format!("t={NOW},v1={}", v1(SECRET, NOW, &payload));
    check(&payload, &header)
}

fn event(kind: &str, object: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"id": "evt_1", "object": "event", "type": kind, "created": NOW, "data": {"object": object}})
}

#[test]
fn a_signed_body_that_is_not_an_event_is_a_bad_payload() {
    let payload = b"{\"hello\": 1}";
    let header = format!("t={NOW},v1={}", v1(SECRET, NOW, payload));
    assert!(matches!(
        check(payload, &header),
        Err(WebhookError::BadPayload(_))
    ));
    let missing_intent = event(
        "payment_intent.succeeded",
        serde_json::json!({"id": "pi_1"}),
    );
    assert!(matches!(
        signed(missing_intent),
        Err(WebhookError::BadPayload(_))
    ));
}

#[test]
fn event_types_map_onto_provider_events() {
    let intent = |status: &str| {
        serde_json::json!({"id": "pi_1", "object": "payment_intent", "amount": 500,
            "currency": "usd", "status": status, "metadata": {},
            "last_payment_error": {"type": "card_error", "code": "card_declined",
                "message": "Your card was declined."}})
    };
    let failed = signed(event(
        "payment_intent.payment_failed",
        intent("requires_payment_method"),
    ));
    let ProviderEventKind::PaymentFailed {
        intent: seen,
        message,
    } = failed.unwrap().kind
    else {
        panic!("not a failure");
    };
    assert_eq!(message.as_deref(), Some("Your card was declined."));
    assert_eq!(seen.status, IntentStatus::AwaitingBuyer);
    assert_eq!(seen.currency, "USD");
    assert_eq!(seen.order_id, None);
    assert!(matches!(
        signed(event("payment_intent.canceled", intent("canceled"))).unwrap().kind,
        ProviderEventKind::PaymentCanceled { intent } if intent.status == IntentStatus::Canceled
    ));
    for (kind, status, expected) in [
        ("refund.created", "succeeded", RefundStatus::Succeeded),
        ("refund.updated", "pending", RefundStatus::Pending),
        ("refund.failed", "failed", RefundStatus::Failed),
        ("charge.refund.updated", "canceled", RefundStatus::Failed),
    ] {
        let refund = serde_json::json!({"id": "re_1", "object": "refund", "amount": 200,
            "status": status, "payment_intent": "pi_1", "charge": "ch_1", "currency": "usd"});
        assert_eq!(
            signed(event(kind, refund)).unwrap().kind,
            ProviderEventKind::RefundUpdated {
                intent_id: "pi_1".into(),
                refund: Refund {
                    id: "re_1".into(),
                    amount: 200,
                    status: expected
                }
            },
            "{kind}"
        );
    }
    assert_eq!(
        signed(event("charge.succeeded", serde_json::json!({"id": "ch_1"})))
            .unwrap()
            .kind,
        ProviderEventKind::Ignored {
            event_type: "charge.succeeded".into()
        }
    );
}
