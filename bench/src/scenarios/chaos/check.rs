//! The checks in PostgreSQL after a scenario.

use anyhow::Context;

use super::load::BuyerLog;

pub(super) struct Check {
    pub(super) capacity: i64,
    pub(super) seats_available: i64,
    pub(super) seats_held: i64,
    pub(super) confirmed_seats: i64,
    pub(super) final_version: i64,
    pub(super) missing: i64,
    pub(super) duplicate_keys: i64,
}

pub(super) async fn verify(
    database_url: &str,
    event_id: &str,
    log: &BuyerLog,
) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the chaos cluster's PostgreSQL")?;
    tokio::spawn(connection);
    let event = client
        .query_one(
            "SELECT capacity::bigint, seats_available::bigint, seats_held::bigint, version::bigint
             FROM events WHERE id = $1::text::uuid",
            &[&event_id],
        )
        .await?;
    let confirmed_seats: i64 = client
        .query_one(
            "SELECT coalesce(sum(quantity), 0)::bigint FROM bookings
             WHERE event_id = $1::text::uuid AND status = 'CONFIRMED'",
            &[&event_id],
        )
        .await?
        .get(0);
    let keys: Vec<&str> = log.heard.iter().map(|(key, _)| key.as_str()).collect();
    let ids: Vec<&str> = log.heard.iter().map(|(_, id)| id.as_str()).collect();
    // The booking the buyer heard, under the key it sent: a retry answered with another
    // booking than the first answer's would show here.
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM unnest($1::text[], $2::text[]) AS heard(key, id)
             WHERE NOT EXISTS (SELECT 1 FROM bookings b
                 WHERE b.id = heard.id::uuid AND b.idempotency_key = heard.key
                   AND b.status = 'CONFIRMED')",
            &[&keys, &ids],
        )
        .await?
        .get(0);
    let duplicate_keys: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM bookings
               WHERE event_id = $1::text::uuid AND idempotency_key IS NOT NULL
               GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS twice",
            &[&event_id],
        )
        .await?
        .get(0);
    Ok(Check {
        capacity: event.get(0),
        seats_available: event.get(1),
        seats_held: event.get(2),
        final_version: event.get(3),
        confirmed_seats,
        missing,
        duplicate_keys,
    })
}
