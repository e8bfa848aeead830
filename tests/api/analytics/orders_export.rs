//! `GET /exports/events/{id}/orders.csv`: one row per order read back with a real CSV
//! parser (amounts in the currency's unit, the lines in one cell, formulas neutralised), who
//! may download it, and many pages streamed in order.

use evently::db::models::Role;
use serde_json::json;

use super::sql;
use crate::commerce::{
    CREATE_PROMO, PLACE_ORDER, REFUND, event, mark_paid, order, priced, try_order,
};
use crate::support::{TestApp, TestUser};

async fn export(app: &TestApp, event: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!(
        "{}/exports/events/{event}/orders.csv",
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

async fn named(app: &TestApp, name: &str) -> TestUser {
    let buyer = app.user(Role::User).await;
    sql(
        app,
        &format!(
            "UPDATE users SET name = '{}' WHERE id = '{}'",
            name.replace('\'', "''"),
            buyer.id
        ),
    )
    .await
    .unwrap();
    buyer
}

#[tokio::test]
async fn orders_export_has_one_row_per_order_with_its_money_and_neutralised_cells() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = event(&app, &organizer, 50).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let vip = priced(&app, &organizer, &event, "=VIP", 7000).await;
    app.gql_ok(
        Some(&organizer.token),
        CREATE_PROMO,
        json!({ "eventId": event, "input": { "code": "TENOFF", "discount": "PERCENT", "value": 10 } }),
    )
    .await;
    let hostile = named(&app, "=HYPERLINK(\"http://evil\",\"x\")").await;
    let quoted = named(&app, "O'Brien, \"Zoë\"").await;

    let placed = app
        .gql(
            Some(&hostile.token),
            PLACE_ORDER,
            json!({ "input": { "eventId": event, "promoCode": "tenoff", "lines": [
                { "ticketTypeId": regular, "quantity": 2 },
                { "ticketTypeId": vip, "quantity": 1 } ] } }),
        )
        .await;
    let with_code = placed["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_owned();
    mark_paid(&app, &organizer, &with_code).await;
    let refunded = order(&app, &quoted, &event, &vip, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &refunded).await;
    app.gql_ok(
        Some(&organizer.token),
        REFUND,
        json!({ "id": refunded, "input": { "amount": 2050 } }),
    )
    .await;
    let pending = try_order(&app, &quoted, &event, &regular, 1, json!({})).await;
    assert!(pending.get("errors").is_none(), "{pending}");

    let response = export(&app, &event, Some(&organizer.token)).await;
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.contains("orders.csv"), "{disposition}");
    let body = response.text().await.unwrap();
    assert!(body.starts_with("order_id,created_at,status,"), "{body}");
    let (header, rows) = parse(&body);
    assert_eq!(
        header,
        [
            "order_id",
            "created_at",
            "status",
            "buyer_name",
            "buyer_email",
            "lines",
            "tickets",
            "subtotal",
            "discount",
            "total",
            "refunded",
            "currency",
            "promo_code",
            "provider",
            "payment_reference",
            "paid_at"
        ]
    );
    assert_eq!(rows.len(), 3, "{body}");
    let first = &rows[0];
    assert_eq!(first[0], with_code);
    assert_eq!(first[2], "PAID");
    assert_eq!(first[3], "'=HYPERLINK(\"http://evil\",\"x\")");
    assert_eq!(first[5], "2 × Regular; 1 × =VIP");
    assert_eq!(
        first[6..15],
        [
            "3",
            "130.00",
            "13.00",
            "117.00",
            "0.00",
            "EUR",
            "TENOFF",
            "MANUAL",
            "bank transfer 42"
        ]
    );
    assert!(!first[15].is_empty());
    let second = &rows[1];
    assert_eq!(second[0], refunded);
    assert_eq!(second[2], "PARTIALLY_REFUNDED");
    assert_eq!(second[3], "O'Brien, \"Zoë\"");
    assert_eq!(second[5], "1 × =VIP");
    assert_eq!(second[9..11], ["70.00", "20.50"]);
    assert_eq!(second[12], "");
    let third = &rows[2];
    assert_eq!(third[2], "PENDING_PAYMENT");
    assert_eq!(third[15], "", "never paid");
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
async fn only_the_organizer_and_admins_export_orders_and_a_bad_token_is_401() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let event = event(&app, &organizer, 10).await;
    assert_eq!(export(&app, &event, None).await.status(), 401);
    assert_eq!(export(&app, &event, Some("nope")).await.status(), 401);
    assert_eq!(export(&app, &event, Some(&rival.token)).await.status(), 404);
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        export(&app, &missing, Some(&admin.token)).await.status(),
        404
    );
    let response = export(&app, &event, Some(&admin.token)).await;
    assert_eq!(response.status(), 200);
    let (_, rows) = parse(&response.text().await.unwrap());
    assert!(rows.is_empty());
}

#[tokio::test]
async fn an_orders_export_of_many_pages_lists_every_order_once_in_order() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    // More than two pages of expired orders, made in SQL, many created at the same moment.
    sql(
        &app,
        &format!(
            "INSERT INTO orders (id, event_id, user_id, status, currency, subtotal, discount,
                                 total, expires_at, provider, created_at)
             SELECT gen_random_uuid(), '{event}', '{}', 'EXPIRED', 'JPY', 1500, 0, 1500,
                    now(), 'MANUAL', now() - interval '1 day' + (i % 700) * interval '1 second'
             FROM generate_series(1, 2500) i",
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
    assert_eq!(rows.len(), 2500);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len(), 2500, "an order listed twice");
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[1].as_str(), r[0].as_str()))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "not in order");
    // A currency without a minor unit is written whole.
    assert_eq!(rows[0][7], "1500");
    assert_eq!(rows[0][5], "");
}
