//! Selling tickets for money: ticket types and quotas, orders, promo codes, manual payments,
//! late payments, refunds, and the races between them, with the money invariants checked in
//! SQL after each.

mod batches;
mod catalog;
mod orders;
mod races;
mod refunds;
mod sections;
mod stripe;
mod waitlist;

use serde_json::{Value, json};

use crate::support::{TestApp, TestUser, event_input};

pub const CREATE_TICKET_TYPE: &str = "mutation($eventId: ID!, $input: CreateTicketTypeInput!) {
  createTicketType(eventId: $eventId, input: $input) {
    id name price { amount currency } quantity hidden sold available } }";

pub const CREATE_QUOTA: &str =
    "mutation($eventId: ID!, $name: String!, $size: Int!, $types: [ID!]!) {
  createQuota(eventId: $eventId, name: $name, size: $size, ticketTypeIds: $types) {
    id size available held sold } }";

pub const CREATE_PROMO: &str = "mutation($eventId: ID!, $input: CreatePromoCodeInput!) {
  createPromoCode(eventId: $eventId, input: $input) { id code uses maxUses } }";

pub const PLACE_ORDER: &str = "mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) {
    id status expiresAt reason version
    subtotal { amount currency } discount { amount } total { amount currency }
    lines { id quantity unitPrice { amount } total { amount } ticketType { id name } }
    payment { provider status clientSecret }
    tickets { id code status seat { id } ticketType { id } } } }";

pub const ORDER: &str = "query($id: ID!) { order(id: $id) {
    id status reason version total { amount } expiresAt
    payment { status amountPaid { amount } amountRefunded { amount } reference }
    lines { id quantity refunded }
    tickets { id code status }
    refunds { id amount { amount } status } } }";

pub const MARK_PAID: &str = "mutation($id: ID!, $reference: String) {
  markOrderPaid(orderId: $id, reference: $reference) {
    id status reason payment { amountPaid { amount } amountRefunded { amount } reference }
    tickets { id code status } } }";

pub const REFUND: &str = "mutation($id: ID!, $input: RefundOrderInput) {
  refundOrder(orderId: $id, input: $input) {
    id status payment { amountPaid { amount } amountRefunded { amount } }
    lines { id refunded } tickets { status } refunds { amount { amount } status } } }";

pub const CANCEL_ORDER: &str = "mutation($id: ID!) { cancelOrder(id: $id) {
    id status payment { amountRefunded { amount } } tickets { status } } }";

pub const TICKET_TYPES: &str = "query($id: ID!, $code: String) { event(id: $id) {
    currency seatsAvailable ticketTypes(accessCode: $code) { id name hidden sold available } } }";

/// A price in euro cents.
pub fn eur(cents: i64) -> Value {
    json!({ "amount": cents, "currency": "EUR" })
}

/// An organizer's upcoming event of `capacity` seats.
pub async fn event(app: &TestApp, organizer: &TestUser, capacity: i32) -> String {
    app.create_event(organizer, event_input("Paid Concert", capacity))
        .await
        .0
}

/// `createTicketType`, which must succeed: the type's id.
pub async fn ticket_type(app: &TestApp, organizer: &TestUser, event: &str, input: Value) -> String {
    let data = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": event, "input": input }),
        )
        .await;
    data["createTicketType"]["id"].as_str().unwrap().to_owned()
}

/// A ticket type named `name` at `cents` euro cents, with no limit of its own.
pub async fn priced(
    app: &TestApp,
    organizer: &TestUser,
    event: &str,
    name: &str,
    cents: i64,
) -> String {
    ticket_type(
        app,
        organizer,
        event,
        json!({ "name": name, "price": eur(cents) }),
    )
    .await
}

pub async fn quota(
    app: &TestApp,
    organizer: &TestUser,
    event: &str,
    size: i32,
    types: &[&str],
) -> String {
    let data = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_QUOTA,
            json!({ "eventId": event, "name": "Shared", "size": size, "types": types }),
        )
        .await;
    data["createQuota"]["id"].as_str().unwrap().to_owned()
}

/// `placeOrder` of `quantity` tickets of one type: the whole answer.
pub async fn try_order(
    app: &TestApp,
    buyer: &TestUser,
    event: &str,
    ticket_type: &str,
    quantity: i32,
    extra: Value,
) -> Value {
    let mut input = json!({
        "eventId": event,
        "lines": [{ "ticketTypeId": ticket_type, "quantity": quantity }],
    });
    for (key, value) in extra.as_object().unwrap() {
        input[key] = value.clone();
    }
    app.gql(Some(&buyer.token), PLACE_ORDER, json!({ "input": input }))
        .await
}

/// `placeOrder` that must succeed: the order.
pub async fn order(
    app: &TestApp,
    buyer: &TestUser,
    event: &str,
    ticket_type: &str,
    quantity: i32,
) -> Value {
    let body = try_order(app, buyer, event, ticket_type, quantity, json!({})).await;
    assert!(body.get("errors").is_none(), "order refused: {body}");
    body["data"]["placeOrder"].clone()
}

