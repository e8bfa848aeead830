//! The audit log of selling: every organizer and admin action on ticket types, quotas, promo
//! codes, payment settings and orders (marking paid, refunds, the refunds of a cancelled
//! event, an admin's cancellation) is recorded with the fields before and after, in the
//! action's transaction: absent when the action fails or rolls back at commit.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::sql;
use crate::commerce::{
    CREATE_PROMO, CREATE_TICKET_TYPE, MARK_PAID, REFUND, event, mark_paid, order, priced, quota,
};
use crate::support::{TestApp, error_code};

const AUDIT: &str = "query($id: ID) { auditLog(eventId: $id, first: 100) {
    edges { node { action subjectType subjectId eventId actorId before after } } } }";

const UPDATE_TYPE: &str = "mutation($id: ID!, $input: UpdateTicketTypeInput!) {
  updateTicketType(id: $id, input: $input) { id } }";

const SETTINGS: &str = "mutation($id: ID!, $input: PaymentSettingsInput!) {
  updatePaymentSettings(eventId: $id, input: $input) { paymentProvider } }";

/// The event's entries, oldest first.
async fn log(app: &TestApp, token: &str, event: &str) -> Vec<Value> {
    let data = app.gql_ok(Some(token), AUDIT, json!({ "id": event })).await;
    let mut entries: Vec<Value> = data["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect();
    entries.reverse();
    entries
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_commerce_action_of_organizers_and_admins_is_recorded_with_before_and_after() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 20).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    app.gql_ok(
        Some(&organizer.token),
        UPDATE_TYPE,
        json!({ "id": regular, "input": { "price": { "amount": 3500, "currency": "EUR" } } }),
    )
    .await;
    let shared = quota(&app, &organizer, &event, 15, &[&regular]).await;
    let promo = app
        .gql_ok(
            Some(&organizer.token),
            CREATE_PROMO,
            json!({ "eventId": event, "input": { "code": "FIVE", "discount": "FIXED", "value": 500 } }),
        )
        .await["createPromoCode"]["id"]
        .clone();
    app.gql_ok(
        Some(&organizer.token),
        SETTINGS,
        json!({ "id": event, "input": { "paymentWindowDays": 7 } }),
    )
    .await;
    let first = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &first).await;
    app.gql_ok(
        Some(&organizer.token),
        REFUND,
        json!({ "id": first, "input": { "amount": 1000, "reason": "late start" } }),
    )
    .await;
    let second = order(&app, &buyer, &event, &regular, 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    mark_paid(&app, &organizer, &second).await;
    app.gql_ok(
        Some(&admin.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": event }),
    )
    .await;

    let entries = log(&app, &organizer.token, &event).await;
    let mut expected = vec![
        "event.create",
        "ticket_type.create",
        "ticket_type.update",
        "quota.create",
        "promo_code.create",
        "event.payment_settings",
        "order.mark_paid",
        "order.refund",
        "order.mark_paid",
    ];
    // The cancellation refunds both paid orders (one entry each), then cancels the event.
    expected.extend(["order.refund", "order.refund", "event.cancel"]);
    assert_eq!(actions(&entries), expected);
    let entry = |i: usize| &entries[i];

    assert_eq!(entry(1)["subjectType"], "ticket_type");
    assert_eq!(entry(1)["subjectId"], regular.as_str());
    assert_eq!(entry(1)["before"], Value::Null);
    assert_eq!(entry(1)["after"]["priceAmount"], 3000);
    assert_eq!(entry(1)["after"]["currency"], "EUR");
    assert_eq!(entry(2)["before"], json!({ "priceAmount": 3000 }));
    assert_eq!(entry(2)["after"], json!({ "priceAmount": 3500 }));
    assert_eq!(entry(3)["subjectId"], shared.as_str());
    assert_eq!(
        entry(3)["after"],
        json!({ "name": "Shared", "size": 15, "ticketTypeIds": [regular] })
    );
    assert_eq!(entry(4)["subjectId"], promo);
    assert_eq!(entry(4)["after"]["code"], "FIVE");
    assert_eq!(entry(4)["after"]["value"], 500);
    assert_eq!(entry(5)["before"], json!({ "paymentWindowDays": 3 }));
    assert_eq!(entry(5)["after"], json!({ "paymentWindowDays": 7 }));

    let paid = entry(6);
    assert_eq!(paid["subjectType"], "order");
    assert_eq!(paid["subjectId"], first.as_str());
    assert_eq!(paid["actorId"], organizer.id.to_string());
    assert_eq!(
        paid["before"],
        json!({ "status": "PENDING_PAYMENT", "amountPaid": 0, "paymentReference": null })
    );
    assert_eq!(
        paid["after"],
        json!({ "status": "PAID", "amountPaid": 7000, "paymentReference": "bank transfer 42" })
    );
    let refund = entry(7);
    assert_eq!(refund["before"]["refund"], Value::Null);
    assert_eq!(refund["after"]["refund"]["amount"], 1000);
    assert_eq!(refund["after"]["refund"]["reason"], "late start");
    assert_eq!(refund["after"]["refund"]["status"], "PENDING");

    // The cancellation's refunds: by the admin, what was left of each payment.
    let cancelled: Vec<&Value> = entries[9..11].iter().collect();
    let mut refunded: Vec<(String, i64)> = cancelled
        .iter()
        .map(|e| {
            assert_eq!(e["actorId"], admin.id.to_string());
            assert_eq!(e["after"]["refund"]["reason"], "the event was cancelled");
            (
                e["subjectId"].as_str().unwrap().to_owned(),
                e["after"]["refund"]["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    refunded.sort();
    let mut expected = vec![(first.clone(), 6000), (second.clone(), 3500)];
    expected.sort();
    assert_eq!(refunded, expected);
}

#[tokio::test]
async fn a_commerce_entry_is_absent_when_its_action_fails_or_rolls_back_at_commit() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let buyer = app.user(Role::User).await;
    let event = event(&app, &organizer, 20).await;
    let regular = priced(&app, &organizer, &event, "Regular", 3000).await;
    let placed = order(&app, &buyer, &event, &regular, 2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Refused before anything is written: someone else's event, a refund of an unpaid order,
    // a quantity below what is held.
    let refused = app
        .gql(
            Some(&rival.token),
            CREATE_TICKET_TYPE,
            json!({ "eventId": event, "input": { "name": "Mine", "price": { "amount": 1, "currency": "EUR" } } }),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    let refused = app
        .gql(Some(&organizer.token), REFUND, json!({ "id": placed }))
        .await;
    assert!(refused.get("errors").is_some(), "{refused}");
    let refused = app
        .gql(
            Some(&organizer.token),
            UPDATE_TYPE,
            json!({ "id": regular, "input": { "quantity": 1 } }),
        )
        .await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    // A duplicate code fails at its INSERT, after the checks: rolled back as a whole.
    for _ in 0..2 {
        app.gql(
            Some(&organizer.token),
            CREATE_PROMO,
            json!({ "eventId": event, "input": { "code": "ONCE", "discount": "PERCENT", "value": 5 } }),
        )
        .await;
    }

    // Fails at COMMIT, after the command wrote its entry: a deferred check on the order.
    sql(
        &app,
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.payment_reference = 'boom' THEN RAISE EXCEPTION 'no boom'; END IF;
         RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER refuse_boom AFTER UPDATE ON orders
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
    )
    .await
    .unwrap();
    let failed = app
        .gql(
            Some(&organizer.token),
            MARK_PAID,
            json!({ "id": placed, "reference": "boom" }),
        )
        .await;
    assert_eq!(error_code(&failed), "INTERNAL_SERVER_ERROR", "{failed}");
    assert_eq!(
        actions(&log(&app, &organizer.token, &event).await),
        ["event.create", "ticket_type.create", "promo_code.create"]
    );
    // The same action that commits keeps its entry.
    app.gql_ok(
        Some(&organizer.token),
        MARK_PAID,
        json!({ "id": placed, "reference": "fine" }),
    )
    .await;
    let entries = log(&app, &organizer.token, &event).await;
    assert_eq!(entries.last().unwrap()["action"], "order.mark_paid");
    assert_eq!(entries.last().unwrap()["after"]["paymentReference"], "fine");
}
