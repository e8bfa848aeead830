//! Analytics (issue 16): figures compared with plain SQL recounts after known sequences,
//! time-zone buckets, the audit log, the CSV export and the live figures.

mod audit;
mod commerce_audit;
mod dashboard;
mod exports;
mod live;
mod orders_export;
mod revenue;
mod stats;

use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use serde_json::Value;

use crate::support::TestApp;

/// The rows of a query as JSON objects, for recounts the tests write in plain SQL.
pub async fn sql_rows(app: &TestApp, sql: &str) -> Vec<Value> {
    #[derive(QueryableByName)]
    struct Json {
        #[diesel(sql_type = diesel::sql_types::Text)]
        rows: String,
    }
    let json: Json = diesel::sql_query(format!(
        "SELECT coalesce(json_agg(t), '[]')::text AS rows FROM ({sql}) t"
    ))
    .get_result(&mut app.db().await)
    .await
    .unwrap();
    serde_json::from_str::<Vec<Value>>(&json.rows).unwrap()
}

/// The one row of a query, as JSON.
pub async fn sql_row(app: &TestApp, sql: &str) -> Value {
    let mut rows = sql_rows(app, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.remove(0)
}

/// Runs SQL statements directly (to backdate rows, or to try what the API cannot).
pub async fn sql(app: &TestApp, statements: &str) -> Result<(), diesel::result::Error> {
    app.db().await.batch_execute(statements).await
}
