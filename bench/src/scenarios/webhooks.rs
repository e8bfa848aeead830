//! `webhooks`: N card orders (the `stripe` provider, its API answered by a stand-in in this
//! process, [`standin`]) are placed, then their `payment_intent.succeeded` webhooks are POSTed
//! to `/webhooks/stripe` by C senders at once, signed as Stripe signs them (HMAC-SHA256 of
//! `timestamp.payload` with the endpoint's secret, `Stripe-Signature: t=…,v1=…`). Reports the
//! webhooks applied per second (2xx answers), their latency and every other answer, then
//! checks in SQL that every order ended PAID exactly once: one recorded provider event and
//! one valid ticket each.
//!
//! The server must be started with `STRIPE_API_BASE` at `--stripe-addr` and the same
//! `STRIPE_WEBHOOK_SECRET`: `scripts/bench.sh webhooks` does both.

mod standin;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use super::check_alive;
use super::orders::{PLACE_ORDER, ticketed_event};
use crate::Common;
use crate::client::Gql;
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::CpuMeter;

#[derive(clap::Args)]
pub struct Options {
    /// Card orders placed, then paid by webhook.
    #[arg(long, default_value_t = 5_000)]
    orders: usize,
    /// Buyer accounts placing them (a buyer may hold 100 tickets at once); by default one
    /// per 50 orders.
    #[arg(long)]
    buyers: Option<usize>,
    /// Webhooks in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where the Stripe stand-in listens: the server's `STRIPE_API_BASE`.
    #[arg(long, env = "BENCH_STRIPE_ADDR", default_value = "127.0.0.1:8097")]
    stripe_addr: String,
    /// The server's `STRIPE_WEBHOOK_SECRET`, to sign with.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET")]
    webhook_secret: String,
}

