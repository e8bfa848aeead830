//! `POST /webhooks/stripe`: Stripe's events about payments. The `Stripe-Signature` header is
//! verified against the raw body (`payments::stripe::webhook::verify_and_parse`) before
//! anything is read; a bad or stale signature answers 400. A verified event is applied once
//! (`checkout::apply_provider_event`, which records its id in `provider_events`): 200 when it
//! was applied (or had been before), 500 when it could not be (Stripe then delivers it again),
//! 404 when this server does not take Stripe payments.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::app::AppState;
use crate::db::commerce::Provider;
use crate::payments::stripe::webhook::verify_and_parse;

pub fn router<S>(app: AppState) -> axum::Router<S> {
    axum::Router::new()
        .route("/webhooks/stripe", post(stripe_webhook))
        .with_state(app)
}

async fn stripe_webhook(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(stripe) = &app.config.stripe else {
        return (StatusCode::NOT_FOUND, "Stripe is not configured").into_response();
    };
    let Some(signature) = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
    else {
        return (StatusCode::BAD_REQUEST, "missing Stripe-Signature").into_response();
    };
    let event = match verify_and_parse(
        &body,
        signature,
        stripe.webhook_secret.expose(),
        stripe.webhook_tolerance,
        SystemTime::now(),
    ) {
        Ok(event) => event,
        Err(error) => {
            metrics::counter!("evently_payment_webhooks_total", "outcome" => "refused")
                .increment(1);
            return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
        }
    };
    match crate::checkout::apply_provider_event(&app, Provider::Stripe, &event).await {
        Ok(()) => {
            metrics::counter!("evently_payment_webhooks_total", "outcome" => "applied")
                .increment(1);
            (StatusCode::OK, "ok").into_response()
        }
        Err(error) => {
            metrics::counter!("evently_payment_webhooks_total", "outcome" => "failed").increment(1);
            tracing::warn!(event_id = %event.id, error = %error.message(), "a Stripe event could not be applied");
            // Only a request id goes out; Stripe retries a non-2xx answer.
            (StatusCode::INTERNAL_SERVER_ERROR, "not applied; retry").into_response()
        }
    }
}
