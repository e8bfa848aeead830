//! The Stripe REST client: form-encoded requests with `Authorization: Bearer sk_…`, JSON
//! answers, Stripe's error object mapped onto [`PaymentError`].
//!
//! Retries follow Stripe's guidance (and its own libraries): a request that could not be
//! answered (connection error, timeout, 409 lock conflict, 429, 5xx) is sent again after an
//! exponential backoff with jitter, honouring `Stripe-Should-Retry` and `Retry-After`. Every
//! POST carries an `Idempotency-Key`, the same on every attempt, so a create whose answer was
//! lost returns the intent or refund it made instead of making a second one; a GET needs none.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::wire::{ErrorBody, PaymentIntentObject, RefundObject};
use super::{API_VERSION, REFUND_REASONS};
use crate::payments::{
    Intent, NewIntent, NewRefund, PaymentError, PaymentProvider, ProviderKind, Refund,
};

/// Stripe's limit on a metadata value.
const METADATA_VALUE_MAX_CHARS: usize = 500;

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: String,
    retries: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("secret_key", &"(hidden)")
            .field("retries", &self.retries)
            .finish()
    }
}

/// How one attempt ended when it did not give an answer.
enum Failure {
    /// Worth another attempt with the same idempotency key (after `retry_after` if given).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Final: Stripe refused, or said not to retry.
    Final(PaymentError),
}

impl StripeClient {
    /// A client for the API at `api_base` (`https://api.stripe.com`, or a stand-in), with a
    /// 5 s connect timeout, 30 s for a whole request, and 3 retries starting at 0.5 s.
    pub fn new(api_base: &str, secret_key: &str) -> Self {
        Self {
            http: http_client(Duration::from_secs(5), Duration::from_secs(30)),
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            retries: 3,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Other timeouts (tests use short ones to see a slow Stripe time out).
    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.http = http_client(connect, total);
        self
    }

    /// How many times a failed attempt is retried, and the first pause (doubling after).
    pub fn with_retries(mut self, retries: u32, first_backoff: Duration) -> Self {
        self.retries = retries;
        self.first_backoff = first_backoff;
        self.max_backoff = self.max_backoff.max(first_backoff);
        self
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> Result<T, PaymentError> {
        // A POST without a key could do its work twice when retried.
        debug_assert!(method == Method::GET || idempotency_key.is_some());
        let mut attempt = 0;
        loop {
            match self.attempt(&method, path, form, idempotency_key).await {
                Ok(value) => return Ok(value),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient { reason, .. }) if attempt >= self.retries => {
                    return Err(PaymentError::Unavailable(reason));
                }
                Err(Failure::Transient {
                    reason,
                    retry_after,
                }) => {
                    let pause = self.backoff(attempt, retry_after);
                    tracing::warn!(%method, path, attempt, ?pause, %reason, "Stripe request failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: Option<&str>,
    ) -> Result<T, Failure> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api_base))
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", API_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if *method != Method::GET {
            request = request.form(form);
        }
        let transient = |reason: String| Failure::Transient {
            reason,
            retry_after: None,
        };
        let response = request
            .send()
            .await
            .map_err(|error| transient(describe(error)))?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|value| value.to_str().ok())
            .map(|value| value == "true");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|error| transient(describe(error)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|error| {
                transient(format!(
                    "Stripe answered {status} with an unreadable body: {error}"
                ))
            });
        }
        let error = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| b.error);
        let reason = match &error {
            Some(error) => format!(
                "Stripe answered {status}: {}: {}",
                error.code.as_deref().unwrap_or(&error.kind),
                error.message.as_deref().unwrap_or("")
            ),
            None => format!("Stripe answered {status}"),
        };
        let transient_status = status == StatusCode::CONFLICT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        match (should_retry, transient_status) {
            (Some(true), _) | (None, true) => Err(Failure::Transient {
                reason,
                retry_after,
            }),
            // Stripe says another attempt will get the same answer (its idempotency layer
            // replays a 500): unavailable, but not worth retrying now.
            (Some(false), true) => Err(Failure::Final(PaymentError::Unavailable(reason))),
            (_, false) => Err(Failure::Final(match error {
                Some(error) => PaymentError::Refused {
                    code: error.code.unwrap_or(error.kind),
                    message: error.message.unwrap_or_default(),
                },
                None => PaymentError::Refused {
                    code: format!("http_{}", status.as_u16()),
                    message: "Stripe refused the request without an error object".into(),
                },
            })),
        }
    }

    /// Stripe's libraries: 0.5 s doubling up to a ceiling, jittered between half and all of
    /// it, never below the first pause; `Retry-After` wins when it is within the ceiling.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after.filter(|wait| *wait <= self.max_backoff) {
            return wait;
        }
        let doubled = self
            .first_backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff);
        doubled
            .mul_f64(0.5 * (1.0 + rand::rng().random::<f64>()))
            .max(self.first_backoff)
    }
}

