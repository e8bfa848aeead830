//! Stripe's webhook signatures, checked as Stripe documents them ("Verify webhook signatures
//! manually"): the `Stripe-Signature` header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (a `v0`
//! scheme may be there too and is ignored); the signed payload is `<t>.<raw body>`; a `v1` is
//! hex(HMAC-SHA256(endpoint secret, signed payload)). The event is accepted when any `v1`
//! matches (several appear while a secret is being rolled), compared in constant time, and its
//! timestamp is within the tolerance of now (a replayed delivery is refused).
//!
//! Only then is the body read as an event and turned into a [`ProviderEvent`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::{EventObject, PaymentIntentObject, RefundObject};
use crate::payments::{ProviderEvent, ProviderEventKind};

/// Why a webhook delivery is refused; the route answers 400 to each (Stripe shows it in the
/// dashboard and retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `t=` timestamp, or one that is not a number: not a Stripe signature header.
    #[error("malformed Stripe-Signature header")]
    BadHeader,
    /// No `v1` signature matches (wrong secret, altered body, or only other schemes).
    #[error("no v1 signature matches the payload")]
    BadSignature,
    /// Signed, but its timestamp is further from now than the tolerance: a replay.
    #[error("signature timestamp outside the tolerance")]
    TooOld,
    /// Signed, but not a Stripe event this code can read.
    #[error("unreadable event: {0}")]
    BadPayload(String),
}

/// Verifies `payload` (the raw request body, byte for byte) against `signature_header` with
/// the endpoint's `secret` (`whsec_…`), then reads the event.
pub fn verify_and_parse(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    tolerance: Duration,
    now: SystemTime,
) -> Result<ProviderEvent, WebhookError> {
    verify(payload, signature_header, secret, tolerance, now)?;
    parse_event(payload)
}

fn verify(
    payload: &[u8],
    signature_header: &str,
    secret: &str,
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in signature_header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| WebhookError::BadHeader)?),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::BadHeader)?;
    // Stripe's libraries sign the timestamp as they parsed it, not as the header spelled it.
    let mut expected = signer(secret);
    expected.update(timestamp.to_string().as_bytes());
    expected.update(b".");
    expected.update(payload);
    let matches = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(WebhookError::BadSignature);
    }
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::from(since.as_secs()),
        Err(before) => -i128::from(before.duration().as_secs()),
    };
    if (now - i128::from(timestamp)).unsigned_abs() > u128::from(tolerance.as_secs()) {
        return Err(WebhookError::TooOld);
    }
    Ok(())
}

fn signer(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length")
}

/// A `Stripe-Signature` header for `payload` at `timestamp`, as Stripe sends it: what a
/// stand-in or a replay tool signs with.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = signer(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn parse_event(payload: &[u8]) -> Result<ProviderEvent, WebhookError> {
    let bad = |error: serde_json::Error| WebhookError::BadPayload(error.to_string());
    let event: EventObject = serde_json::from_slice(payload).map_err(bad)?;
    let object = event.data.object;
    let intent = || {
        serde_json::from_value::<PaymentIntentObject>(object.clone())
            .map_err(bad)
            .map(PaymentIntentObject::into_intent)
    };
    let kind = match event.kind.as_str() {
        "payment_intent.succeeded" => ProviderEventKind::PaymentSucceeded { intent: intent()? },
        "payment_intent.payment_failed" => {
            let failed: PaymentIntentObject =
                serde_json::from_value(object.clone()).map_err(bad)?;
            let message = failed
                .last_payment_error
                .as_ref()
                .and_then(|error| error.message.clone());
            ProviderEventKind::PaymentFailed {
                intent: failed.into_intent(),
                message,
            }
        }
        "payment_intent.canceled" => ProviderEventKind::PaymentCanceled { intent: intent()? },
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            let refund: RefundObject = serde_json::from_value(object.clone()).map_err(bad)?;
            let intent_id = refund.payment_intent.clone().ok_or_else(|| {
                WebhookError::BadPayload("refund without a payment_intent".into())
            })?;
            ProviderEventKind::RefundUpdated {
                intent_id,
                refund: refund.into_refund(),
            }
        }
        other => ProviderEventKind::Ignored {
            event_type: other.to_owned(),
        },
    };
    Ok(ProviderEvent {
        id: event.id,
        created: event.created,
        kind,
    })
}

#[cfg(test)]
mod tests;
