//! The stand-in's webhooks: each event POSTed to the configured endpoint as Stripe sends it
//! (the event JSON pretty-printed, `Content-Type: application/json; charset=utf-8`, and
//! `Stripe-Signature: t=<now>,v1=hex(HMAC-SHA256(secret, "<t>.<body>"))`, computed here with
//! `hmac` and `sha2` directly, not with the code under test).
//!
//! Options: a delay before each delivery, several copies of each at once (duplicates), holding
//! events back and releasing them in either order (reordering). Every attempt is logged with
//! the endpoint's status; [`Webhooks::retry_failed`] redelivers the events no attempt of which
//! got a 2xx, as Stripe retries them. [`Webhooks::settled`] waits until nothing is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::watch;

use super::unix_now;

/// One delivery attempt: the event, and the endpoint's status (`None`: no answer).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub status: Option<u16>,
}

impl Delivery {
    pub fn succeeded(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

pub struct Webhooks {
    http: reqwest::Client,
    settings: Mutex<Settings>,
    /// Every event emitted, in order, by id.
    events: Mutex<Vec<Value>>,
    held: Mutex<Vec<Value>>,
    log: Arc<Mutex<Vec<Delivery>>>,
    in_flight: watch::Sender<usize>,
}

#[derive(Default)]
struct Settings {
    /// The endpoint's URL and signing secret; no endpoint: events are only recorded.
    endpoint: Option<(String, String)>,
    delay: Duration,
    copies: usize,
    hold: bool,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                .build()
                .unwrap(),
            settings: Mutex::new(Settings {
                copies: 1,
                ..Settings::default()
            }),
            events: Mutex::default(),
            held: Mutex::default(),
            log: Arc::default(),
            in_flight: watch::Sender::new(0),
        }
    }
}

/// Stripe's scheme, from its documentation.
pub fn signature_header(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

impl Webhooks {
    /// Where events go from now on, signed with `secret`.
    pub fn endpoint(&self, url: &str, secret: &str) {
        self.settings.lock().unwrap().endpoint = Some((url.to_owned(), secret.to_owned()));
    }

    /// Each delivery waits `delay` first.
    pub fn delay(&self, delay: Duration) {
        self.settings.lock().unwrap().delay = delay;
    }

    /// Each event is delivered `copies` times at once (1: once).
    pub fn duplicate(&self, copies: usize) {
        self.settings.lock().unwrap().copies = copies.max(1);
    }

    /// Events are kept back until [`Self::release`].
    pub fn hold(&self) {
        self.settings.lock().unwrap().hold = true;
    }

    /// Sends the events kept back, in the order they were made or the reverse, and stops
    /// holding.
    pub fn release(&self, reversed: bool) {
        self.settings.lock().unwrap().hold = false;
        let mut held = std::mem::take(&mut *self.held.lock().unwrap());
        if reversed {
            held.reverse();
        }
        // One after the other, so the endpoint sees them in exactly this order.
        self.spawn_in_order(held);
    }

    /// Every event emitted so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Every delivery attempt so far, in the order they were answered.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until no delivery is in flight.
    pub async fn settled(&self) {
        let mut watching = self.in_flight.subscribe();
        watching.wait_for(|count| *count == 0).await.unwrap();
    }

    /// Redelivers (once each, in order) the events that were delivered and never got a 2xx,
    /// as Stripe's retries do; returns their ids.
    pub fn retry_failed(&self) -> Vec<String> {
        let log = self.deliveries();
        let mut succeeded: HashMap<&str, bool> = HashMap::new();
        for delivery in &log {
            *succeeded.entry(&delivery.event_id).or_default() |= delivery.succeeded();
        }
        let failed: Vec<Value> = self
            .events()
            .into_iter()
            .filter(|event| succeeded.get(event["id"].as_str().unwrap()) == Some(&false))
            .collect();
        let ids = failed
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        self.spawn_in_order(failed);
        ids
    }

    /// A new event from the API or a test control.
    pub(super) fn emit(&self, event: Value) {
        self.events.lock().unwrap().push(event.clone());
        let hold = self.settings.lock().unwrap().hold;
        if hold {
            self.held.lock().unwrap().push(event);
        } else {
            self.spawn_in_order(vec![event]);
        }
    }

    /// Delivers `events` one after the other (each in as many copies at once as set), after
    /// the delay, in a task of its own.
    fn spawn_in_order(&self, events: Vec<Value>) {
        let (endpoint, delay, copies) = {
            let settings = self.settings.lock().unwrap();
            (settings.endpoint.clone(), settings.delay, settings.copies)
        };
        let Some((url, secret)) = endpoint else {
            return;
        };
        if events.is_empty() {
            return;
        }
        self.in_flight.send_modify(|count| *count += 1);
        let http = self.http.clone();
        let log = self.log.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            for event in events {
                let sends = (0..copies).map(|_| deliver(&http, &url, &secret, &event));
                let statuses = futures_util::future::join_all(sends).await;
                let mut log = log.lock().unwrap();
                for status in statuses {
                    log.push(Delivery {
                        event_id: event["id"].as_str().unwrap().to_owned(),
                        event_type: event["type"].as_str().unwrap().to_owned(),
                        status,
                    });
                }
            }
            in_flight.send_modify(|count| *count -= 1);
        });
    }
}

async fn deliver(http: &reqwest::Client, url: &str, secret: &str, event: &Value) -> Option<u16> {
    let payload = serde_json::to_vec_pretty(event).unwrap();
    let signature = signature_header(&payload, secret, unix_now());
    let response = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(payload)
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}
