//! Which operations may run: automatic persisted queries, allow-list mode, the production
//! settings that hide the schema, and the depth and complexity limits introspection passes.

use super::*;

#[tokio::test]
async fn automatic_persisted_queries_follow_apollos_protocol_across_instances() {
    let first = TestApp::spawn().await;
    let second = first.spawn_peer().await;
    let query = "{ events(first: 3) { edges { cursor } } }";
    let by_hash = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(query) } } });
    let (status, body) = first.post_json(&by_hash, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (200, "PERSISTED_QUERY_NOT_FOUND")
    );
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");

    let mut with_query = by_hash.clone();
    with_query["query"] = json!(query);
    let (_, registered) = first.post_json(&with_query, None).await;
    assert_eq!(
        registered["data"]["events"]["edges"],
        json!([]),
        "{registered}"
    );
    // Registered through Redis, so the other instance knows it too.
    let (_, replayed) = second.post_json(&by_hash, None).await;
    assert_eq!(replayed, registered);

    // Only queries that parse and validate are kept.
    let invalid = "{ nope }";
    let persisted = json!({ "version": 1, "sha256Hash": sha256(invalid) });
    let (_, body) = first
        .post_json(
            &json!({ "query": invalid, "extensions": { "persistedQuery": persisted } }),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    let (_, body) = first
        .post_json(
            &json!({ "extensions": { "persistedQuery": persisted } }),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn allow_list_mode_runs_only_registered_operations() {
    let allowed = "query Upcoming { events(first: 2) { edges { cursor } } }";
    let path = allow_list(&[allowed]);
    let app =
        TestApp::spawn_with(|c| c.graphql.persisted_query_allowlist = Some(path.clone())).await;

    let hash_only = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(allowed) } } });
    let (_, body) = app.post_json(&hash_only, None).await;
    assert!(body["data"]["events"]["edges"].is_array(), "{body}");
    let (_, body) = app.post_json(&json!({ "query": allowed }), None).await;
    assert!(body["data"]["events"]["edges"].is_array(), "{body}");
    for refused in [
        json!({ "query": "{ __typename }" }),
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256("{ __typename }") } } }),
        json!({ "query": "{ __typename }", "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256("{ __typename }") } } }),
    ] {
        let (status, body) = app.post_json(&refused, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (200, "PERSISTED_QUERY_NOT_ALLOWED"),
            "{refused}"
        );
    }

    // A file whose hash does not match its query is refused at start-up.
    std::fs::write(&path, json!({ sha256("{ a }"): "{ b }" }).to_string()).unwrap();
    let error = evently::security::persisted::load_allowlist(&path).unwrap_err();
    assert!(error.to_string().contains("not the SHA-256"), "{error}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn production_settings_hide_the_schema() {
    let production = TestApp::spawn_with(|c| {
        c.graphql.introspection = false;
        c.graphql.suggestions = false;
    })
    .await;
    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"User\") { fields { name } } }",
    ] {
        let body = production.gql(None, query, json!({})).await;
        assert_eq!(error_code(&body), "INTROSPECTION_DISABLED", "{body}");
    }
    let typo = production
        .gql(None, "{ evnts { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(error_code(&typo), "GRAPHQL_VALIDATION_FAILED");
    assert!(!typo.to_string().contains("Did you mean"), "{typo}");
    // __typename is not introspection and keeps working (clients rely on it).
    production.gql_ok(None, "{ __typename }", json!({})).await;

    let development = TestApp::spawn_without_redis().await;
    let schema = development
        .gql_ok(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    let typo = development
        .gql(None, "{ evnts { edges { cursor } } }", json!({}))
        .await;
    assert!(typo.to_string().contains("Did you mean"), "{typo}");
}

/// graphql-js's `getIntrospectionQuery()`, which GraphiQL sends to draw its docs: deep (its
/// `TypeRef` fragment nests `ofType` eight times) but harmless, so depth is not counted inside
/// introspection, as in GraphQL Armor.
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    description
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) {
    name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

#[tokio::test]
async fn graphiqls_introspection_passes_the_default_limits_but_deep_queries_do_not() {
    let app = TestApp::spawn_without_redis().await;
    let schema = app.gql_ok(None, INTROSPECTION_QUERY, json!({})).await;
    let types = schema["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Booking"));

    // Depth still counts everywhere else, through fragments and inline fragments too.
    let deep = TestApp::spawn_with(|c| c.graphql.max_depth = 4).await;
    let user = deep.user(Role::User).await;
    for query in [
        "{ myBookings { edges { node { event { title } } } } }",
        "{ myBookings { edges { ...E } } } fragment E on BookingEdge { node { event { title } } }",
        "{ myBookings { edges { ... on BookingEdge { node { event { title } } } } } }",
    ] {
        let body = deep.gql(Some(&user.token), query, json!({})).await;
        assert_eq!(error_code(&body), "QUERY_TOO_DEEP", "{query}: {body}");
    }
    deep.gql_ok(
        Some(&user.token),
        "{ myBookings { edges { node { id } } } }",
        json!({}),
    )
    .await;
}
