//! `orders`: B buyers place one-line orders (one ticket of one type, with an idempotency key)
//! on one event paid by hand (the `manual` provider, so no provider is called) until the type
//! is sold out, then keep trying for a while. Reports orders placed per second, their latency,
//! the SOLD_OUT rejections, and checks in SQL afterwards that nothing was oversold: the type's
//! held + sold ≤ its quantity, its held tickets are the lines of the pending orders, the
//! event's held seats are its live holds, and every order a buyer was given is in the
//! database. The pgbench one-booking-per-transaction baseline of the same run comes first, as
//! in `onsale`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use super::{check_alive, secs};
use crate::Common;
use crate::baseline;
use crate::client::{Answer, Gql};
use crate::report::{Report, table};
use crate::stats::Samples;
use crate::system::CpuMeter;

#[derive(clap::Args)]
// Its own group name: the flattened baseline options are an `Options` too.
#[group(id = "orders_options")]
pub struct Options {
    /// Concurrent buyers, each with their own account and connection.
    #[arg(long, default_value_t = 256)]
    buyers: usize,
    /// Tickets of the type on sale; by default 40 per buyer (a buyer may hold 100 at once).
    #[arg(long)]
    tickets: Option<i64>,
    /// The ticket's price, in cents.
    #[arg(long, default_value_t = 2500)]
    price: i64,
    /// How long buyers keep trying once the type is sold out.
    #[arg(long, default_value_t = 2)]
    after_sellout_secs: u64,
    /// Upper bound on the whole run.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    #[command(flatten)]
    baseline: baseline::Options,
}

pub const PLACE_ORDER: &str = "mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) { id status payment { clientSecret } } }";

/// An event of `tickets` seats selling one type of `tickets` tickets at `price` euro cents,
/// paid through `provider` (`MANUAL` or `STRIPE`). Returns the event's and the type's ids.
/// Up to 100 seats per booking, so that a buyer may hold 100 tickets at once.
pub async fn ticketed_event(
    gql: &Gql,
    organizer: &str,
    title: &str,
    tickets: i64,
    price: i64,
    provider: &str,
) -> anyhow::Result<(String, String)> {
    let event = gql.create_event(organizer, title, tickets, 100).await?;
    let data = gql
        .expect(
            Some(organizer),
            "mutation($eventId: ID!, $input: CreateTicketTypeInput!) {
               createTicketType(eventId: $eventId, input: $input) { id } }",
            json!({ "eventId": event, "input": {
                "name": "Regular", "price": { "amount": price, "currency": "EUR" },
                "quantity": tickets, "maxPerOrder": 10,
            } }),
        )
        .await?;
    let ticket_type = data["createTicketType"]["id"]
        .as_str()
        .context("no ticket type id")?
        .to_owned();
    if provider != "MANUAL" {
        gql.expect(
            Some(organizer),
            "mutation($id: ID!, $input: PaymentSettingsInput!) {
               updatePaymentSettings(eventId: $id, input: $input) { paymentProvider } }",
            json!({ "id": event, "input": { "paymentProvider": provider } }),
        )
        .await?;
    }
    Ok((event, ticket_type))
}

#[derive(Default)]
struct Buyer {
    placed: Samples,
    rejected: Samples,
    order_ids: Vec<String>,
    errors: BTreeMap<String, u64>,
    last_placed: Option<Instant>,
    last_finished: Option<Instant>,
}

