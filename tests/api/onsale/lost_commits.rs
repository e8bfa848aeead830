//! Commits whose outcome the caller cannot see (a reply lost, a link cut before or during the
//! COMMIT, a caller that timed out): answered from what was written, never replayed blindly.

use super::*;

/// A server whose connections to PostgreSQL all go through a fault proxy. The sweeper is
/// slowed down so that only the bookings' transactions meet the armed faults.
async fn behind_proxy(tweak: impl FnOnce(&mut evently::config::Config)) -> (TestApp, FaultProxy) {
    spawn_behind_database_proxy(|config| {
        config.sweep_interval = Duration::from_secs(3600);
        tweak(config);
    })
    .await
}

/// Each buyer's one unkeyed booking, all sent at once.
async fn book_once_each(app: &TestApp, buyers: &[TestUser], event_id: &str) -> Vec<Value> {
    join_all(buyers.iter().map(|buyer| {
        app.gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event_id } }),
        )
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_commit_reply_is_lost_is_answered_from_what_was_written_not_replayed() {
    let (app, proxy) = behind_proxy(|_| {}).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = buyers(&app, 50).await;

    // PostgreSQL receives the first COMMIT and commits; its reply never comes back.
    proxy.cut_after(b"COMMIT", 1);
    let results = book_once_each(&app, &buyers, &event_id).await;
    assert_eq!(proxy.cut_count(), 1, "the fault was met");
    for result in &results {
        assert!(result.get("errors").is_none(), "{result}");
    }
    assert_one_booking_per_buyer(&app, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_booking_whose_commit_reply_is_lost_is_answered_from_what_was_written() {
    let (app, proxy) = behind_proxy(|config| config.group_commit = false).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = buyers(&app, 10).await;

    proxy.cut_after(b"COMMIT", 3);
    let results = book_once_each(&app, &buyers, &event_id).await;
    assert_eq!(proxy.cut_count(), 3, "the faults were met");
    for result in &results {
        assert!(result.get("errors").is_none(), "{result}");
    }
    assert_one_booking_per_buyer(&app, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_cut_before_its_commit_is_replayed_one_by_one_and_books_each_buyer_once() {
    let (app, proxy) = behind_proxy(|_| {}).await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = buyers(&app, 20).await;

    // The connection dies after the batch's INSERT reached PostgreSQL, before COMMIT: the
    // transaction is rolled back, and the batch is replayed one booking at a time.
    proxy.cut_after(b"INSERT INTO bookings", 1);
    let results = book_once_each(&app, &buyers, &event_id).await;
    assert_eq!(proxy.cut_count(), 1, "the fault was met");
    for result in &results {
        assert!(result.get("errors").is_none(), "{result}");
    }
    let stats = app.state.onsale.stats();
    assert!(stats.replayed >= 1, "the batch was replayed: {stats:?}");
    assert_one_booking_per_buyer(&app, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_whose_caller_timed_out_after_the_event_was_locked_is_not_made() {
    let app = TestApp::spawn_with(|c| c.graphql.timeout = Some(Duration::from_millis(500))).await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let before = app.fingerprint().await;
    // Another transaction is inserting a booking under the same idempotency key, so the
    // batch's insert waits for it, with the event row already locked by the batch.
    let mut blocker = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut blocker,
        &format!(
            "BEGIN; INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, created_at) \
             VALUES ('{}', '{event_id}', '{}', 1, 'CONFIRMED', 'impatient', now())",
            Uuid::new_v4(),
            buyer.id
        ),
    )
    .await
    .unwrap();
    let (status, body) = app
        .post_json(
            &json!({ "query": BOOK, "variables": { "input": {
                "eventId": event_id, "idempotencyKey": "impatient",
            } } }),
            Some(&buyer.token),
        )
        .await;
    assert_eq!((status, error_code(&body)), (504, "TIMEOUT"), "{body}");
    diesel_async::SimpleAsyncConnection::batch_execute(&mut blocker, "ROLLBACK")
        .await
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        (app.state.onsale.stats().pending == 0)
            .then_some(())
            .ok_or("the batch never finished")
    })
    .await;
    assert_eq!(
        app.fingerprint().await,
        before,
        "TIMEOUT means nothing was booked"
    );
    app.assert_invariant().await;
}

/// A COMMIT that fails while PostgreSQL still reports its transaction in progress (a
/// half-open link) has an unknown outcome: it is never taken for committed or rolled back,
/// so nothing is replayed behind the caller's back (the caller answers OUTCOME_UNKNOWN).
#[tokio::test]
async fn a_commit_whose_transaction_is_still_in_progress_has_an_unknown_outcome() {
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use evently::db::{Uncommitted, finish};
    use evently::error::AppError;

    #[derive(diesel::QueryableByName)]
    struct Txid {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        txid: i64,
    }
    let app = TestApp::spawn().await;
    // Another session's transaction, still open: PostgreSQL says "in progress".
    let mut open = app.db().await;
    open.batch_execute("BEGIN").await.unwrap();
    let Txid { txid } = diesel::sql_query("SELECT txid_current() AS txid")
        .get_result(&mut open)
        .await
        .unwrap();
    // A connection with no transaction: its COMMIT fails.
    let mut conn = app.db().await;
    let outcome = finish(&mut conn, &app.state.db, txid, Ok::<(), AppError>(())).await;
    assert!(
        matches!(outcome, Err(Uncommitted::Unknown)),
        "an in-progress transaction was taken as ended: {outcome:?}"
    );
    open.batch_execute("ROLLBACK").await.unwrap();
}
