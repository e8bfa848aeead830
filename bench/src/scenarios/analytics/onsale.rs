//! What the analytics roll-ups cost the onsale: the group-commit batch's SQL (lock the event,
//! insert a batch of bookings in one statement, commit) from several connections at once, with
//! the roll-up trigger on `bookings` switched off, then on, round after round, back to back on
//! the same database, so that the ratio holds even on a machine busy with something else.
//!
//! The comparison books into an event of its own, and takes its bookings away at the end the
//! way they came (those written with the trigger off are deleted with it off), so the roll-ups
//! still match the bookings afterwards; it checks that they do.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use super::Options;
use crate::Common;

const TRIGGER: &str = "bookings_roll_up_insert";

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub without_trigger: f64,
    pub with_trigger: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Batches committed per second, each round.
    pub rounds: Vec<Round>,
    pub batch: usize,
    pub clients: usize,
    /// Median over the rounds of with ÷ without.
    pub ratio: f64,
    /// Whether `event_sales` matched a recount of the bookings afterwards.
    pub rollups_exact: bool,
}

async fn connect(common: &Common) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(&common.database_url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Batches per second from `clients` connections for `seconds`; `tag` marks the bookings.
async fn batches_per_second(
    common: &Common,
    options: &Options,
    event: &str,
    buyers: &[String],
    tag: &str,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(options.onsale_seconds);
    let started = Instant::now();
    let workers = (0..options.onsale_clients.max(1)).map(|worker| async move {
        let mut db = connect(common).await?;
        let lock = db
            .prepare(
                "UPDATE events SET seats_available = seats_available - $2, version = version + $2,
                        updated_at = now()
                 WHERE id = $1::text::uuid RETURNING id",
            )
            .await?;
        let insert = db
            .prepare(
                "INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key,
                                       created_at)
                 SELECT gen_random_uuid(), $1::text::uuid, u::uuid, 1, 'CONFIRMED',
                        $3 || gen_random_uuid(), now()
                 FROM unnest($2::text[]) u",
            )
            .await?;
        let size = options.onsale_batch.max(1);
        let mut batches = 0u64;
        let mut at = worker * size;
        while Instant::now() < deadline {
            let users: Vec<&String> = (0..size)
                .map(|k| &buyers[(at + k) % buyers.len()])
                .collect();
            at += size * options.onsale_clients;
            let tx = db.transaction().await?;
            tx.query_one(&lock, &[&event, &(size as i32)]).await?;
            tx.execute(&insert, &[&event, &users, &tag]).await?;
            tx.commit().await?;
            batches += 1;
        }
        anyhow::Ok(batches)
    });
    let batches: u64 = futures_util::future::try_join_all(workers)
        .await?
        .into_iter()
        .sum();
    Ok(batches as f64 / started.elapsed().as_secs_f64())
}

async fn set_trigger(db: &Client, on: bool) -> anyhow::Result<()> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    db.batch_execute(&format!("ALTER TABLE bookings {verb} TRIGGER {TRIGGER}"))
        .await
        .with_context(|| format!("{verb} TRIGGER {TRIGGER} (is the roll-up migration applied?)"))
}

pub async fn compare(common: &Common, options: &Options) -> anyhow::Result<Comparison> {
    let db = connect(common).await?;
    let event: String = db
        .query_one(
            "INSERT INTO events (id, organizer_id, title, category, venue, starts_at, ends_at,
                                 capacity, seats_available, created_at, updated_at, published_at)
             SELECT gen_random_uuid(), id, 'bench onsale comparison', 'Music', 'Bench Hall',
                    now() + interval '30 days', now() + interval '31 days', 2000000000,
                    2000000000, now(), now(), now()
             FROM users WHERE email = $1
             RETURNING id::text",
            &[&common.organizer_email],
        )
        .await
        .context("the organizer account (seed the demo data first)")?
        .get(0);
    let buyers: Vec<String> = db
        .query("SELECT id::text FROM users ORDER BY id LIMIT 20000", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut rounds = Vec::new();
    let outcome = async {
        for _ in 0..options.onsale_rounds.max(1) {
            set_trigger(&db, false).await?;
            let without_trigger =
                batches_per_second(common, options, &event, &buyers, "cmp-off-").await?;
            set_trigger(&db, true).await?;
            let with_trigger =
                batches_per_second(common, options, &event, &buyers, "cmp-on-").await?;
            println!(
                "onsale batch SQL: {without_trigger:.0} batches/s without the roll-up trigger, \
                 {with_trigger:.0} with it"
            );
            rounds.push(Round {
                without_trigger,
                with_trigger,
            });
        }
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, the trigger is left on and the comparison's bookings are taken away.
    set_trigger(&db, true).await?;
    outcome?;
    db.batch_execute(&format!(
        "ALTER TABLE bookings DISABLE TRIGGER bookings_roll_up_delete;
         DELETE FROM bookings WHERE event_id = '{event}' AND idempotency_key LIKE 'cmp-off-%';
         ALTER TABLE bookings ENABLE TRIGGER bookings_roll_up_delete;
         DELETE FROM bookings WHERE event_id = '{event}';
         DELETE FROM events WHERE id = '{event}';"
    ))
    .await?;
    let mismatched: i64 = db
        .query_one(
            "SELECT count(*) FROM (
                 SELECT event_id, count(*), sum(quantity),
                        count(*) FILTER (WHERE cancelled_at IS NOT NULL),
                        coalesce(sum(quantity) FILTER (WHERE cancelled_at IS NOT NULL), 0)
                 FROM bookings GROUP BY event_id
                 EXCEPT
                 SELECT event_id, bookings, tickets, cancellations, tickets_cancelled
                 FROM event_sales) differing",
            &[],
        )
        .await?
        .get(0);
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r.with_trigger / r.without_trigger.max(f64::MIN_POSITIVE))
        .collect();
    ratios.sort_by(f64::total_cmp);
    Ok(Comparison {
        ratio: ratios[ratios.len() / 2],
        rounds,
        batch: options.onsale_batch,
        clients: options.onsale_clients,
        rollups_exact: mismatched == 0,
    })
}
