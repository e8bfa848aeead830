//! Revenue in `eventStats`, `salesOverTime`, `organizerStats` and `platformStats`: exact
//! figures after a known sequence (paid orders with a promo code, a partial refund, a full
//! refund, an order left to expire), compared with a plain SQL recount; two currencies across
//! two events; the live figures moving when money moves.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::sql_row;
use crate::commerce::{
    CREATE_PROMO, REFUND, event, mark_paid, order, priced, read_order, run_out_of_time,
    ticket_type, try_order,
};
use crate::support::{TestApp, TestUser, WAIT, eventually};

const REVENUE: &str = "query($id: ID!) { eventStats(eventId: $id) {
    revenue { currency gross discounts refunded net }
    ticketTypes { ticketTypeId name ticketsSold ticketsRefunded currency gross discounts refunded net }
    promoCodes { promoCodeId code uses orders currency gross discounts refunded net } } }";

const SALES: &str = "query($id: ID!, $from: DateTime!, $to: DateTime!) {
    salesOverTime(eventId: $id, interval: DAY, from: $from, to: $to, timeZone: \"Europe/Paris\") {
        start netRevenue { currency amount } } }";

const ORGANIZER: &str = "query($from: DateTime!, $to: DateTime!) {
    organizerStats(from: $from, to: $to) {
        totals { revenue { currency gross discounts refunded net } }
        events { eventId revenue { currency gross discounts refunded net } } } }";

const PLATFORM: &str = "query($from: DateTime!, $to: DateTime!) {
    platformStats(from: $from, to: $to, top: 5) {
        totals { revenue { currency gross net } }
        topEventsByRevenue { currency events { eventId revenue { currency net } } }
        categories { category totals { revenue { currency net } } }
        days { netRevenue { currency amount } } } }";

fn money(currency: &str, gross: i64, discounts: i64, refunded: i64) -> Value {
    json!({
        "currency": currency, "gross": gross, "discounts": discounts,
        "refunded": refunded, "net": gross - discounts - refunded,
    })
}

/// The period around now that every test's orders fall in.
fn period() -> (String, String) {
    let now = chrono::Utc::now();
    (
        (now - chrono::Duration::days(2)).to_rfc3339(),
        (now + chrono::Duration::days(2)).to_rfc3339(),
    )
}