pub async fn run(common: &Common, options: Options) -> anyhow::Result<()> {
    check_alive(common.server_pid)?;
    let gql = Gql::new(&common.url)?;
    let pgbench = if common.no_baseline {
        Vec::new()
    } else {
        baseline::run_all(common, &gql, &options.baseline).await?
    };
    let organizer = gql
        .login(&common.organizer_email, &common.organizer_password)
        .await?;
    let tickets = options.tickets.unwrap_or(options.buyers as i64 * 40);
    let (event_id, type_id) =
        ticketed_event(&gql, &organizer, "Orders", tickets, options.price, "MANUAL").await?;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    println!("registering {} buyers", options.buyers);
    let buyers = gql.register_buyers(&run_id, options.buyers).await?;
    println!(
        "orders: {tickets} tickets of one type, {} buyers",
        options.buyers
    );

    let cpu = common.server_pid.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    let sold_out: Arc<OnceLock<Instant>> = Arc::default();
    let after = Duration::from_secs(options.after_sellout_secs);
    let deadline = start + Duration::from_secs(options.max_secs);
    let mut tasks = Vec::new();
    for (_, token) in buyers {
        let (gql, sold_out_at) = (gql.clone(), sold_out.clone());
        let (event_id, type_id) = (event_id.clone(), type_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut me = Buyer::default();
            loop {
                let now = Instant::now();
                if now > deadline || sold_out_at.get().is_some_and(|t| now > *t + after) {
                    return me;
                }
                let variables = json!({ "input": {
                    "eventId": event_id,
                    "lines": [{ "ticketTypeId": type_id, "quantity": 1 }],
                    "idempotencyKey": Uuid::new_v4().to_string(),
                } });
                let started = Instant::now();
                let answer = gql.call(Some(&token), PLACE_ORDER, variables).await;
                let finished = Instant::now();
                me.last_finished = Some(finished);
                match answer {
                    Ok(Answer::Data(data)) => {
                        me.placed.record(start, started, finished);
                        me.last_placed = Some(finished);
                        if let Some(id) = data["placeOrder"]["id"].as_str() {
                            me.order_ids.push(id.to_owned());
                        }
                    }
                    Ok(Answer::Error(code)) if code == "SOLD_OUT" => {
                        sold_out_at.get_or_init(|| finished);
                        me.rejected.record(start, started, finished);
                    }
                    Ok(Answer::Error(code)) => *me.errors.entry(code).or_default() += 1,
                    Err(error) => *me.errors.entry(format!("transport: {error}")).or_default() += 1,
                }
            }
        }));
    }
    let mut all = Buyer::default();
    for task in tasks {
        let buyer = task.await?;
        all.placed.merge(buyer.placed);
        all.rejected.merge(buyer.rejected);
        all.order_ids.extend(buyer.order_ids);
        for (code, n) in buyer.errors {
            *all.errors.entry(code).or_default() += n;
        }
        all.last_placed = all.last_placed.max(buyer.last_placed);
        all.last_finished = all.last_finished.max(buyer.last_finished);
    }
    let server_cores = cpu.map(|c| c.cores()).transpose()?;
    let check = verify(common, &event_id, &type_id, &all.order_ids).await?;

    let selling = all.last_placed.map_or(0.0, |t| secs(t - start));
    let orders_per_sec = all.placed.count() as f64 / selling.max(f64::EPSILON);
    let placed = all.placed.summary();
    let rejected = all.rejected.summary();
    let mut rows: Vec<(String, String)> = vec![
        ("buyers (concurrent)".into(), options.buyers.to_string()),
        ("tickets of the type".into(), tickets.to_string()),
        ("orders placed".into(), all.placed.count().to_string()),
        ("sold out after".into(), format!("{selling:.2} s")),
        (
            "**orders placed/s**".into(),
            format!("**{orders_per_sec:.0}**"),
        ),
        (
            "order latency p50 / p99 / max".into(),
            format!(
                "{:.1} / **{:.1}** / {:.1} ms",
                placed.p50_ms, placed.p99_ms, placed.max_ms
            ),
        ),
        (
            "SOLD_OUT rejections (p50 / p99)".into(),
            format!(
                "{} ({:.1} / {:.1} ms)",
                all.rejected.count(),
                rejected.p50_ms,
                rejected.p99_ms
            ),
        ),
        ("other errors".into(), format!("{:?}", all.errors)),
        (
            "server CPU (cores busy)".into(),
            server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
        ),
        ("**oversold**".into(), format!("**{}**", check.oversold)),
        (
            "counters consistent (type held = pending orders' tickets, event held = live holds)"
                .into(),
            check.consistent.to_string(),
        ),
        (
            "placed for a client but missing from the database".into(),
            check.missing.to_string(),
        ),
        (
            "in the database but not placed for any client".into(),
            check.unreported.to_string(),
        ),
    ];
    rows.extend(baseline::rows(&pgbench));
    for run in &pgbench {
        rows.push((
            format!("ratio ours / pgbench at {} clients", run.clients),
            format!("**{:.1}×**", orders_per_sec / run.bookings_per_sec),
        ));
    }
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Report {
        scenario: "orders",
        common,
        results: json!({
            "options": {
                "buyers": options.buyers, "tickets": tickets, "price": options.price,
                "after_sellout_secs": options.after_sellout_secs,
            },
            "placed": all.placed.count(),
            "sold_out_after_secs": selling,
            "orders_per_sec": orders_per_sec,
            "order_latency": placed,
            "rejections": all.rejected.count(),
            "rejection_latency": rejected,
            "errors": all.errors,
            "server_cores": server_cores,
            "check": check,
            "pgbench": pgbench,
        }),
        markdown: table(&rows),
        series: vec![("order", &all.placed), ("SOLD_OUT", &all.rejected)],
    }
    .write()?;
    anyhow::ensure!(
        check.oversold == 0 && check.consistent && check.missing == 0,
        "the orders check failed"
    );
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Check {
    quantity: i64,
    held: i64,
    sold: i64,
    pending_orders: i64,
    pending_tickets: i64,
    capacity: i64,
    seats_available: i64,
    seats_held: i64,
    live_hold_seats: i64,
    oversold: i64,
    consistent: bool,
    missing: i64,
    unreported: i64,
}

