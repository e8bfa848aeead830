//! The schema without a server: built from the library as the HTTP layer builds it, over a
//! database of the test's own and the in-process bus, and called with `schema.execute`. For
//! resolver behaviour that needs no socket (input checks, who may see what, page bounds).

use async_graphql::Request;
use evently::app::{App, AppState};
use evently::db::models::Role;
use evently::graphql::context::{Caller, ViewerCache};
use evently::graphql::{EventlySchema, build_schema, loaders};
use evently::security::deadline::OverHttp;
use serde_json::Value;

use super::app::{TestUser, signed_in_user, test_config};
use super::database::{TestDatabase, fresh_database};

pub struct SchemaTest {
    pub state: AppState,
    pub schema: EventlySchema,
    // Dropped last: the database outlives the app using it.
    _database: TestDatabase,
}

impl SchemaTest {
    pub async fn new() -> Self {
        let database = fresh_database().await;
        let state = App::build(test_config(&database.url, None)).await.unwrap();
        Self {
            schema: build_schema(state.clone()),
            state,
            _database: database,
        }
    }

    /// A user created through the domain layer, signed in.
    pub async fn user(&self, role: Role) -> TestUser {
        signed_in_user(&self.state, role).await
    }

    /// The caller an HTTP request with `user`'s access token stands for.
    pub fn signed_in(&self, user: &TestUser) -> Caller {
        let claims = self.state.tokens.decode(&user.token).unwrap();
        Caller::Token(user.token.clone(), Box::new(claims))
    }

    /// Runs one operation as `caller`, with the context data an HTTP request gets, and returns
    /// the response as JSON (what the HTTP body would hold).
    pub async fn execute(&self, caller: Caller, query: &str, variables: Value) -> Value {
        let mut request = Request::new(query)
            .variables(async_graphql::Variables::from_json(variables))
            .data(caller)
            .data(ViewerCache::default())
            .data(OverHttp);
        loaders::install(&self.state, &mut request.data);
        let response = self.schema.execute(request).await;
        serde_json::to_value(&response).unwrap()
    }

    /// Like `execute`, but insists on success and returns `data`.
    pub async fn execute_ok(&self, caller: Caller, query: &str, variables: Value) -> Value {
        let body = self.execute(caller, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Counts rows matching a SQL condition on a table, for checks that nothing was written.
    pub async fn count(&self, sql: &str) -> i64 {
        use diesel::QueryableByName;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.state.conn().await.unwrap();
        let row: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {sql}"))
            .get_result(&mut conn)
            .await
            .unwrap();
        row.n
    }
}
