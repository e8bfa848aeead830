//! The audit log: each organizer and admin action writes its entry in its own transaction
//! (committed with it, rolled back with it), entries cannot be changed even in SQL, and who
//! reads which entries.

use evently::db::models::Role;
use serde_json::{Value, json};

use super::{sql, sql_row};
use crate::support::operations::SET_ROLE;
use crate::support::{TestApp, error_code, event_input, merged};

const AUDIT: &str = "query($id: ID, $first: Int, $after: String) { auditLog(eventId: $id, first: $first, after: $after) {
    totalCount edges { cursor node { action subjectType subjectId eventId actorId actor { id } before after at } }
    pageInfo { hasNextPage endCursor } } }";

async fn entries(app: &TestApp, token: &str, event: Option<&str>) -> Vec<Value> {
    let data = app
        .gql_ok(Some(token), AUDIT, json!({ "id": event, "first": 100 }))
        .await;
    data["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

#[tokio::test]
async fn each_organizer_and_admin_action_is_recorded_with_the_fields_it_changed() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let admin = app.user(Role::Admin).await;
    let user = app.user(Role::User).await;
    let event = app
        .create_event(
            &organizer,
            merged(event_input("Draft night", 10), json!({ "status": "DRAFT" })),
        )
        .await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { updateEvent(id: $id, input: { title: \"Jazz night\", capacity: 12 }) { id } }",
        json!({ "id": event }),
    )
    .await;
    app.gql_ok(
        Some(&organizer.token),
        "mutation($id: ID!) { publishEvent(id: $id) { id } }",
        json!({ "id": event }),
    )
    .await;
    app.gql_ok(
        Some(&admin.token),
        "mutation($id: ID!) { cancelEvent(id: $id) { id } }",
        json!({ "id": event }),
    )
    .await;
    app.gql_ok(
        Some(&admin.token),
        SET_ROLE,
        json!({ "id": user.id.to_string(), "role": "ORGANIZER" }),
    )
    .await;
    app.gql_ok(
        Some(&admin.token),
        "mutation($id: ID!) { revokeUserSessions(userId: $id) }",
        json!({ "id": user.id.to_string() }),
    )
    .await;

    let log = entries(&app, &organizer.token, Some(&event)).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "event.cancel",
            "event.publish",
            "event.update",
            "event.create"
        ]
    );
    let (cancel, publish, update, create) = (&log[0], &log[1], &log[2], &log[3]);
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"]["title"], "Draft night");
    assert_eq!(create["after"]["status"], "DRAFT");
    assert_eq!(create["actorId"], organizer.id.to_string());
    assert_eq!(
        update["before"],
        json!({ "title": "Draft night", "capacity": 10 })
    );
    assert_eq!(
        update["after"],
        json!({ "title": "Jazz night", "capacity": 12 })
    );
    assert_eq!(publish["after"], json!({ "status": "PUBLISHED" }));
    assert_eq!(cancel["before"], json!({ "status": "PUBLISHED" }));
    assert_eq!(cancel["after"], json!({ "status": "CANCELLED" }));
    assert_eq!(cancel["actor"]["id"], admin.id.to_string());
    assert_eq!(cancel["subjectType"], "event");
    assert_eq!(cancel["eventId"], event.as_str());

    // The platform's log (admins) holds the user actions too, newest first.
    let all = entries(&app, &admin.token, None).await;
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["action"], "user.revoke_sessions");
    assert_eq!(all[0]["subjectId"], user.id.to_string());
    assert_eq!(all[1]["action"], "user.set_role");
    assert_eq!(all[1]["before"], json!({ "role": "USER" }));
    assert_eq!(all[1]["after"], json!({ "role": "ORGANIZER" }));
    let recount = sql_row(&app, "SELECT count(*) AS n FROM audit_log").await;
    assert_eq!(recount["n"], 6);

    // Pages follow one another without gaps or repeats.
    let first = app
        .gql_ok(Some(&admin.token), AUDIT, json!({ "first": 4 }))
        .await;
    assert_eq!(first["auditLog"]["totalCount"], 6);
    assert_eq!(first["auditLog"]["pageInfo"]["hasNextPage"], true);
    let after = first["auditLog"]["pageInfo"]["endCursor"].clone();
    let second = app
        .gql_ok(
            Some(&admin.token),
            AUDIT,
            json!({ "first": 4, "after": after }),
        )
        .await;
    let rest: Vec<&str> = second["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["event.update", "event.create"]);
}

#[tokio::test]
async fn an_entry_is_rolled_back_with_an_action_that_fails_at_commit() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let event = app.event(&organizer, 10).await;
    // A deferred check that fails at COMMIT, after the command wrote its audit entry: the
    // action fails as a whole, so its entry must not survive it.
    sql(
        &app,
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.title = 'boom' THEN RAISE EXCEPTION 'no boom'; END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER refuse_boom AFTER UPDATE ON events
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
    )
    .await
    .unwrap();
    const RENAME: &str =
        "mutation($id: ID!, $t: String!) { updateEvent(id: $id, input: { title: $t }) { title } }";
    let failed = app
        .gql(
            Some(&organizer.token),
            RENAME,
            json!({ "id": event, "t": "boom" }),
        )
        .await;
    assert_eq!(error_code(&failed), "INTERNAL_SERVER_ERROR", "{failed}");
    let log = entries(&app, &organizer.token, Some(&event)).await;
    assert_eq!(
        log.iter().map(|e| e["action"].clone()).collect::<Vec<_>>(),
        [json!("event.create")]
    );
    assert_eq!(
        sql_row(
            &app,
            &format!("SELECT title FROM events WHERE id = '{event}'")
        )
        .await["title"],
        "Test Event"
    );
    // And the same action that commits keeps its entry.
    app.gql_ok(
        Some(&organizer.token),
        RENAME,
        json!({ "id": event, "t": "fine" }),
    )
    .await;
    let log = entries(&app, &organizer.token, Some(&event)).await;
    assert_eq!(log[0]["action"], "event.update");
    assert_eq!(log[0]["after"], json!({ "title": "fine" }));
}

