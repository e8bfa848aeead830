//! `GET /exports/events/{id}/attendees.csv`: read back with a real CSV parser, formulas
//! neutralised, RFC 4180 quoting, who may download it, and many pages streamed in order.

use evently::db::models::Role;
use serde_json::json;

use super::sql;
use crate::support::{CANCEL, TestApp, TestUser};

async fn export(app: &TestApp, event: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!(
        "{}/exports/events/{event}/attendees.csv",
        app.base_url
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn parse(body: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().from_reader(body.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|record| record.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[tokio::test]
async fn attendees_export_neutralises_formulas_and_quotes_by_rfc_4180() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 100).await;
    // Names as a hostile buyer might choose them (set in SQL: the API refuses control
    // characters), and text that only needs quoting.
    let names = [
        (
            "=HYPERLINK(\"http://evil\",\"x\")",
            "'=HYPERLINK(\"http://evil\",\"x\")",
        ),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        (
            "Zoë \"Z\", O'Brien\nsecond line 🎵",
            "Zoë \"Z\", O'Brien\nsecond line 🎵",
        ),
        ("a=b", "a=b"),
    ];
    let mut buyers: Vec<TestUser> = Vec::new();
    for (name, _) in names {
        let buyer = app.user(Role::User).await;
        let escaped = name.replace('\'', "''");
        sql(
            &app,
            &format!(
                "UPDATE users SET name = E'{}' WHERE id = '{}'",
                escaped
                    .replace('\n', "\\n")
                    .replace('\t', "\\t")
                    .replace('\r', "\\r"),
                buyer.id
            ),
        )
        .await
        .unwrap();
        app.book(&buyer, &event, 2).await;
        buyers.push(buyer);
    }
    // A cancelled booking is not an attendee.
    let gone = app.user(Role::User).await;
    let cancelled = app.book(&gone, &event, 1).await;
    app.gql_ok(Some(&gone.token), CANCEL, json!({ "id": cancelled }))
        .await;

    let response = export(&app, &event, Some(&organizer.token)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/csv; charset=utf-8"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with("booking_id,booked_at,name,email,quantity,seats\r\n"),
        "{body}"
    );
    let (header, rows) = parse(&body);
    assert_eq!(
        header,
        [
            "booking_id",
            "booked_at",
            "name",
            "email",
            "quantity",
            "seats"
        ]
    );
    assert_eq!(rows.len(), names.len());
    for ((_, expected), row) in names.iter().zip(&rows) {
        assert_eq!(&row[2], expected);
        assert_eq!(row[4], "2");
    }
    // No cell of the file starts a formula.
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?}"
            );
        }
    }
}

#[tokio::test]
async fn only_the_organizer_and_admins_export_and_a_bad_token_is_401() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let user = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event = app.event(&organizer, 10).await;
    assert_eq!(export(&app, &event, None).await.status(), 401);
    assert_eq!(
        export(&app, &event, Some("not-a-token")).await.status(),
        401
    );
    assert_eq!(export(&app, &event, Some(&rival.token)).await.status(), 404);
    assert_eq!(export(&app, &event, Some(&user.token)).await.status(), 404);
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        export(&app, &missing, Some(&admin.token)).await.status(),
        404
    );
    assert_eq!(
        export(&app, "not-a-uuid", Some(&admin.token))
            .await
            .status(),
        404
    );
    assert_eq!(export(&app, &event, Some(&admin.token)).await.status(), 200);
    // A session that ended is a bad token too.
    app.gql_ok(Some(&organizer.token), "mutation { logout }", json!({}))
        .await;
    assert_eq!(
        export(&app, &event, Some(&organizer.token)).await.status(),
        401
    );
}

#[tokio::test]
async fn an_export_of_many_pages_lists_every_attendee_once_in_booking_order() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = app.event(&organizer, 10_000).await;
    // More than two pages of bookings, made in SQL (the API would take a while).
    sql(
        &app,
        &format!(
            "UPDATE events SET seats_available = seats_available - 4500 WHERE id = '{event}';
             INSERT INTO bookings (id, event_id, user_id, quantity, status, created_at)
             SELECT gen_random_uuid(), '{event}', '{}', 1, 'CONFIRMED',
                    now() - interval '1 day' + (i % 1000) * interval '1 second'
             FROM generate_series(1, 4500) i",
            buyer.id
        ),
    )
    .await
    .unwrap();
    let body = export(&app, &event, Some(&organizer.token))
        .await
        .text()
        .await
        .unwrap();
    let (_, rows) = parse(&body);
    assert_eq!(rows.len(), 4500);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len(), 4500, "an attendee listed twice");
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[1].as_str(), r[0].as_str()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "not in booking order"
    );
    app.assert_invariant().await;
}
