//! Group commit for orders: one-line orders of a busy event are placed in batches, and each
//! buyer still gets exactly the answer they would have got alone: a quota is never oversold,
//! a promo code is used exactly `maxUses` times, a wrong code is refused within a batch of good
//! orders, retries with one idempotency key get one order, and a free order is paid at once.
//! The money invariants are checked in SQL after each.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use evently::db::models::Role;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::*;
use crate::support::{error_code, eventually};

async fn buyers(app: &TestApp, n: usize) -> Vec<TestUser> {
    join_all((0..n).map(|_| app.user(Role::User))).await
}

/// Runs `orders` while the event's row is locked, releasing it once all of them wait in the
/// onsale path (so they are placed in batches), and returns their answers.
async fn behind_a_locked_event<F>(app: &TestApp, event: &str, n: usize, orders: F) -> Vec<Value>
where
    F: Future<Output = Vec<Value>>,
{
    let blocker = app.hold_event_row(event).await;
    let waiting = async {
        eventually(Duration::from_secs(30), || async {
            let stats = app.state.onsale.stats();
            if stats.pending >= n {
                Ok(())
            } else {
                Err(stats)
            }
        })
        .await;
        drop(blocker);
    };
    let (answers, ()) = tokio::join!(orders, waiting);
    answers
}

fn placed(answers: &[Value]) -> usize {
    answers.iter().filter(|a| a.get("errors").is_none()).count()
}

