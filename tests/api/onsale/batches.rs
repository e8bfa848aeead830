//! Group commit: batches on two instances and the single path never oversell or book a key
//! twice, bookings waiting behind a locked event are committed in batches, hot events leave
//! connections for everyone else, retries and absurd quantities, and watchers see only what a
//! batch committed.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_on_two_instances_and_the_single_path_never_oversell_or_book_a_key_twice() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    // A third way in: one transaction per booking, as with EVENTLY_GROUP_COMMIT=false.
    let single = BookingQueue::new(
        app.state.db.clone(),
        app.state.bus.clone(),
        false,
        app.state.config.database_pool_size,
    );
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 120).await;
    let event_uuid: Uuid = event_id.parse().unwrap();
    let buyers = join_all((0..40).map(|_| app.user(Role::User))).await;

    // 200 keys, each sent three times (once by each path) with the same request: 400 seats
    // wanted in quantities of 1 to 3, for 120 seats.
    let request = |k: usize| {
        (
            &buyers[k % buyers.len()],
            1 + (k % 3) as i32,
            format!("key-{k}"),
        )
    };
    let event = event_id.as_str();
    let over_http = (0..400).map(|i| {
        let k = i % 200;
        let (buyer, quantity, key) = request(k);
        let instance = if i < 200 { &app } else { &peer };
        async move {
            let variables = json!({ "input": {
                "eventId": event, "quantity": quantity, "idempotencyKey": key,
            } });
            (
                k,
                outcome(&instance.gql(Some(&buyer.token), BOOK, variables).await),
            )
        }
    });
    let direct = (0..200).map(|k| {
        let (buyer, quantity, key) = request(k);
        let (single, app) = (&single, &app);
        async move {
            let claims = app.state.tokens.decode(&buyer.token).unwrap();
            let who = Buyer {
                user_id: buyer.id,
                session_id: claims.sid,
            };
            let result = single
                .book(
                    who,
                    BookingRequest {
                        event_id: event_uuid,
                        quantity,
                        idempotency_key: Some(key),
                        seat_ids: Vec::new(),
                    },
                )
                .await;
            let result = result
                .map(|change| change.value.id.to_string())
                .map_err(|error| error.code().to_owned());
            (k, result)
        }
    });
    let (http, direct) = tokio::join!(join_all(over_http), join_all(direct));

    let mut by_key: HashMap<usize, Vec<Result<String, String>>> = HashMap::new();
    for (k, result) in http.into_iter().chain(direct) {
        by_key.entry(k).or_default().push(result);
    }
    let mut booked = 0;
    for (k, results) in &by_key {
        assert_eq!(results.len(), 3);
        // Every copy of a request gets the same answer: one booking, or SOLD_OUT for all.
        assert!(
            results.iter().all(|r| r == &results[0]),
            "key {k} answered differently: {results:?}"
        );
        match &results[0] {
            Ok(_) => booked += 1,
            Err(code) => assert_eq!(code, "SOLD_OUT", "key {k}"),
        }
    }
    assert_eq!(
        app.count("bookings WHERE status = 'CONFIRMED'").await,
        booked,
        "one row per key that was booked"
    );
    assert_eq!(
        app.count(
            "(SELECT user_id, idempotency_key FROM bookings GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    app.assert_invariant().await;
    // More seats were wanted than exist, in quantities of at most 3.
    assert_eq!(
        app.count(&format!(
            "events WHERE id = '{event_id}' AND seats_available < 3"
        ))
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_waiting_behind_a_locked_event_are_committed_in_batches() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = buyers(&app, 30).await;

    let blocker = app.hold_event_row(&event_id).await;
    let bookings = tokio::spawn({
        let (base, buyers, event_id) = (app.base_url.clone(), buyers.clone(), event_id.clone());
        async move {
            let client = reqwest::Client::new();
            join_all(buyers.iter().map(|buyer| {
                client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&buyer.token)
                    .json(&json!({ "query": BOOK, "variables": { "input": { "eventId": event_id } } }))
                    .send()
            }))
            .await
        }
    });
    // Every booking has reached the event's queue or a worker, and none can commit yet.
    eventually(Duration::from_secs(30), || async {
        let stats = app.state.onsale.stats();
        if stats.pending >= 30 {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
    drop(blocker);
    for response in bookings.await.unwrap() {
        let body: Value = response.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }
    let stats = app.state.onsale.stats();
    // At most one batch per worker was taken before the lock was released; whatever waited
    // meanwhile goes in the next one.
    assert_eq!(stats.batch_sizes.iter().sum::<usize>(), 30, "{stats:?}");
    assert!(stats.batch_sizes.len() <= 4, "{stats:?}");
    assert!(stats.batch_sizes.iter().any(|&n| n > 1), "{stats:?}");
    assert_one_booking_per_buyer(&app, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hot_events_leave_connections_for_browsing_and_signing_in() {
    // Ten connections; the onsale path may hold half of them.
    let app = TestApp::spawn_with(|config| config.database_pool_size = 10).await;
    let organizer = app.user(Role::Organizer).await;
    let events = join_all((0..5).map(|_| app.event(&organizer, 100))).await;
    let buyers = buyers(&app, 20).await;
    let email = format!("browser-{}@example.com", Uuid::new_v4().simple());
    evently::domain::users::create_user(
        &app.state.db,
        &app.state.passwords,
        evently::domain::users::NewUser {
            email: &email,
            password: "correct horse battery",
            name: "Browser",
            role: Role::User,
        },
    )
    .await
    .unwrap();

    // Every event row is locked, so its bookings hold whatever connections they get.
    let mut blockers = Vec::new();
    for event_id in &events {
        blockers.push(app.hold_event_row(event_id).await);
    }
    let bookings = tokio::spawn({
        let (base, buyers, events) = (app.base_url.clone(), buyers.clone(), events.clone());
        async move {
            let client = &reqwest::Client::new();
            let (base, buyers) = (&base, &buyers);
            let requests = events.iter().flat_map(|event_id| {
                buyers.iter().map(move |buyer| {
                    client
                        .post(format!("{base}/graphql"))
                        .bearer_auth(&buyer.token)
                        .json(&json!({ "query": BOOK, "variables": { "input": { "eventId": event_id } } }))
                        .send()
                })
            });
            join_all(requests).await
        }
    });
    let waiting =
        "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually(Duration::from_secs(30), || async {
        let waiting = app.count(waiting).await;
        if waiting >= 5 {
            Ok(())
        } else {
            Err(format!(
                "bookings never reached the locked rows: {waiting} waiting"
            ))
        }
    })
    .await;

    let browse = "query { events(first: 20) { edges { node { id seatsAvailable } } } }";
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    for _ in 0..3 {
        let (browsed, signed_in) = tokio::join!(
            app.gql(Some(&buyers[0].token), browse, json!({})),
            app.gql(
                None,
                login,
                json!({ "i": { "email": email, "password": "correct horse battery" } })
            ),
        );
        assert!(browsed.get("errors").is_none(), "browse: {browsed}");
        assert!(signed_in.get("errors").is_none(), "login: {signed_in}");
    }
    assert!(
        app.count(waiting).await <= 5,
        "the onsale path holds at most half the pool"
    );

    drop(blockers);
    for response in bookings.await.unwrap() {
        let body: Value = response.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }
    assert_eq!(app.count("bookings").await, 100);
    app.assert_invariant().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_retries_with_one_key_gets_one_booking_without_replaying_batches() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 100).await;
    let buyers = buyers(&app, 20).await;
    let impatient = &buyers[0];

    let blocker = app.hold_event_row(&event_id).await;
    let bookings = tokio::spawn({
        let (base, buyers, event_id) = (app.base_url.clone(), buyers.clone(), event_id.clone());
        async move {
            let client = &reqwest::Client::new();
            // Twenty retries of one request, mixed with nineteen other buyers' bookings.
            let requests = (0..39).map(|i| {
                let (buyer, input) = if i % 2 == 0 {
                    (
                        &buyers[0],
                        json!({ "eventId": event_id, "idempotencyKey": "again" }),
                    )
                } else {
                    (&buyers[1 + i / 2], json!({ "eventId": event_id }))
                };
                client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&buyer.token)
                    .json(&json!({ "query": BOOK, "variables": { "input": input } }))
                    .send()
            });
            join_all(requests).await
        }
    });
    eventually(Duration::from_secs(30), || async {
        let stats = app.state.onsale.stats();
        if stats.pending >= 39 {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
    drop(blocker);
    let mut retried = Vec::new();
    for (i, response) in bookings.await.unwrap().into_iter().enumerate() {
        let body: Value = response.unwrap().json().await.unwrap();
        let id = outcome(&body).unwrap_or_else(|code| panic!("{code}: {body}"));
        if i % 2 == 0 {
            retried.push(id);
        }
    }
    assert!(retried.iter().all(|id| id == &retried[0]), "{retried:?}");
    let stats = app.state.onsale.stats();
    assert_eq!(stats.replayed, 0, "no batch was replayed: {stats:?}");
    assert_eq!(
        app.count(&format!("bookings WHERE user_id = '{}'", impatient.id))
            .await,
        1
    );
    assert_one_booking_per_buyer(&app, 20).await;
}

#[tokio::test]
async fn two_enormous_quantities_in_one_batch_are_refused_without_overflowing() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyers = buyers(&app, 2).await;
    let event_id: Uuid = app.event(&organizer, 10).await.parse().unwrap();
    let requests: Vec<(Buyer, BookingRequest)> = buyers
        .iter()
        .map(|buyer| {
            let claims = app.state.tokens.decode(&buyer.token).unwrap();
            let who = Buyer {
                user_id: buyer.id,
                session_id: claims.sid,
            };
            let request = BookingRequest {
                event_id,
                quantity: i32::MAX,
                idempotency_key: None,
                seat_ids: Vec::new(),
            };
            (who, request)
        })
        .collect();
    let batch: Vec<(Buyer, &BookingRequest)> = requests.iter().map(|(b, r)| (*b, r)).collect();
    let mut conn = app.state.conn().await.unwrap();
    let (results, _, _) = book_batch(&mut conn, &app.state.db, event_id, &batch, |_| false)
        .await
        .unwrap();
    for result in results {
        let error = result.err().expect("refused");
        assert_eq!(error.code(), "BAD_USER_INPUT");
    }
    assert_eq!(app.count("bookings").await, 0);
}

#[tokio::test]
async fn a_quantity_that_disagrees_with_the_seats_named_is_refused() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event_id = app.event(&organizer, 10).await;
    let seats = [Uuid::new_v4().to_string(), Uuid::new_v4().to_string()];
    let refused = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": event_id, "quantity": 3, "seatIds": seats } }),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "quantity",
        "{refused}"
    );
    assert_eq!(app.count("bookings").await, 0);
}

/// A batch that has to end an expired hold before it can book frees those seats and takes them
/// again in one transaction: watchers see only what it committed, never the count in between.
#[tokio::test]
async fn watchers_see_only_the_seat_counts_a_batch_committed() {
    let app = TestApp::spawn_with(|config| {
        // The batch, not the sweeper, must end the expired hold.
        config.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let organizer = app.user(Role::Organizer).await;
    let event_id = app.event(&organizer, 10).await;
    let holder = app.user(Role::User).await;
    let held = app
        .gql_ok(
            Some(&holder.token),
            "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id } }",
            json!({ "input": { "eventId": event_id, "quantity": 4 } }),
        )
        .await;
    let hold_id = held["holdSeats"]["id"].as_str().unwrap();
    {
        use diesel_async::RunQueryDsl;
        let mut db = app.db().await;
        diesel::sql_query(format!(
            "UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = '{hold_id}'"
        ))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let mut watcher = app.connect_ws(json!({})).await;
    watcher
        .subscribe(
            "seats",
            "subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable seatsHeld } }",
            json!({ "id": event_id }),
        )
        .await;
    let seats = |message: Value| {
        let seats = &message["data"]["seatAvailability"];
        (
            seats["seatsAvailable"].as_i64(),
            seats["seatsHeld"].as_i64(),
        )
    };
    assert_eq!(seats(watcher.next_data().await), (Some(6), Some(4)));

    // Seven seats: more than are free, so the batch ends the expired hold first.
    let buyer = app.user(Role::User).await;
    let booked = app.try_book(&buyer, &event_id, 7).await;
    assert_eq!(
        booked["data"]["bookSeats"]["status"], "CONFIRMED",
        "{booked}"
    );
    assert!(
        app.state.onsale.stats().batch_sizes.contains(&1),
        "the booking went through a batch"
    );
    let mut seen = Vec::new();
    loop {
        let state = seats(watcher.next_data().await);
        seen.push(state);
        if state == (Some(3), Some(0)) {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![(Some(3), Some(0))],
        "watchers saw a seat count that was never committed"
    );
    app.assert_invariant().await;
}