/// `Stripe-Signature` for `payload` signed at `timestamp`, as Stripe documents it.
pub fn signature(secret: &str, timestamp: i64, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let intents = standin::start(&options.stripe_addr)
        .await
        .with_context(|| format!("starting the Stripe stand-in on {}", options.stripe_addr))?;
    let gql = Gql::new(&common.url)?;
    let organizer = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    let tickets = i64::try_from(options.orders)?;
    let (event_id, type_id) =
        ticketed_event(&gql, &organizer, "Webhooks", tickets, 2500, "STRIPE").await?;
    let buyer_count = options.buyers.unwrap_or(options.orders.div_ceil(50)).max(1);
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    println!("registering {buyer_count} buyers");
    let buyers = Arc::new(gql.register_buyers(&run_id, buyer_count).await?);

    println!("placing {} card orders", options.orders);
    let next = Arc::new(AtomicUsize::new(0));
    let mut placers = Vec::new();
    for _ in 0..options.concurrency.min(64) {
        let (gql, next, buyers) = (gql.clone(), next.clone(), buyers.clone());
        let (event_id, type_id, total) = (event_id.clone(), type_id.clone(), options.orders);
        placers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(ids);
                }
                let token = &buyers[i % buyers.len()].1;
                let variables = json!({ "input": {
                    "eventId": event_id,
                    "lines": [{ "ticketTypeId": type_id, "quantity": 1 }],
                    "idempotencyKey": format!("webhooks-{i}"),
                } });
                let data = gql.expect(Some(token), PLACE_ORDER, variables).await?;
                let order = &data["placeOrder"];
                anyhow::ensure!(
                    order["payment"]["clientSecret"].is_string(),
                    "an order without its intent: {order}"
                );
                ids.push(order["id"].as_str().context("no order id")?.to_owned());
            }
        }));
    }
    let mut order_ids = Vec::with_capacity(options.orders);
    for placer in placers {
        order_ids.extend(placer.await??);
    }

    // Signed before the clock starts: the load tool's HMACs are not the server's work.
    let now = chrono::Utc::now().timestamp();
    let mut deliveries = Vec::with_capacity(order_ids.len());
    for order_id in &order_ids {
        let intent = intents
            .get(order_id)
            .with_context(|| format!("no intent was created for order {order_id}"))?;
        let payload = json!({
            "id": format!("evt_{}", Uuid::new_v4().simple()),
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": now,
            "livemode": false,
            "data": { "object": intent.object("succeeded") },
        })
        .to_string();
        let signed = signature(&options.webhook_secret, now, &payload);
        deliveries.push((payload, signed));
    }
    let deliveries = Arc::new(deliveries);
    let url = format!("{}/webhooks/stripe", common.url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()?;

    println!(
        "sending {} webhooks, {} at once",
        deliveries.len(),
        options.concurrency
    );
    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..options.concurrency {
        let (http, url, next, deliveries) =
            (http.clone(), url.clone(), next.clone(), deliveries.clone());
        senders.push(tokio::spawn(async move {
            let mut applied = Samples::default();
            let mut errors = BTreeMap::<String, u64>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((payload, signed)) = deliveries.get(i) else {
                    return (applied, errors);
                };
                let started = Instant::now();
                let answer = http
                    .post(&url)
                    .header("Stripe-Signature", signed)
                    .header("Content-Type", "application/json")
                    .body(payload.clone())
                    .send()
                    .await;
                let finished = Instant::now();
                match answer {
                    Ok(response) if response.status().is_success() => {
                        applied.record(start, started, finished);
                    }
                    Ok(response) => {
                        *errors
                            .entry(format!("HTTP {}", response.status().as_u16()))
                            .or_default() += 1;
                    }
                    Err(error) => *errors.entry(format!("transport: {error}")).or_default() += 1,
                }
            }
        }));
    }
    let mut applied = Samples::default();
    let mut errors = BTreeMap::<String, u64>::new();
    for sender in senders {
        let (samples, failed) = sender.await?;
        applied.merge(samples);
        for (what, n) in failed {
            *errors.entry(what).or_default() += n;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cores = cpu.map(|c| c.cores()).transpose()?;
    let check = verify(common, &event_id, order_ids.len()).await?;

    let applied_per_sec = applied.count() as f64 / elapsed.max(f64::EPSILON);
    let latency = applied.summary();
    let rows: Vec<(String, String)> = vec![
        ("card orders".into(), order_ids.len().to_string()),
        (
            "senders (concurrent)".into(),
            options.concurrency.to_string(),
        ),
        ("webhooks applied (2xx)".into(), applied.count().to_string()),
        (
            "**webhooks applied/s**".into(),
            format!("**{applied_per_sec:.0}**"),
        ),
        (
            "webhook latency p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                latency.p50_ms, latency.p99_ms, latency.max_ms
            ),
        ),
        ("**errors**".into(), format!("**{errors:?}**")),
        (
            "server CPU (cores busy)".into(),
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
        (
            "**every order PAID exactly once**".into(),
            format!("**{}**", check.paid_once),
        ),
    ];
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Report {
        scenario: "webhooks",
        common,
        results: json!({
            "options": {
                "orders": options.orders, "buyers": buyer_count,
                "concurrency": options.concurrency,
            },
            "applied": applied.count(),
            "applied_per_sec": applied_per_sec,
            "latency": latency,
            "errors": errors,
            "server_cores": server_cores,
            "check": check,
        }),
        markdown: table(&rows),
        series: vec![("webhook", &applied)],
    }
    .write()?;
    anyhow::ensure!(
        check.paid_once && errors.is_empty(),
        "the webhooks check failed"
    );
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Check {
    orders: i64,
    paid: i64,
    payment_events: i64,
    orders_with_a_payment_event: i64,
    valid_tickets: i64,
    paid_once: bool,
}

async fn verify(common: &Common, event_id: &str, placed: usize) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(&common.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the database to check the result")?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE o.status = 'PAID'),
                    (SELECT count(*) FROM provider_events p JOIN orders x ON x.id = p.order_id
                     WHERE x.event_id = e.id AND p.kind = 'payment.succeeded'),
                    (SELECT count(DISTINCT p.order_id) FROM provider_events p
                     JOIN orders x ON x.id = p.order_id
                     WHERE x.event_id = e.id AND p.kind = 'payment.succeeded'),
                    (SELECT count(*) FROM tickets t
                     WHERE t.event_id = e.id AND t.status = 'VALID')
             FROM events e JOIN orders o ON o.event_id = e.id
             WHERE e.id = $1::text::uuid
             GROUP BY e.id",
            &[&event_id],
        )
        .await?;
    let (orders, paid, payment_events, orders_with_a_payment_event, valid_tickets): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let placed = i64::try_from(placed)?;
    Ok(Check {
        orders,
        paid,
        payment_events,
        orders_with_a_payment_event,
        valid_tickets,
        paid_once: orders == placed
            && paid == placed
            && payment_events == placed
            && orders_with_a_payment_event == placed
            && valid_tickets == placed,
    })
}
