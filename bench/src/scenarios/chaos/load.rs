//! The load of a chaos scenario: buyers booking with idempotency keys they resend until
//! answered, two signed-in readers, and subscribers that reconnect whenever their socket ends.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::{RETRYABLE, SUBSCRIPTION};
use crate::client::{BOOK, Gql, Subscriber};
use crate::stats::Samples;

pub(super) struct Load {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) buyers: Vec<tokio::task::JoinHandle<BuyerLog>>,
    pub(super) readers: Vec<tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)>>,
    pub(super) watchers: Vec<tokio::task::JoinHandle<()>>,
    pub(super) latest: Arc<Vec<AtomicI64>>,
    pub(super) reconnects: Arc<AtomicU64>,
    pub(super) done: watch::Sender<bool>,
}

#[derive(Default)]
pub(super) struct BuyerLog {
    /// (key, booking id) heard confirmed.
    pub(super) heard: Vec<(String, String)>,
    pub(super) confirmed_at: Vec<Instant>,
    pub(super) latency: Samples,
    pub(super) attempts: u64,
    pub(super) retries: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) http_5xx: BTreeMap<u16, u64>,
    pub(super) unresolved: u64,
    pub(super) last_failure: Option<Instant>,
}

impl BuyerLog {
    pub(super) fn merge(&mut self, other: BuyerLog) {
        self.heard.extend(other.heard);
        self.confirmed_at.extend(other.confirmed_at);
        self.latency.merge(other.latency);
        self.attempts += other.attempts;
        self.retries += other.retries;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (status, n) in other.http_5xx {
            *self.http_5xx.entry(status).or_default() += n;
        }
        self.unresolved += other.unresolved;
        self.last_failure = self.last_failure.max(other.last_failure);
    }
}

pub(super) async fn start_load(
    gql: &Gql,
    event_id: &str,
    buyers: Vec<(String, String)>,
    subscribers: usize,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Arc<Vec<AtomicI64>> =
        Arc::new((0..subscribers).map(|_| AtomicI64::new(-1)).collect());
    let reconnects = Arc::new(AtomicU64::new(0));
    let (done, done_rx) = watch::channel(false);
    let mut watchers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / 4_000)?);
        let (endpoint, event_id) = (gql.ws_endpoint.clone(), event_id.to_owned());
        let (latest, reconnects, done) = (latest.clone(), reconnects.clone(), done_rx.clone());
        watchers.push(tokio::spawn(watch_seats(
            endpoint, source, event_id, i, latest, reconnects, done,
        )));
    }
    // Everyone watching before the first booking.
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest.iter().any(|v| v.load(Ordering::Relaxed) < 0) {
        anyhow::ensure!(Instant::now() < deadline, "subscribers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    // Two signed-in visitors reading their bookings meanwhile: reads must fail as coded as
    // bookings do.
    let readers = buyers
        .iter()
        .take(2)
        .map(|(_, token)| tokio::spawn(read(gql.clone(), token.clone(), stop.clone())))
        .collect();
    let buyers = buyers
        .into_iter()
        .map(|(_, token)| {
            let (gql, event_id, stop) = (gql.clone(), event_id.to_owned(), stop.clone());
            tokio::spawn(buy(gql, token, event_id, stop, start))
        })
        .collect();
    Ok(Load {
        stop,
        buyers,
        readers,
        watchers,
        latest,
        reconnects,
        done,
    })
}

/// One buyer: a fresh key per booking, retried until a definite answer.
async fn buy(
    gql: Gql,
    token: String,
    event_id: String,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> BuyerLog {
    let mut me = BuyerLog::default();
    'keys: while !stop.load(Ordering::Relaxed) {
        let key = Uuid::new_v4().to_string();
        let first_try = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            me.attempts += 1;
            let sent = Instant::now();
            let variables =
                json!({ "input": { "eventId": event_id, "quantity": 1, "idempotencyKey": key } });
            let answer = gql.call_raw(Some(&token), BOOK, variables).await;
            match answer {
                Ok((status, body)) => {
                    if status >= 500 {
                        *me.http_5xx.entry(status).or_default() += 1;
                    }
                    match body {
                        Some(body) => {
                            if let Some(id) = body["data"]["bookSeats"]["id"].as_str() {
                                me.latency.record(start, sent, Instant::now());
                                me.confirmed_at.push(Instant::now());
                                me.heard.push((key.clone(), id.to_owned()));
                                break;
                            }
                            let code = body["errors"][0]["extensions"]["code"]
                                .as_str()
                                .unwrap_or("NO_CODE")
                                .to_owned();
                            *me.errors.entry(code.clone()).or_default() += 1;
                            if code == "SOLD_OUT" {
                                break 'keys;
                            }
                            if !RETRYABLE.contains(&code.as_str()) {
                                // A definite refusal: nothing was booked.
                                me.last_failure = Some(Instant::now());
                                break;
                            }
                        }
                        None => *me.errors.entry(format!("HTTP {status}")).or_default() += 1,
                    }
                }
                Err(_) => *me.errors.entry("transport".into()).or_default() += 1,
            }
            me.last_failure = Some(Instant::now());
            if first_try.elapsed() > Duration::from_secs(60) {
                me.unresolved += 1;
                break;
            }
            me.retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
    me
}

/// A signed-in `myBookings` read, back to back with a pause, until `stop`: how many, and the
/// codes of those that failed.
async fn read(gql: Gql, token: String, stop: Arc<AtomicBool>) -> (u64, BTreeMap<String, u64>) {
    const MY_BOOKINGS: &str = "query { myBookings(first: 1) { totalCount } }";
    let (mut reads, mut errors) = (0, BTreeMap::<String, u64>::new());
    while !stop.load(Ordering::Relaxed) {
        reads += 1;
        let code = match gql.call_raw(Some(&token), MY_BOOKINGS, json!({})).await {
            Ok((_, Some(body))) if body["errors"].is_null() => None,
            Ok((_, Some(body))) => Some(
                body["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("NO_CODE")
                    .to_owned(),
            ),
            Ok((status, None)) => Some(format!("HTTP {status}")),
            Err(_) => Some("transport".to_owned()),
        };
        if let Some(code) = code {
            *errors.entry(code).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (reads, errors)
}

/// One subscriber: subscribes through nginx, records the newest version it got, and
/// reconnects whenever its socket ends, until `done`.
async fn watch_seats(
    endpoint: String,
    source: Ipv4Addr,
    event_id: String,
    i: usize,
    latest: Arc<Vec<AtomicI64>>,
    reconnects: Arc<AtomicU64>,
    mut done: watch::Receiver<bool>,
) {
    let mut first = true;
    while !*done.borrow() {
        if !first {
            reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let connect =
            Subscriber::connect(&endpoint, source, SUBSCRIPTION, json!({ "id": event_id }));
        let Ok(Ok(mut subscriber)) = tokio::time::timeout(Duration::from_secs(10), connect).await
        else {
            continue;
        };
        loop {
            tokio::select! {
                version = subscriber.next_version() => match version {
                    Ok(Some(version)) => {
                        latest[i].fetch_max(version, Ordering::Relaxed);
                    }
                    _ => break,
                },
                _ = done.changed() => {
                    subscriber.close().await;
                    return;
                }
            }
        }
    }
}