/// An order of lines `(type, quantity)`, with the extra input given, that must succeed.
async fn order_lines(
    app: &TestApp,
    buyer: &TestUser,
    event: &str,
    lines: &[(&str, i32)],
    extra: Value,
) -> String {
    let mut input = json!({
        "eventId": event,
        "lines": lines.iter().map(|(t, q)| json!({ "ticketTypeId": t, "quantity": q })).collect::<Vec<_>>(),
    });
    for (key, value) in extra.as_object().unwrap() {
        input[key] = value.clone();
    }
    let body = app
        .gql(
            Some(&buyer.token),
            crate::commerce::PLACE_ORDER,
            json!({ "input": input }),
        )
        .await;
    assert!(body.get("errors").is_none(), "order refused: {body}");
    body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn refund(app: &TestApp, organizer: &TestUser, order_id: &str, input: Value) -> Value {
    app.gql_ok(
        Some(&organizer.token),
        REFUND,
        json!({ "id": order_id, "input": input }),
    )
    .await["refundOrder"]
        .clone()
}

async fn revenue(app: &TestApp, token: &str, event: &str) -> Value {
    app.gql_ok(Some(token), REVENUE, json!({ "id": event }))
        .await["eventStats"]
        .clone()
}

/// The event's revenue recounted in plain SQL, straight from the definition: paid orders'
/// subtotals and discounts, and their succeeded refunds.
async fn recount(app: &TestApp, event: &str) -> Value {
    sql_row(
        app,
        &format!(
            "SELECT
               (SELECT coalesce(sum(subtotal), 0) FROM orders WHERE event_id = '{event}'
                  AND status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')) AS gross,
               (SELECT coalesce(sum(discount), 0) FROM orders WHERE event_id = '{event}'
                  AND status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')) AS discounts,
               (SELECT coalesce(sum(r.amount), 0) FROM refunds r JOIN orders o ON o.id = r.order_id
                  WHERE o.event_id = '{event}' AND r.status = 'SUCCEEDED'
                    AND o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')) AS refunded"
        ),
    )
    .await
}

/// An organizer's event in EUR with two types and a 10 % code, and the sequence: a paid order
/// with the code (2 Regular + 1 VIP), a paid VIP partly refunded by amount, three paid Regular
/// refunded in full, and an order left to expire. Returns (event, regular, vip, promo id).
async fn known_sequence(app: &TestApp, organizer: &TestUser) -> (String, String, String, String) {
    let event = event(app, organizer, 50).await;
    let regular = priced(app, organizer, &event, "Regular", 3000).await;
    let vip = priced(app, organizer, &event, "VIP", 7000).await;
    let promo = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_PROMO,
            json!({ "eventId": event, "input": { "code": "TENOFF", "discount": "PERCENT", "value": 10 } }),
        )
        .await["createPromoCode"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let buyers: Vec<TestUser> =
        futures_util::future::join_all((0..4).map(|_| app.user(Role::User))).await;

    let with_code = order_lines(
        app,
        &buyers[0],
        &event,
        &[(&regular, 2), (&vip, 1)],
        json!({ "promoCode": "tenoff" }),
    )
    .await;
    assert_eq!(
        mark_paid(app, organizer, &with_code).await["status"],
        "PAID"
    );

    let partial = order(app, &buyers[1], &event, &vip, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(app, organizer, &partial).await;
    let refunded = refund(app, organizer, &partial, json!({ "amount": 2000 })).await;
    assert_eq!(refunded["status"], "PARTIALLY_REFUNDED", "{refunded}");

    let full = order(app, &buyers[2], &event, &regular, 3).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(app, organizer, &full).await;
    let refunded = refund(app, organizer, &full, Value::Null).await;
    assert_eq!(refunded["status"], "REFUNDED", "{refunded}");

    let unpaid = order(app, &buyers[3], &event, &regular, 4).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_out_of_time(app, &unpaid).await;
    eventually(WAIT, || async {
        read_order(app, &buyers[3], &unpaid).await["status"] == "EXPIRED"
    })
    .await;
    (event, regular, vip, promo)
}

#[tokio::test]
async fn revenue_is_exact_after_a_promo_code_a_partial_and_a_full_refund_and_an_expired_order() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let (event, regular, vip, promo) = known_sequence(&app, &organizer).await;

    let stats = revenue(&app, &organizer.token, &event).await;
    // Gross: 13,000 (with the code) + 7,000 + 9,000; the expired order's 12,000 counts nothing.
    // Discount: 10 % of 13,000. Refunded: 2,000 + 9,000.
    assert_eq!(
        stats["revenue"],
        json!([money("EUR", 29_000, 1_300, 11_000)])
    );
    let sql = recount(&app, &event).await;
    let figures = &stats["revenue"][0];
    for field in ["gross", "discounts", "refunded"] {
        assert_eq!(
            figures[field].as_i64(),
            sql[field].as_i64(),
            "{field}: {sql}"
        );
    }

    // Per type: the code's 1,300 shared 600 / 700 by the lines' totals; the full refund is
    // Regular's (three tickets back), the refund by amount VIP's (no ticket back).
    let mut regular_figures = money("EUR", 15_000, 600, 9_000);
    regular_figures["ticketTypeId"] = json!(regular);
    regular_figures["name"] = json!("Regular");
    regular_figures["ticketsSold"] = json!(5);
    regular_figures["ticketsRefunded"] = json!(3);
    let mut vip_figures = money("EUR", 14_000, 700, 2_000);
    vip_figures["ticketTypeId"] = json!(vip);
    vip_figures["name"] = json!("VIP");
    vip_figures["ticketsSold"] = json!(2);
    vip_figures["ticketsRefunded"] = json!(0);
    assert_eq!(stats["ticketTypes"], json!([regular_figures, vip_figures]));

    let mut code = money("EUR", 13_000, 1_300, 0);
    code["promoCodeId"] = json!(promo);
    code["code"] = json!("TENOFF");
    code["uses"] = json!(1);
    code["orders"] = json!(1);
    assert_eq!(stats["promoCodes"], json!([code]));

    // Over time: the buckets' net revenue adds up to the event's net.
    let (from, to) = period();
    let buckets = app
        .gql_ok(
            Some(&organizer.token),
            SALES,
            json!({ "id": event, "from": from, "to": to }),
        )
        .await["salesOverTime"]
        .clone();
    let net: i64 = buckets
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["netRevenue"].as_array().unwrap().clone())
        .map(|m| {
            assert_eq!(m["currency"], "EUR");
            m["amount"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(net, 16_700);
}

#[tokio::test]
async fn an_event_that_sells_but_sold_nothing_shows_zeros_and_one_without_types_shows_none() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let selling = event(&app, &organizer, 10).await;
    priced(&app, &organizer, &selling, "Regular", 3000).await;
    let stats = revenue(&app, &organizer.token, &selling).await;
    assert_eq!(stats["revenue"], json!([money("EUR", 0, 0, 0)]));
    assert_eq!(stats["ticketTypes"][0]["ticketsSold"], 0);
    assert_eq!(stats["ticketTypes"][0]["net"], 0);
    let plain = event(&app, &organizer, 10).await;
    let stats = revenue(&app, &organizer.token, &plain).await;
    assert_eq!(stats["revenue"], json!([]));
    assert_eq!(stats["ticketTypes"], json!([]));
    assert_eq!(stats["promoCodes"], json!([]));
}

#[tokio::test]
async fn organizer_and_platform_totals_keep_two_currencies_apart() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let in_euro = event(&app, &organizer, 20).await;
    let euro = priced(&app, &organizer, &in_euro, "Regular", 2500).await;
    let in_dollars = event(&app, &organizer, 20).await;
    let dollar = ticket_type(
        &app,
        &organizer,
        &in_dollars,
        json!({ "name": "General", "price": { "amount": 4000, "currency": "USD" } }),
    )
    .await;
    // An event of the organizer's that sells in euro but sold nothing.
    let idle = event(&app, &organizer, 20).await;
    priced(&app, &organizer, &idle, "Regular", 1000).await;

    let a = order(&app, &buyer, &in_euro, &euro, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &a).await;
    let b = order(&app, &buyer, &in_dollars, &dollar, 3).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &b).await;
    refund(&app, &organizer, &b, json!({ "amount": 1500 })).await;
    // Placed and never paid: nothing.
    let pending = try_order(&app, &buyer, &in_dollars, &dollar, 1, json!({})).await;
    assert!(pending.get("errors").is_none(), "{pending}");

    let (from, to) = period();
    let stats = app
        .gql_ok(
            Some(&organizer.token),
            ORGANIZER,
            json!({ "from": from, "to": to }),
        )
        .await["organizerStats"]
        .clone();
    let eur = money("EUR", 5_000, 0, 0);
    let usd = money("USD", 12_000, 0, 1_500);
    assert_eq!(stats["totals"]["revenue"], json!([eur, usd]));
    let of = |id: &str| {
        stats["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["eventId"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {stats}"))["revenue"]
            .clone()
    };
    assert_eq!(of(&in_euro), json!([eur]));
    assert_eq!(of(&in_dollars), json!([usd]));
    assert_eq!(of(&idle), json!([money("EUR", 0, 0, 0)]));
    // The same totals as each event's own figures, and as SQL.
    for (id, expected) in [(&in_euro, &eur), (&in_dollars, &usd)] {
        let own = revenue(&app, &organizer.token, id).await;
        assert_eq!(own["revenue"], json!([expected]));
        let sql = recount(&app, id).await;
        assert_eq!(sql["gross"].as_i64(), expected["gross"].as_i64());
        assert_eq!(sql["refunded"].as_i64(), expected["refunded"].as_i64());
    }

    let platform = app
        .gql_ok(
            Some(&admin.token),
            PLATFORM,
            json!({ "from": from, "to": to }),
        )
        .await["platformStats"]
        .clone();
    assert_eq!(
        platform["totals"]["revenue"],
        json!([
            { "currency": "EUR", "gross": 5_000, "net": 5_000 },
            { "currency": "USD", "gross": 12_000, "net": 10_500 },
        ])
    );
    let rankings = platform["topEventsByRevenue"].as_array().unwrap();
    assert_eq!(rankings.len(), 2, "{platform}");
    assert_eq!(rankings[0]["currency"], "EUR");
    // Most first; the idle event is there with zero, not missing.
    let euro_ranking: Vec<&str> = rankings[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(euro_ranking, [in_euro.as_str(), idle.as_str()]);
    assert_eq!(rankings[1]["currency"], "USD");
    assert_eq!(rankings[1]["events"][0]["eventId"], in_dollars.as_str());
    assert_eq!(rankings[1]["events"][0]["revenue"][0]["net"], 10_500);
    let days_net: i64 = platform["days"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["netRevenue"].as_array().unwrap().clone())
        .filter(|m| m["currency"] == "USD")
        .map(|m| m["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(days_net, 10_500);
    let category = &platform["categories"][0]["totals"]["revenue"];
    assert_eq!(
        category,
        &json!([{ "currency": "EUR", "net": 5_000 }, { "currency": "USD", "net": 10_500 }])
    );
}

#[tokio::test]
async fn live_figures_move_when_an_order_is_paid_and_when_money_alone_is_refunded() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 10).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let placed = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let init = json!({ "Authorization": format!("Bearer {}", organizer.token) });
    let mut watcher = app.connect_ws(init).await;
    watcher
        .subscribe(
            "1",
            "subscription($id: ID!) { eventStatsUpdated(eventId: $id) { revenue { net refunded } } }",
            json!({ "id": event }),
        )
        .await;
    let first = watcher.next_data().await;
    assert_eq!(
        first["data"]["eventStatsUpdated"]["revenue"][0]["net"], 0,
        "{first}"
    );
    mark_paid(&app, &organizer, &placed).await;
    let paid = watcher.next_data().await;
    assert_eq!(
        paid["data"]["eventStatsUpdated"]["revenue"][0]["net"], 6000,
        "{paid}"
    );
    // A refund of an amount gives no seat back: the figures move all the same.
    refund(&app, &organizer, &placed, json!({ "amount": 500 })).await;
    let refunded = watcher.next_data().await;
    assert_eq!(
        refunded["data"]["eventStatsUpdated"]["revenue"][0],
        json!({ "net": 5500, "refunded": 500 }),
        "{refunded}"
    );
}
