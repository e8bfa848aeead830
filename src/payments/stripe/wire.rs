//! Stripe's JSON objects, as far as Evently reads them, and how they map onto the provider
//! types of `payments`.

use std::collections::HashMap;

use serde::Deserialize;
use uuid::Uuid;

use crate::payments::{Intent, IntentStatus, Refund, RefundStatus};

/// A `payment_intent` object.
#[derive(Debug, Deserialize)]
pub(super) struct PaymentIntentObject {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<LastPaymentError>,
}

#[derive(Debug, Deserialize)]
pub(super) struct LastPaymentError {
    #[serde(default)]
    pub message: Option<String>,
}

impl PaymentIntentObject {
    pub fn into_intent(self) -> Intent {
        Intent {
            status: intent_status(&self.status),
            order_id: self
                .metadata
                .get("order_id")
                .and_then(|id| Uuid::parse_str(id).ok()),
            id: self.id,
            client_secret: self.client_secret,
            amount: self.amount,
            currency: self.currency.to_ascii_uppercase(),
        }
    }
}

/// Stripe's PaymentIntent statuses. `requires_capture` (authorized, not captured) and any
/// status Stripe may add later read as `Processing`: neither paid nor over, so reconciliation
/// keeps asking and nothing is sold or released on a guess.
pub(super) fn intent_status(status: &str) -> IntentStatus {
    match status {
        "requires_payment_method" | "requires_confirmation" | "requires_action" => {
            IntentStatus::AwaitingBuyer
        }
        "succeeded" => IntentStatus::Succeeded,
        "canceled" => IntentStatus::Canceled,
        _ => IntentStatus::Processing,
    }
}

/// A `refund` object.
#[derive(Debug, Deserialize)]
pub(super) struct RefundObject {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

impl RefundObject {
    pub fn into_refund(self) -> Refund {
        Refund {
            status: refund_status(self.status.as_deref()),
            id: self.id,
            amount: self.amount,
        }
    }
}

/// `pending` and `requires_action` are on their way; `failed` and `canceled` will not pay
/// the money back.
fn refund_status(status: Option<&str>) -> RefundStatus {
    match status {
        Some("succeeded") => RefundStatus::Succeeded,
        Some("failed" | "canceled") => RefundStatus::Failed,
        _ => RefundStatus::Pending,
    }
}

/// Stripe's error body: `{"error": {"type", "code", "message", ...}}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// An `event` object, with `data.object` left as JSON until its type says what it is.
#[derive(Debug, Deserialize)]
pub(super) struct EventObject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub(super) struct EventData {
    pub object: serde_json::Value,
}
