//! Payment providers: what an order's payment goes through. The seam between orders (in
//! `domain`) and a provider's API: the domain never holds a transaction or a lock across a
//! call made through a [`PaymentProvider`]; it creates the intent, then records it, and the
//! provider's events ([`ProviderEvent`], from a verified webhook or from reconciliation) move
//! the order.
//!
//! Two implementations: `stripe` (Stripe's REST API, PaymentIntents and Refunds, webhooks
//! signed with `Stripe-Signature`: [`stripe::StripeClient`] and
//! [`stripe::verify_and_parse`]) and `manual` (bank transfer, invoice or pay at the door: the
//! organizer marks the order paid).

pub mod stripe;

pub mod manual;
pub mod providers;

use async_trait::async_trait;
use uuid::Uuid;

pub use providers::Providers;

/// Which provider an order's payment goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Stripe,
    Manual,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Stripe => "stripe",
            ProviderKind::Manual => "manual",
        }
    }
}

/// A payment to create for an order: integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone)]
pub struct NewIntent<'a> {
    pub order_id: Uuid,
    /// Minor units (cents); always > 0 (a free order needs no payment).
    pub amount: i64,
    /// ISO 4217, upper case ("EUR"); providers lower-case it where their API wants.
    pub currency: &'a str,
    /// Sent as the provider's idempotency key, so a retried create returns the same intent.
    pub idempotency_key: &'a str,
    pub description: Option<&'a str>,
}

/// The provider's view of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The provider's id (`pi_…` for Stripe; generated for manual payments).
    pub id: String,
    /// What the browser confirms the payment with (Stripe.js); `None` for manual payments.
    pub client_secret: Option<String>,
    pub status: IntentStatus,
    pub amount: i64,
    /// Upper case ISO 4217.
    pub currency: String,
    /// The order it was created for, from the intent's metadata.
    pub order_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentStatus {
    /// Waiting for the buyer (Stripe's requires_payment_method / requires_confirmation /
    /// requires_action; a manual payment waiting for the transfer).
    AwaitingBuyer,
    Processing,
    Succeeded,
    Canceled,
}

impl IntentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            IntentStatus::AwaitingBuyer => "awaiting_buyer",
            IntentStatus::Processing => "processing",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub intent_id: &'a str,
    /// Minor units, > 0 and at most what is left of the payment.
    pub amount: i64,
    pub idempotency_key: &'a str,
    pub reason: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The provider's id (`re_…` for Stripe).
    pub id: String,
    pub amount: i64,
    pub status: RefundStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// Why a provider call did not give an answer the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider could not be reached, timed out or answered 5xx/429: safe to retry with
    /// the same idempotency key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (Stripe's 4xx `error` object): retrying will not help.
    #[error("payment provider refused the request: {code}: {message}")]
    Refused { code: String, message: String },
    /// This provider does not do that (a manual payment has nothing to cancel remotely).
    #[error("not supported by this payment provider")]
    Unsupported,
}

/// A payment provider's API. Calls are made outside any database transaction.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    fn kind(&self) -> ProviderKind;
    async fn create_intent(&self, new: NewIntent<'_>) -> Result<Intent, PaymentError>;
    async fn retrieve_intent(&self, intent_id: &str) -> Result<Intent, PaymentError>;
    async fn cancel_intent(&self, intent_id: &str) -> Result<Intent, PaymentError>;
    async fn refund(&self, new: NewRefund<'_>) -> Result<Refund, PaymentError>;
}

/// One event from a provider (a verified Stripe webhook, or what reconciliation retrieved).
/// Applying the same `id` twice changes nothing the second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id (`evt_…`); reconciliation uses `reconcile:<intent id>:<status>`.
    pub id: String,
    /// When the provider created it (Unix seconds): orders events that arrive out of order.
    pub created: i64,
    pub kind: ProviderEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEventKind {
    PaymentSucceeded {
        intent: Intent,
    },
    PaymentFailed {
        intent: Intent,
        message: Option<String>,
    },
    PaymentCanceled {
        intent: Intent,
    },
    RefundUpdated {
        intent_id: String,
        refund: Refund,
    },
    /// An event type we do not act on (acknowledged with 2xx so the provider stops sending it).
    Ignored {
        event_type: String,
    },
}
