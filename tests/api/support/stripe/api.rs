//! The stand-in's API: the ledger of objects Stripe keeps, each endpoint with Stripe's
//! validation and error answers, and the request handler that puts faults, the key check and
//! idempotency in front of them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use super::{STANDIN_SECRET_KEY, Shared};

/// Everything Stripe would keep: objects by id, idempotent answers by key, and the faults armed.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) intents: HashMap<String, Value>,
    pub(super) refunds: HashMap<String, Value>,
    pub(super) charges: HashMap<String, Value>,
    pub(super) idempotent: HashMap<String, Saved>,
    pub(super) fail_next: VecDeque<u16>,
    pub(super) slow: Duration,
    pub(super) refunds_pending: bool,
    pub(super) requests: Vec<Request>,
}

/// The first answer to an idempotency key, and what it was asked.
pub(super) struct Saved {
    request: String,
    status: StatusCode,
    body: Value,
}

/// One API request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
}

/// An answer, and the events it emits (delivered once the ledger is unlocked).
struct Answer {
    status: StatusCode,
    body: Value,
    events: Vec<Value>,
}

impl Answer {
    fn ok(body: Value, events: Vec<Value>) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            events,
        }
    }
}

/// Stripe's error body.
fn error(status: StatusCode, code: Option<&str>, message: &str, param: Option<&str>) -> Answer {
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{code}"));
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    Answer {
        status,
        body: json!({ "error": error }),
        events: Vec::new(),
    }
}

fn missing(param: &str) -> Answer {
    let message = format!("Missing required param: {param}.");
    error(
        StatusCode::BAD_REQUEST,
        Some("parameter_missing"),
        &message,
        Some(param),
    )
}

fn no_such(object: &str, id: &str, param: &str) -> Answer {
    let message = format!("No such {object}: '{id}'");
    error(
        StatusCode::NOT_FOUND,
        Some("resource_missing"),
        &message,
        Some(param),
    )
}

pub fn new_id(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}_{tail}")
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An `event` object for `object`, as Stripe sends it.
pub(super) fn event(kind: &str, object: &Value) -> Value {
    json!({
        "id": new_id("evt"),
        "object": "event",
        "api_version": evently::payments::stripe::API_VERSION,
        "created": unix_now(),
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    })
}

/// Form parameters (`metadata[order_id]` stays one key, as Stripe's form encoding writes it).
type Params = BTreeMap<String, String>;

fn metadata(params: &Params) -> Value {
    let entries = params.iter().filter_map(|(key, value)| {
        let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
        Some((name.to_owned(), json!(value)))
    });
    Value::Object(entries.collect())
}

fn unknown_param(params: &Params, allowed: &[&str]) -> Option<Answer> {
    let unknown = params
        .keys()
        .find(|key| !key.starts_with("metadata[") && !allowed.contains(&key.as_str()))?;
    let message = format!("Received unknown parameter: {unknown}");
    Some(error(
        StatusCode::BAD_REQUEST,
        Some("parameter_unknown"),
        &message,
        Some(unknown),
    ))
}

