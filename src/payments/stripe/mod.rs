//! Stripe as a [`PaymentProvider`](super::PaymentProvider): the REST client ([`StripeClient`],
//! PaymentIntents and Refunds) and the webhook verifier ([`webhook::verify_and_parse`]). Both
//! read Stripe's JSON through the same wire types (`wire`), so an intent looks the same whether
//! the API answered with it or a webhook carried it.
//!
//! Configured by `STRIPE_API_BASE`, `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET` and
//! `STRIPE_WEBHOOK_TOLERANCE_SECS` (see `config::StripeConfig`); the tests point
//! `STRIPE_API_BASE` at a stand-in speaking the same endpoints.

mod client;
pub mod webhook;
mod wire;

pub use client::StripeClient;
pub use webhook::{WebhookError, verify_and_parse};

/// The API version every request pins (`Stripe-Version`), so the shapes read here do not
/// change when the account's default version is upgraded.
pub const API_VERSION: &str = "2024-06-20";

/// Refund reasons Stripe accepts in `reason`; any other reason travels in `metadata[reason]`
/// only (Stripe refuses the request otherwise).
pub const REFUND_REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];