pub async fn mark_paid(app: &TestApp, organizer: &TestUser, order_id: &str) -> Value {
    app.gql_ok(
        Some(&organizer.token),
        MARK_PAID,
        json!({ "id": order_id, "reference": "bank transfer 42" }),
    )
    .await["markOrderPaid"]
        .clone()
}

pub async fn read_order(app: &TestApp, user: &TestUser, order_id: &str) -> Value {
    app.gql_ok(Some(&user.token), ORDER, json!({ "id": order_id }))
        .await["order"]
        .clone()
}

/// The `extensions.reason` of the first error.
pub fn reason(body: &Value) -> &str {
    body["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason in {body}"))
}

/// Runs a statement against the test database (how tests move a hold's clock).
pub async fn execute(app: &TestApp, sql: &str) -> usize {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap()
}

/// Moves an order's hold into the past, as if the buyer's time had run out.
pub async fn run_out_of_time(app: &TestApp, order_id: &str) {
    let sql = format!(
        "UPDATE holds SET expires_at = now() - interval '1 second'
         WHERE id = (SELECT hold_id FROM orders WHERE id = '{order_id}')"
    );
    assert_eq!(execute(app, &sql).await, 1);
}

/// The money invariants, in SQL, over every order, ticket, promo code, ticket type and quota
/// (and the seat invariant of every event):
/// - total = subtotal − discount ≥ 0;
/// - what was captured less what was refunded is what the buyer paid: refunded = the sum of
///   succeeded refunds; a paid order captured its total; an order never paid captured nothing,
///   and one whose payment came too late is refunded (or being refunded) in full;
/// - a paid order has exactly one VALID ticket per seat of its unrefunded lines, and no VALID
///   ticket belongs to anything but a paid order;
/// - a promo code's uses are the orders that hold them, never more than `maxUses`;
/// - each ticket type's and quota's counters are the lines they count, and available + held +
///   sold = size.
pub async fn assert_money_invariants(app: &TestApp) {
    app.assert_invariant().await;
    let checks: &[(&str, &str)] = &[
        ("orders WHERE total <> subtotal - discount OR total < 0", "total = subtotal - discount >= 0"),
        (
            "orders o WHERE amount_refunded <> COALESCE((SELECT SUM(amount) FROM refunds r
               WHERE r.order_id = o.id AND r.status = 'SUCCEEDED'), 0)",
            "refunded = the succeeded refunds",
        ),
        (
            "orders WHERE status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED') AND paid_at IS NOT NULL
               AND amount_paid <> total",
            "a paid order captured its total",
        ),
        (
            "orders WHERE status = 'PENDING_PAYMENT' AND amount_paid <> 0",
            "a pending order captured nothing",
        ),
        (
            "orders o WHERE paid_at IS NULL AND amount_paid > 0 AND amount_paid <> amount_refunded
               + COALESCE((SELECT SUM(amount) FROM refunds r
                           WHERE r.order_id = o.id AND r.status = 'PENDING'), 0)",
            "a late payment whose seats were gone is refunded in full",
        ),
        (
            "orders o WHERE status IN ('PAID', 'PARTIALLY_REFUNDED')
               AND (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.status = 'VALID')
                 <> COALESCE((SELECT SUM(quantity) FROM order_lines l
                              WHERE l.order_id = o.id AND l.refund_id IS NULL), 0)",
            "a paid order has exactly its tickets",
        ),
        (
            "tickets t JOIN orders o ON o.id = t.order_id
               WHERE t.status = 'VALID' AND o.status NOT IN ('PAID', 'PARTIALLY_REFUNDED')",
            "no valid ticket without a paid order",
        ),
        (
            "promo_codes p WHERE uses > COALESCE(max_uses, uses) OR uses <> (SELECT count(*)
               FROM orders o WHERE o.promo_code_id = p.id
                 AND (o.status = 'PENDING_PAYMENT' OR o.paid_at IS NOT NULL))",
            "promo uses are the orders holding them, within maxUses",
        ),
        (
            "ticket_types t WHERE held <> COALESCE((SELECT SUM(l.quantity) FROM order_lines l
                 JOIN orders o ON o.id = l.order_id
                 WHERE l.ticket_type_id = t.id AND o.status = 'PENDING_PAYMENT'), 0)
               OR sold <> COALESCE((SELECT SUM(l.quantity) FROM order_lines l
                 WHERE l.ticket_type_id = t.id AND l.booking_id IS NOT NULL
                   AND l.refund_id IS NULL), 0)",
            "ticket type counters are their lines",
        ),
        (
            "quotas q WHERE available + held + sold <> size
               OR held <> COALESCE((SELECT SUM(t.held) FROM ticket_types t
                 JOIN quota_ticket_types m ON m.ticket_type_id = t.id WHERE m.quota_id = q.id), 0)
               OR sold <> COALESCE((SELECT SUM(t.sold) FROM ticket_types t
                 JOIN quota_ticket_types m ON m.ticket_type_id = t.id WHERE m.quota_id = q.id), 0)",
            "quota counters are their types' and sum to their size",
        ),
    ];
    for (rows, what) in checks {
        let broken = app.count(rows).await;
        assert_eq!(broken, 0, "money invariant broken ({what}): {broken} rows");
    }
}