impl Ledger {
    fn create_intent(&mut self, params: &Params) -> Answer {
        let allowed = [
            "amount",
            "currency",
            "automatic_payment_methods[enabled]",
            "description",
        ];
        if let Some(refused) = unknown_param(params, &allowed) {
            return refused;
        }
        let Some(amount) = params.get("amount") else {
            return missing("amount");
        };
        let Ok(amount) = amount.parse::<i64>() else {
            let message = format!("Invalid integer: {amount}");
            return error(
                StatusCode::BAD_REQUEST,
                Some("parameter_invalid_integer"),
                &message,
                Some("amount"),
            );
        };
        let Some(currency) = params.get("currency") else {
            return missing("currency");
        };
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            let message = format!("Invalid currency: {currency}.");
            return error(StatusCode::BAD_REQUEST, None, &message, Some("currency"));
        }
        if amount < 50 {
            let message = "Amount must be at least 50 cents";
            return error(
                StatusCode::BAD_REQUEST,
                Some("amount_too_small"),
                message,
                Some("amount"),
            );
        }
        let id = new_id("pi");
        let automatic = params
            .get("automatic_payment_methods[enabled]")
            .map(|v| v == "true");
        let intent = json!({
            "id": id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": automatic.map(|enabled| json!({"enabled": enabled})),
            "canceled_at": null,
            "cancellation_reason": null,
            "capture_method": "automatic",
            "client_secret": format!("{id}_secret_{}", new_id("x").split_off(2)),
            "confirmation_method": "automatic",
            "created": unix_now(),
            "currency": currency,
            "description": params.get("description"),
            "last_payment_error": null,
            "latest_charge": null,
            "livemode": false,
            "metadata": metadata(params),
            "payment_method": null,
            "status": "requires_payment_method",
        });
        self.intents.insert(id, intent.clone());
        let created = event("payment_intent.created", &intent);
        Answer::ok(intent, vec![created])
    }

    fn cancel_intent(&mut self, id: &str, params: &Params) -> Answer {
        if let Some(refused) = unknown_param(params, &["cancellation_reason"]) {
            return refused;
        }
        let Some(intent) = self.intents.get_mut(id) else {
            return no_such("payment_intent", id, "intent");
        };
        let status = intent["status"].as_str().unwrap_or_default().to_owned();
        if status == "succeeded" || status == "canceled" {
            let message = format!(
                "You cannot cancel this PaymentIntent because it has a status of {status}. Only a \
                 PaymentIntent with one of the following statuses may be canceled: \
                 requires_payment_method, requires_capture, requires_confirmation, \
                 requires_action, processing."
            );
            return error(
                StatusCode::BAD_REQUEST,
                Some("payment_intent_unexpected_state"),
                &message,
                None,
            );
        }
        intent["status"] = json!("canceled");
        intent["canceled_at"] = json!(unix_now());
        intent["cancellation_reason"] = json!(params.get("cancellation_reason"));
        let canceled = event("payment_intent.canceled", intent);
        Answer::ok(intent.clone(), vec![canceled])
    }

    fn create_refund(&mut self, params: &Params) -> Answer {
        if let Some(refused) = unknown_param(params, &["payment_intent", "amount", "reason"]) {
            return refused;
        }
        let Some(intent_id) = params.get("payment_intent") else {
            return missing("payment_intent");
        };
        let Some(intent) = self.intents.get(intent_id) else {
            return no_such("payment_intent", intent_id, "payment_intent");
        };
        let Some(charge_id) = intent["latest_charge"].as_str().map(str::to_owned) else {
            let message = format!(
                "This PaymentIntent ({intent_id}) does not have a successful charge to refund."
            );
            return error(
                StatusCode::BAD_REQUEST,
                Some("charge_not_refundable"),
                &message,
                Some("payment_intent"),
            );
        };
        let charge = self
            .charges
            .get_mut(&charge_id)
            .expect("a charge of the ledger");
        let left = charge["amount"].as_i64().unwrap() - charge["amount_refunded"].as_i64().unwrap();
        let amount = match params.get("amount").map(|a| a.parse::<i64>()) {
            None => left,
            Some(Ok(amount)) if amount > 0 => amount,
            Some(_) => {
                let message = "Invalid positive integer";
                return error(
                    StatusCode::BAD_REQUEST,
                    Some("parameter_invalid_integer"),
                    message,
                    Some("amount"),
                );
            }
        };
        if let Some(reason) = params.get("reason")
            && !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason.as_str())
        {
            let message =
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer";
            return error(StatusCode::BAD_REQUEST, None, message, Some("reason"));
        }
        if left == 0 {
            let message = format!("Charge {charge_id} has already been refunded.");
            return error(
                StatusCode::BAD_REQUEST,
                Some("charge_already_refunded"),
                &message,
                None,
            );
        }
        if amount > left {
            let message = format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            );
            return error(
                StatusCode::BAD_REQUEST,
                Some("amount_too_large"),
                &message,
                Some("amount"),
            );
        }
        let refunded = charge["amount_refunded"].as_i64().unwrap() + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap());
        let refund = json!({
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": null,
            "charge": charge_id,
            "created": unix_now(),
            "currency": charge["currency"],
            "metadata": metadata(params),
            "payment_intent": intent_id,
            "reason": params.get("reason"),
            "status": if self.refunds_pending { "pending" } else { "succeeded" },
        });
        let events = vec![
            event("refund.created", &refund),
            event("charge.refunded", charge),
        ];
        self.refunds
            .insert(refund["id"].as_str().unwrap().to_owned(), refund.clone());
        Answer::ok(refund, events)
    }

    fn route(&mut self, method: &Method, path: &str, params: &Params) -> Answer {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "payment_intents"]) => self.create_intent(params),
            ("GET", ["v1", "payment_intents", id]) => match self.intents.get(*id) {
                Some(intent) => Answer::ok(intent.clone(), Vec::new()),
                None => no_such("payment_intent", id, "intent"),
            },
            ("POST", ["v1", "payment_intents", id, "cancel"]) => self.cancel_intent(id, params),
            ("POST", ["v1", "refunds"]) => self.create_refund(params),
            ("GET", ["v1", "refunds", id]) => match self.refunds.get(*id) {
                Some(refund) => Answer::ok(refund.clone(), Vec::new()),
                None => no_such("refund", id, "id"),
            },
            _ => {
                let message = format!("Unrecognized request URL ({method}: {path}).");
                error(StatusCode::NOT_FOUND, None, &message, None)
            }
        }
    }
}

