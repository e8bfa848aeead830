//! Payments through Stripe: the real `StripeClient` against the Stripe stand-in
//! (`support::stripe`), and the stand-in's signed webhooks through `verify_and_parse`.

mod stripe_client;
mod stripe_webhooks;