fn batched(app: &TestApp) -> bool {
    app.state.onsale.stats().batch_sizes.iter().any(|&n| n > 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_on_a_quota_of_fifty_place_exactly_fifty() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 500).await;
    let regular = priced(&app, &organizer, &event, "Regular", 2500).await;
    quota(&app, &organizer, &event, 50, &[&regular]).await;
    let people = buyers(&app, 200).await;
    let answers = join_all(people.iter().enumerate().map(|(i, buyer)| {
        let server = if i % 2 == 0 { &app } else { &peer };
        try_order(server, buyer, &event, &regular, 1, json!({}))
    }))
    .await;
    let refused: Vec<&str> = answers
        .iter()
        .filter(|a| a.get("errors").is_some())
        .map(error_code)
        .collect();
    assert_eq!(placed(&answers), 50, "refusals: {refused:?}");
    assert!(
        refused.iter().all(|&code| code == "SOLD_OUT"),
        "{refused:?}"
    );
    assert!(
        batched(&app) || batched(&peer),
        "200 orders at once formed no batch"
    );
    assert_eq!(app.count("orders").await, 50);
    assert_eq!(
        app.count("quotas WHERE held = 50 AND available = 0 AND sold = 0")
            .await,
        1
    );
    assert_eq!(
        app.count("holds WHERE status = 'HELD' AND quantity = 1")
            .await,
        50
    );
    assert_eq!(
        app.count("events WHERE seats_held = 50 AND seats_available = 450")
            .await,
        1
    );
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_mixing_wrong_and_used_up_promo_codes_with_good_orders_answers_each_exactly() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 100).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "HALF", "discount": "PERCENT", "value": 50, "maxUses": 5 } }),
    )
    .await;
    let people = buyers(&app, 30).await;
    // Ten with a code that does not exist, ten with a code of five uses, ten with none.
    let code = |i: usize| match i % 3 {
        0 => json!({ "promoCode": "NOPE" }),
        1 => json!({ "promoCode": "half" }),
        _ => json!({}),
    };
    let answers = behind_a_locked_event(&app, &event, 30, async {
        join_all(
            people
                .iter()
                .enumerate()
                .map(|(i, buyer)| try_order(&app, buyer, &event, &regular, 1, code(i))),
        )
        .await
    })
    .await;
    assert!(batched(&app), "{:?}", app.state.onsale.stats());
    let mut tally: HashMap<(usize, String), usize> = HashMap::new();
    for (i, answer) in answers.iter().enumerate() {
        let outcome = match answer.get("errors") {
            None => {
                let order = &answer["data"]["placeOrder"];
                let expected = if i % 3 == 1 { 1500 } else { 3000 };
                assert_eq!(order["total"]["amount"], expected, "{answer}");
                assert_eq!(order["status"], "PENDING_PAYMENT");
                "placed".to_owned()
            }
            Some(_) => reason(answer).to_owned(),
        };
        *tally.entry((i % 3, outcome)).or_default() += 1;
    }
    let expected: HashMap<(usize, String), usize> = [
        ((0, "INVALID_PROMO_CODE".to_owned()), 10),
        ((1, "placed".to_owned()), 5),
        ((1, "PROMO_CODE_USED_UP".to_owned()), 5),
        ((2, "placed".to_owned()), 10),
    ]
    .into();
    assert_eq!(tally, expected);
    assert_eq!(app.count("promo_codes WHERE uses = 5").await, 1);
    assert_eq!(app.count("orders").await, 15);
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_retries_with_one_idempotency_key_gets_one_order_per_buyer() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 100).await;
    let regular = priced(&app, &organizer, &event, "Regular", 1000).await;
    let people = buyers(&app, 20).await;
    // Each buyer sends their order five times at once, with one key.
    let sends: Vec<(usize, &TestUser)> = people
        .iter()
        .enumerate()
        .flat_map(|(i, buyer)| std::iter::repeat_n((i, buyer), 5))
        .collect();
    let answers = behind_a_locked_event(&app, &event, sends.len(), async {
        join_all(sends.iter().map(|(i, buyer)| {
            let key = json!({ "idempotencyKey": format!("checkout-{i}") });
            try_order(&app, buyer, &event, &regular, 2, key)
        }))
        .await
    })
    .await;
    assert!(batched(&app), "{:?}", app.state.onsale.stats());
    let mut orders_of: HashMap<usize, HashSet<String>> = HashMap::new();
    for ((i, _), answer) in sends.iter().zip(&answers) {
        assert!(answer.get("errors").is_none(), "{answer}");
        let id = answer["data"]["placeOrder"]["id"].as_str().unwrap();
        orders_of.entry(*i).or_default().insert(id.to_owned());
    }
    assert_eq!(orders_of.len(), 20);
    assert!(
        orders_of.values().all(|ids| ids.len() == 1),
        "{orders_of:?}"
    );
    assert_eq!(app.count("orders").await, 20);
    assert_eq!(
        app.count("events WHERE seats_held = 40 AND seats_available = 60")
            .await,
        1
    );
    // A retry later, after the batch, still gets the same order.
    let again = try_order(
        &app,
        &people[0],
        &event,
        &regular,
        2,
        json!({ "idempotencyKey": "checkout-0" }),
    )
    .await;
    let first = orders_of[&0].iter().next().unwrap();
    assert_eq!(again["data"]["placeOrder"]["id"], json!(first));
    assert_money_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_orders_in_a_batch_are_paid_at_once_with_their_tickets_and_never_oversold() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 100).await;
    let free = ticket_type(
        &app,
        &organizer,
        &event,
        json!({ "name": "Meetup", "price": eur(0), "quantity": 12 }),
    )
    .await;
    let people = buyers(&app, 20).await;
    let answers = behind_a_locked_event(&app, &event, 20, async {
        join_all(
            people
                .iter()
                .map(|buyer| try_order(&app, buyer, &event, &free, 1, json!({}))),
        )
        .await
    })
    .await;
    assert!(batched(&app), "{:?}", app.state.onsale.stats());
    assert_eq!(placed(&answers), 12);
    for answer in &answers {
        match answer.get("errors") {
            None => {
                let order = &answer["data"]["placeOrder"];
                assert_eq!(order["status"], "PAID", "{answer}");
                assert_eq!(order["tickets"].as_array().unwrap().len(), 1, "{answer}");
            }
            Some(_) => assert_eq!(error_code(answer), "SOLD_OUT", "{answer}"),
        }
    }
    assert_eq!(
        app.count("ticket_types WHERE sold = 12 AND held = 0").await,
        1
    );
    assert_eq!(app.count("tickets WHERE status = 'VALID'").await, 12);
    assert_eq!(
        app.count("events WHERE seats_available = 88 AND seats_held = 0")
            .await,
        1
    );
    assert_money_invariants(&app).await;
}
