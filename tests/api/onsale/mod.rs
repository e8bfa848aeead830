//! The onsale path: batched bookings (group commit) racing each other across instances and
//! the one-transaction-per-booking path, and the sold-out hint.

use std::collections::HashMap;
use std::time::Duration;

use evently::db::models::Role;
use evently::domain::bookings::BookingRequest;
use evently::domain::group_commit::{BookingQueue, Buyer, book_batch};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::FaultProxy;
use crate::support::{
    BOOK, CANCEL, TestApp, TestUser, error_code, eventually, spawn_behind_database_proxy,
};

mod batches;
mod lost_commits;
mod sold_out;

/// What one request came to: the booking id, or the error code.
fn outcome(body: &Value) -> Result<String, String> {
    match body.get("errors") {
        Some(_) => Err(error_code(body).to_owned()),
        None => Ok(body["data"]["bookSeats"]["id"].as_str().unwrap().to_owned()),
    }
}

/// `n` signed-in buyers, a few at a time: signing in hundreds at once can outwait the pool
/// on a busy machine.
async fn buyers(app: &TestApp, n: usize) -> Vec<TestUser> {
    futures_util::stream::iter(0..n)
        .map(|_| app.user(Role::User))
        .buffered(8)
        .collect()
        .await
}

async fn assert_one_booking_per_buyer(app: &TestApp, buyers: usize) {
    assert_eq!(
        app.count("bookings").await,
        buyers as i64,
        "one booking per buyer, none twice"
    );
    assert_eq!(
        app.count("(SELECT user_id FROM bookings GROUP BY 1 HAVING count(*) > 1) twice")
            .await,
        0,
        "nobody booked twice"
    );
    app.assert_invariant().await;
}
