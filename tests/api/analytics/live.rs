//! `eventStatsUpdated`: the current figures first, then coalesced updates from any instance,
//! ending on the figures a fresh `eventStats` reads.

use std::time::Instant;

use evently::db::models::Role;
use serde_json::{Value, json};

use super::stats::event_stats;
use crate::support::{TestApp, TestUser, operation_errors};

const LIVE: &str = "subscription($id: ID!) { eventStatsUpdated(eventId: $id) {
    version sold held available bookings tickets cancellations utilisation readAt } }";

fn figures(stats: &Value) -> Value {
    let mut stats = stats.clone();
    let map = stats.as_object_mut().unwrap();
    map.retain(|key, _| {
        [
            "version",
            "sold",
            "held",
            "available",
            "bookings",
            "tickets",
            "cancellations",
            "utilisation",
        ]
        .contains(&key.as_str())
    });
    stats
}

#[tokio::test]
async fn live_stats_follow_a_storm_on_another_instance_coalesced_to_the_final_figures() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 1_000).await;
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut watcher = peer.connect_ws(init).await;
    watcher.subscribe("1", LIVE, json!({ "id": event })).await;
    let first = watcher.next_data().await;
    assert_eq!(first["data"]["eventStatsUpdated"]["sold"], 0, "{first}");

    // 300 buyers, each booking once on the other instance, all at once.
    let buyers: Vec<TestUser> =
        futures_util::future::join_all((0..300).map(|_| app.user(Role::User))).await;
    let started = Instant::now();
    futures_util::future::join_all(buyers.iter().map(|buyer| app.try_book(buyer, &event, 2))).await;
    let storm = started.elapsed();
    let fresh = event_stats(&app, &organizer.token, &event).await;
    assert_eq!(fresh["sold"], 600);

    let mut messages = Vec::new();
    let last = loop {
        let data = watcher.next_data().await;
        let stats = data["data"]["eventStatsUpdated"].clone();
        assert!(stats.is_object(), "{data}");
        messages.push((Instant::now(), stats.clone()));
        if stats["sold"] == 600 {
            break stats;
        }
    };
    assert_eq!(figures(&last), figures(&fresh));
    // Coalesced: at most four a second (plus the one a change starts), far fewer than 300.
    let span = messages.last().unwrap().0 - started;
    let allowed = 2 + (span.as_millis() / 250) as usize;
    assert!(
        messages.len() <= allowed,
        "{} messages in {span:?} (storm took {storm:?})",
        messages.len()
    );
    // The client may read them in a burst; the server read them at least 250 ms apart.
    let read_at = |stats: &Value| -> chrono::DateTime<chrono::Utc> {
        stats["readAt"].as_str().unwrap().parse().unwrap()
    };
    for pair in messages.windows(2) {
        let gap = read_at(&pair[1].1) - read_at(&pair[0].1);
        assert!(
            gap >= chrono::Duration::milliseconds(240),
            "two reads {gap:?} apart"
        );
        assert!(pair[1].1["version"].as_i64() > pair[0].1["version"].as_i64());
    }
}

#[tokio::test]
async fn live_stats_are_for_the_organizer_and_admins_only() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    let mut anonymous = app.connect_ws(json!({})).await;
    anonymous.subscribe("1", LIVE, json!({ "id": event })).await;
    let refused = anonymous.next_message().await.unwrap();
    assert_eq!(
        operation_errors(&refused)[0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let mut other = app
        .connect_ws(json!({ "Authorization": format!("Bearer {}", rival.token) }))
        .await;
    other.subscribe("1", LIVE, json!({ "id": event })).await;
    let refused = other.next_message().await.unwrap();
    assert_eq!(
        operation_errors(&refused)[0]["extensions"]["code"],
        "FORBIDDEN"
    );
}