/// Every request: faults first (they never reach the API), then the key, then idempotency,
/// then the endpoint.
pub(super) async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (answer, slow, replayed) = {
        let mut ledger = shared.state.lock().unwrap();
        ledger.requests.push(Request {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: key.clone(),
        });
        if let Some(status) = ledger.fail_next.pop_front() {
            let status = StatusCode::from_u16(status).unwrap();
            let answer = if status == StatusCode::TOO_MANY_REQUESTS {
                let message = "Too many requests hit the API too quickly.";
                error(status, Some("rate_limit"), message, None)
            } else {
                error(status, None, "Something went wrong on Stripe's end.", None)
            };
            return respond(answer.status, &answer.body, false);
        }
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
        if bearer != Some(&format!("Bearer {STANDIN_SECRET_KEY}")) {
            let message = "Invalid API Key provided: sk_test_****";
            let answer = error(StatusCode::UNAUTHORIZED, None, message, None);
            return respond(answer.status, &answer.body, false);
        }
        let params: Params = match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(_) => {
                let answer = error(StatusCode::BAD_REQUEST, None, "Invalid request body.", None);
                return respond(answer.status, &answer.body, false);
            }
        };
        let request = format!("{method} {path} {params:?}");
        let saved = key
            .as_ref()
            .filter(|_| method == Method::POST)
            .and_then(|key| ledger.idempotent.get(key));
        match saved {
            Some(saved) if saved.request == request => (
                Answer {
                    status: saved.status,
                    body: saved.body.clone(),
                    events: Vec::new(),
                },
                ledger.slow,
                true,
            ),
            Some(_) => {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they \
                     were first used with. Try using a key other than '{}' if you meant to \
                     execute a different request.",
                    key.as_deref().unwrap()
                );
                let mut answer = error(StatusCode::BAD_REQUEST, None, &message, None);
                answer.body["error"]["type"] = json!("idempotency_error");
                (answer, ledger.slow, false)
            }
            None => {
                let answer = ledger.route(&method, &path, &params);
                if let Some(key) = key.filter(|_| method == Method::POST) {
                    let saved = Saved {
                        request,
                        status: answer.status,
                        body: answer.body.clone(),
                    };
                    ledger.idempotent.insert(key, saved);
                }
                (answer, ledger.slow, false)
            }
        }
    };
    for event in answer.events {
        shared.webhooks.emit(event);
    }
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    respond(answer.status, &answer.body, replayed)
}

fn respond(status: StatusCode, body: &Value, replayed: bool) -> Response {
    let mut response = (status, axum::Json(body.clone())).into_response();
    let headers = response.headers_mut();
    headers.insert("request-id", new_id("req").parse().unwrap());
    if replayed {
        headers.insert("idempotent-replayed", "true".parse().unwrap());
    }
    response
}