#[tokio::test]
async fn entries_cannot_be_changed_or_deleted_even_in_sql() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    app.event(&organizer, 10).await;
    for statement in [
        "UPDATE audit_log SET action = 'event.nothing'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let refused = sql(&app, statement).await.expect_err(statement);
        assert!(
            refused.to_string().contains("append-only"),
            "{statement}: {refused}"
        );
    }
    assert_eq!(
        sql_row(
            &app,
            "SELECT count(*) AS n, min(action) AS a FROM audit_log"
        )
        .await,
        json!({ "n": 1, "a": "event.create" })
    );
    // Nor is there a mutation that could.
    let sdl = evently::graphql::sdl();
    let mutation = sdl
        .split("type Mutation {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    assert!(!mutation.to_lowercase().contains("audit"), "{mutation}");
}

#[tokio::test]
async fn only_the_organizer_and_admins_read_an_events_log_and_only_admins_the_platforms() {
    let app = TestApp::spawn().await;
    let organizer = app.user(Role::Organizer).await;
    let rival = app.user(Role::Organizer).await;
    let user = app.user(Role::User).await;
    let admin = app.user(Role::Admin).await;
    let event = app.event(&organizer, 10).await;
    let draft = app
        .create_event(
            &organizer,
            merged(event_input("Secret", 5), json!({ "status": "DRAFT" })),
        )
        .await;
    let code = |token: Option<&str>, id: Option<&str>| {
        let (app, token, id) = (&app, token.map(str::to_owned), id.map(str::to_owned));
        async move {
            error_code(&app.gql(token.as_deref(), AUDIT, json!({ "id": id })).await).to_owned()
        }
    };
    assert_eq!(code(None, Some(&event)).await, "UNAUTHENTICATED");
    assert_eq!(code(Some(&user.token), Some(&event)).await, "FORBIDDEN");
    assert_eq!(code(Some(&rival.token), Some(&event)).await, "FORBIDDEN");
    assert_eq!(code(Some(&rival.token), Some(&draft)).await, "NOT_FOUND");
    assert_eq!(code(Some(&organizer.token), None).await, "FORBIDDEN");
    assert_eq!(entries(&app, &admin.token, Some(&event)).await.len(), 1);
    assert_eq!(entries(&app, &admin.token, None).await.len(), 2);
}
