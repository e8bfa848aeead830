//! Drafts: seen only by their organizer and admins until published, and only a draft can be
//! published; a draft can be cancelled.

use super::*;

#[tokio::test]
async fn a_draft_is_seen_only_by_its_organizer_and_admins_until_published() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let other = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let published = app.event(&organizer, 10).await;

    let sees = |token: Option<String>| {
        let app = &app;
        let draft = draft.clone();
        async move {
            let data = app
                .gql_ok(token.as_deref(), EVENT, json!({ "id": draft }))
                .await;
            !data["event"].is_null()
        }
    };
    assert!(!sees(None).await);
    assert!(!sees(Some(other.token.clone())).await);
    assert!(!sees(Some(buyer.token.clone())).await);
    assert!(sees(Some(organizer.token.clone())).await);
    assert!(sees(Some(admin.token.clone())).await);

    // Listing drafts: one's own, all for an admin, none signed out; never by default.
    let drafts = |token: Option<String>| {
        let app = &app;
        async move { ids(&app.gql_ok(token.as_deref(), DRAFTS, json!({})).await) }
    };
    assert_eq!(
        drafts(Some(organizer.token.clone())).await,
        [draft.as_str()]
    );
    assert!(drafts(Some(other.token.clone())).await.is_empty());
    assert!(drafts(None).await.is_empty());
    assert_eq!(drafts(Some(admin.token.clone())).await, [draft.as_str()]);
    for token in [None, Some(organizer.token.as_str())] {
        assert_eq!(
            ids(&app.gql_ok(token, LISTED, json!({})).await),
            [published.as_str()]
        );
    }

    // Not bookable, and no one else can act on it (or tell it exists).
    let body = app
        .gql(
            Some(&buyer.token),
            BOOK,
            json!({ "input": { "eventId": draft } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "event not found", "{body}");
    // Its organizer is told why instead.
    let body = app
        .gql(
            Some(&organizer.token),
            BOOK,
            json!({ "input": { "eventId": draft } }),
        )
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_NOT_PUBLISHED")),
        "{body}"
    );
    for query in [PUBLISH, CANCEL_EVENT] {
        let body = app
            .gql(Some(&other.token), query, json!({ "id": draft }))
            .await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    }
    let body = app
        .gql(
            Some(&other.token),
            UPDATE,
            json!({ "id": draft, "input": { "title": "Mine now" } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");

    // Its live updates likewise: NOT_FOUND for a stranger, there for its organizer.
    let mut anonymous = app.connect_ws(json!({})).await;
    anonymous
        .subscribe("1", SEATS, json!({ "id": draft }))
        .await;
    assert_eq!(operation_code(&mut anonymous, "1").await, "NOT_FOUND");
    anonymous
        .subscribe("2", UPDATED, json!({ "id": draft }))
        .await;
    assert_eq!(operation_code(&mut anonymous, "2").await, "NOT_FOUND");
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut owner = app.connect_ws(init).await;
    owner.subscribe("1", UPDATED, json!({ "id": draft })).await;
    let data = owner.next_data().await;
    assert_eq!(data["data"]["eventUpdated"]["version"], 1, "{data}");
    // Seat counts are shared by all their subscribers, executed as a signed-out caller, so a
    // draft's are hidden from its organizer too; a draft's seats do not move anyway.
    owner.subscribe("2", SEATS, json!({ "id": draft })).await;
    assert_eq!(operation_code(&mut owner, "2").await, "NOT_FOUND");

    // Published: everyone sees it and can book it.
    let data = app
        .gql_ok(Some(&organizer.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(
        data["publishEvent"],
        json!({ "id": draft, "status": "PUBLISHED", "version": 2, "onSale": true })
    );
    let data = operation_data(&mut owner, "1").await;
    assert_eq!(
        data["eventUpdated"],
        json!({ "version": 2, "status": "PUBLISHED" })
    );
    assert!(sees(None).await);
    assert!(drafts(Some(organizer.token.clone())).await.is_empty());
    app.book(&buyer, &draft, 2).await;
    // Publishing again changes nothing; an admin may publish too.
    let now = version(&app, &draft).await;
    let again = app
        .gql_ok(Some(&admin.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(again["publishEvent"]["status"], "PUBLISHED");
    assert_eq!(again["publishEvent"]["version"], now);
    // A published event is no longer hidden: a stranger is told they may not, not that it is
    // missing.
    let body = app
        .gql(Some(&other.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    app.assert_invariant().await;
}

#[tokio::test]
async fn only_a_draft_can_be_published_and_a_draft_can_be_cancelled() {
    let app = TestApp::spawn_without_redis().await;
    let organizer = app.user(Role::Organizer).await;
    let draft = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    let data = app
        .gql_ok(Some(&organizer.token), CANCEL_EVENT, json!({ "id": draft }))
        .await;
    assert_eq!(data["cancelEvent"]["status"], "CANCELLED");
    let body = app
        .gql(Some(&organizer.token), PUBLISH, json!({ "id": draft }))
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_CANCELLED")),
        "{body}"
    );
    // Cancelled, it is still nobody else's business: by id and in lists, only its organizer
    // and admins see it. A cancelled event that was published stays public.
    let (other, buyer, admin) = (
        app.user(Role::Organizer).await,
        app.user(Role::User).await,
        app.user(Role::Admin).await,
    );
    let was_public = app.event(&organizer, 5).await;
    app.gql_ok(
        Some(&organizer.token),
        CANCEL_EVENT,
        json!({ "id": was_public }),
    )
    .await;
    const CANCELLED: &str = "{ events(filter: { status: CANCELLED }) { edges { node { id } } } }";
    for (who, token, sees_draft) in [
        ("anonymous", None, false),
        ("another user", Some(&buyer.token), false),
        ("another organizer", Some(&other.token), false),
        ("its organizer", Some(&organizer.token), true),
        ("an admin", Some(&admin.token), true),
    ] {
        let token = token.map(String::as_str);
        let data = app.gql_ok(token, EVENT, json!({ "id": draft })).await;
        let expected = if sees_draft {
            json!({ "id": draft, "status": "CANCELLED" })
        } else {
            Value::Null
        };
        assert_eq!(data["event"], expected, "{who} by id");
        let listed = ids(&app.gql_ok(token, CANCELLED, json!({})).await);
        let expected = if sees_draft {
            vec![draft.clone(), was_public.clone()]
        } else {
            vec![was_public.clone()]
        };
        let mut listed = listed;
        let mut expected = expected;
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected, "{who} listing cancelled events");
        assert!(ids(&app.gql_ok(token, LISTED, json!({})).await).is_empty());
        let data = app.gql_ok(token, EVENT, json!({ "id": was_public })).await;
        assert_eq!(data["event"]["status"], "CANCELLED", "{who}");
    }

    // A draft left until its start has passed must be moved before it can go on sale.
    let late = create(&app, &organizer, json!({ "status": "DRAFT" })).await;
    sql(
        &app,
        format!("UPDATE events SET starts_at = now() - interval '1 minute' WHERE id = '{late}'"),
    )
    .await;
    let body = app
        .gql(Some(&organizer.token), PUBLISH, json!({ "id": late }))
        .await;
    assert_eq!(
        reason(&body),
        ("BAD_USER_INPUT", &json!("EVENT_STARTED")),
        "{body}"
    );
    // Only DRAFT or PUBLISHED at creation; a plain user cannot publish anything.
    let body = app
        .gql(
            Some(&organizer.token),
            CREATE,
            json!({ "input": input_with(json!({ "status": "COMPLETED" })) }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "status", "{body}");
    let user = app.user(Role::User).await;
    let published = app.event(&organizer, 5).await;
    let body = app
        .gql(Some(&user.token), PUBLISH, json!({ "id": published }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = app.gql(None, PUBLISH, json!({ "id": published })).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
}
