//! A Stripe stand-in: an HTTP server on 127.0.0.1:0 in the test process speaking the few
//! endpoints Evently uses with Stripe's JSON shapes, error format and status codes, so the real
//! `StripeClient` can be pointed at it (`STRIPE_API_BASE`). Tests cannot reach Stripe.
//!
//! Endpoints: `POST /v1/payment_intents`, `GET /v1/payment_intents/{id}`,
//! `POST /v1/payment_intents/{id}/cancel`, `POST /v1/refunds`, `GET /v1/refunds/{id}`. As
//! Stripe: `Authorization: Bearer <secret key>` or 401; unknown or missing parameters 400
//! (`parameter_unknown`, `parameter_missing`); an unknown id 404 `resource_missing`; an
//! `Idempotency-Key` replays the first answer for the same parameters (with
//! `Idempotent-Replayed: true`) and answers 400 `idempotency_error` for other parameters.
//!
//! Test controls stand for what happens outside the API: [`StripeStandIn::succeed`] (the buyer
//! paid with Stripe.js), [`StripeStandIn::fail`] (the card was declined), faults
//! ([`StripeStandIn::fail_next`] answers the next requests with 500 or 429 before they reach
//! the API, so nothing is done or remembered, as when Stripe's edge fails;
//! [`StripeStandIn::slow_responses`] does the work, then waits before answering, as a
//! response lost to a timeout). Every object change emits an event, delivered as a webhook
//! (see [`webhooks`]).

mod api;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evently::payments::stripe::StripeClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use api::{Ledger, api, event, new_id};
pub use api::{Request, unix_now};
pub use webhooks::Webhooks;

/// The secret key the stand-in accepts.
pub const STANDIN_SECRET_KEY: &str = "sk_test_51StandInStandInStandIn0000";

pub struct StripeStandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    state: Mutex<Ledger>,
    webhooks: Webhooks,
}

impl StripeStandIn {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            webhooks: Webhooks::default(),
        });
        let app = axum::Router::new().fallback(api).with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, shared, stop }
    }

    /// What `STRIPE_API_BASE` is set to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The real client, pointed here, with short pauses between retries.
    pub fn client(&self) -> StripeClient {
        StripeClient::new(&self.url(), STANDIN_SECRET_KEY)
            .with_retries(3, Duration::from_millis(20))
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.shared.webhooks
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.shared.state.lock().unwrap()
    }

    /// The buyer confirmed with Stripe.js and the card was charged: the intent succeeds, a
    /// charge is made, and `payment_intent.succeeded` is sent. Returns that event's id.
    pub fn succeed(&self, intent_id: &str) -> String {
        let succeeded = {
            let mut ledger = self.ledger();
            let intent = ledger
                .intents
                .get_mut(intent_id)
                .expect("an intent of the stand-in");
            let status = intent["status"].as_str().unwrap();
            assert!(
                status.starts_with("requires_") || status == "processing",
                "cannot succeed a {status} intent"
            );
            let charge = json!({
                "id": new_id("ch"),
                "object": "charge",
                "amount": intent["amount"],
                "amount_captured": intent["amount"],
                "amount_refunded": 0,
                "currency": intent["currency"],
                "paid": true,
                "payment_intent": intent_id,
                "refunded": false,
                "status": "succeeded",
            });
            intent["status"] = json!("succeeded");
            intent["amount_received"] = intent["amount"].clone();
            intent["latest_charge"] = charge["id"].clone();
            intent["last_payment_error"] = Value::Null;
            let succeeded = event("payment_intent.succeeded", intent);
            ledger
                .charges
                .insert(charge["id"].as_str().unwrap().to_owned(), charge);
            succeeded
        };
        let id = succeeded["id"].as_str().unwrap().to_owned();
        self.shared.webhooks.emit(succeeded);
        id
    }

    /// The card was declined: the intent waits for another payment method, and
    /// `payment_intent.payment_failed` is sent with `message`. Returns that event's id.
    pub fn fail(&self, intent_id: &str, message: &str) -> String {
        let failed = {
            let mut ledger = self.ledger();
            let intent = ledger
                .intents
                .get_mut(intent_id)
                .expect("an intent of the stand-in");
            intent["status"] = json!("requires_payment_method");
            intent["last_payment_error"] = json!({
                "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                "message": message,
            });
            event("payment_intent.payment_failed", intent)
        };
        let id = failed["id"].as_str().unwrap().to_owned();
        self.shared.webhooks.emit(failed);
        id
    }

    /// New refunds start `pending` (as bank refunds do) until [`Self::settle_refund`].
    pub fn refunds_pending(&self, pending: bool) {
        self.ledger().refunds_pending = pending;
    }

    /// A pending refund went through (`refund.updated`, succeeded) or not (`refund.failed`,
    /// and the money counts as not refunded). Returns the event's id.
    pub fn settle_refund(&self, refund_id: &str, succeeded: bool) -> String {
        let settled = {
            let mut ledger = self.ledger();
            let refund = ledger
                .refunds
                .get_mut(refund_id)
                .expect("a refund of the stand-in");
            refund["status"] = json!(if succeeded { "succeeded" } else { "failed" });
            let refund = refund.clone();
            if !succeeded {
                let charge = ledger
                    .charges
                    .get_mut(refund["charge"].as_str().unwrap())
                    .unwrap();
                let refunded = charge["amount_refunded"].as_i64().unwrap()
                    - refund["amount"].as_i64().unwrap();
                charge["amount_refunded"] = json!(refunded);
                charge["refunded"] = json!(false);
            }
            event(
                if succeeded {
                    "refund.updated"
                } else {
                    "refund.failed"
                },
                &refund,
            )
        };
        let id = settled["id"].as_str().unwrap().to_owned();
        self.shared.webhooks.emit(settled);
        id
    }

    /// The next `count` requests are answered `status` (500, 429, ...) before reaching the
    /// API: nothing is done, nothing is remembered under their idempotency keys.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.ledger()
            .fail_next
            .extend(std::iter::repeat_n(status, count));
    }

    /// Every answer waits `delay` after its work is done (zero: none).
    pub fn slow_responses(&self, delay: Duration) {
        self.ledger().slow = delay;
    }

    pub fn intent(&self, id: &str) -> Option<Value> {
        self.ledger().intents.get(id).cloned()
    }

    pub fn intents(&self) -> Vec<Value> {
        self.ledger().intents.values().cloned().collect()
    }

    /// The charge of a paid intent (`amount_refunded` says what went back).
    pub fn charge_of(&self, intent_id: &str) -> Option<Value> {
        let ledger = self.ledger();
        let charge = ledger.intents.get(intent_id)?["latest_charge"]
            .as_str()?
            .to_owned();
        ledger.charges.get(&charge).cloned()
    }

    pub fn refunds(&self) -> Vec<Value> {
        self.ledger().refunds.values().cloned().collect()
    }

    /// Every API request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.ledger().requests.clone()
    }
}

impl Drop for StripeStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