fn http_client(connect: Duration, total: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .user_agent(concat!("evently/", env!("CARGO_PKG_VERSION")))
        .build()
        // Fails only when the TLS backend cannot start, which with the bundled rustls and
        // its built-in roots does not depend on the machine.
        .expect("building the Stripe HTTP client")
}

/// What went wrong on the way, without the URL's query or any header (the key stays out).
fn describe(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    format!("Stripe request {what}: {}", error.without_url())
}

/// Truncated to Stripe's limit on metadata values, on a character boundary.
fn metadata_value(value: &str) -> String {
    value.chars().take(METADATA_VALUE_MAX_CHARS).collect()
}

#[async_trait]
impl PaymentProvider for StripeClient {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Stripe
    }

    async fn create_intent(&self, new: NewIntent<'_>) -> Result<Intent, PaymentError> {
        let mut form = vec![
            ("amount", new.amount.to_string()),
            ("currency", new.currency.to_ascii_lowercase()),
            ("automatic_payment_methods[enabled]", "true".to_owned()),
            ("metadata[order_id]", new.order_id.to_string()),
        ];
        if let Some(description) = new.description {
            form.push(("description", description.to_owned()));
        }
        let intent: PaymentIntentObject = self
            .call(
                Method::POST,
                "/v1/payment_intents",
                &form,
                Some(new.idempotency_key),
            )
            .await?;
        Ok(intent.into_intent())
    }

    async fn retrieve_intent(&self, intent_id: &str) -> Result<Intent, PaymentError> {
        let path = format!("/v1/payment_intents/{}", path_segment(intent_id)?);
        let intent: PaymentIntentObject = self.call(Method::GET, &path, &[], None).await?;
        Ok(intent.into_intent())
    }

    async fn cancel_intent(&self, intent_id: &str) -> Result<Intent, PaymentError> {
        let path = format!("/v1/payment_intents/{}/cancel", path_segment(intent_id)?);
        // One key for this call's attempts: a cancel whose answer was lost is answered from
        // Stripe's idempotency layer instead of failing as "already canceled".
        let key = format!("cancel-{intent_id}-{}", uuid::Uuid::new_v4());
        let intent: PaymentIntentObject = self.call(Method::POST, &path, &[], Some(&key)).await?;
        Ok(intent.into_intent())
    }

    async fn refund(&self, new: NewRefund<'_>) -> Result<Refund, PaymentError> {
        let mut form = vec![
            ("payment_intent", new.intent_id.to_owned()),
            ("amount", new.amount.to_string()),
        ];
        if let Some(reason) = new.reason {
            if REFUND_REASONS.contains(&reason) {
                form.push(("reason", reason.to_owned()));
            }
            form.push(("metadata[reason]", metadata_value(reason)));
        }
        let refund: RefundObject = self
            .call(
                Method::POST,
                "/v1/refunds",
                &form,
                Some(new.idempotency_key),
            )
            .await?;
        Ok(refund.into_refund())
    }
}

/// An id as one path segment: Stripe's ids are `[A-Za-z0-9_]`; anything else would change
/// the path, so it is refused before a request is made.
fn path_segment(id: &str) -> Result<&str, PaymentError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(PaymentError::Refused {
            code: "resource_missing".into(),
            message: "not a Stripe id".into(),
        })
    }
}