/// What PostgreSQL says after the run.
async fn verify(
    common: &Common,
    event_id: &str,
    type_id: &str,
    reported: &[String],
) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(&common.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the database to check the result")?;
    tokio::spawn(connection);
    let one = async |sql: &str, id: &str| -> anyhow::Result<tokio_postgres::Row> {
        Ok(client.query_one(sql, &[&id]).await?)
    };
    let ticket_type = one(
        "SELECT quantity::bigint, held::bigint, sold::bigint FROM ticket_types
         WHERE id = $1::text::uuid",
        type_id,
    )
    .await?;
    let pending = one(
        "SELECT count(DISTINCT o.id), coalesce(sum(l.quantity), 0)::bigint
         FROM orders o JOIN order_lines l ON l.order_id = o.id
         WHERE o.event_id = $1::text::uuid AND o.status = 'PENDING_PAYMENT'",
        event_id,
    )
    .await?;
    let event = one(
        "SELECT capacity::bigint, seats_available::bigint, seats_held::bigint,
                (SELECT coalesce(sum(quantity), 0)::bigint FROM holds
                 WHERE event_id = e.id AND status = 'HELD'),
                (SELECT count(*) FROM orders WHERE event_id = e.id)
         FROM events e WHERE id = $1::text::uuid",
        event_id,
    )
    .await?;
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE id = ANY($1::text[]::uuid[])",
            &[&reported],
        )
        .await?
        .get(0);
    let (quantity, held, sold): (i64, i64, i64) =
        (ticket_type.get(0), ticket_type.get(1), ticket_type.get(2));
    let (pending_orders, pending_tickets): (i64, i64) = (pending.get(0), pending.get(1));
    let (capacity, seats_available, seats_held, live_hold_seats, orders): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = (
        event.get(0),
        event.get(1),
        event.get(2),
        event.get(3),
        event.get(4),
    );
    Ok(Check {
        quantity,
        held,
        sold,
        pending_orders,
        pending_tickets,
        capacity,
        seats_available,
        seats_held,
        live_hold_seats,
        oversold: (held + sold - quantity).max(0) + (seats_held - capacity).max(0),
        consistent: held == pending_tickets
            && seats_held == live_hold_seats
            && seats_available + seats_held <= capacity
            && seats_available >= 0,
        missing: i64::try_from(reported.len())? - found,
        unreported: orders - found,
    })
}
