use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use crate::support::fresh_database;

/// schema.graphql is the published contract; it must be what the code serves. On a mismatch
/// the file is rewritten so the difference shows up in `git diff`.
#[test]
fn schema_graphql_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let sdl = evently::graphql::sdl();
    let saved = std::fs::read_to_string(path).unwrap_or_default();
    if saved != sdl {
        std::fs::write(path, &sdl).unwrap();
        panic!("schema.graphql was out of date and has been rewritten: review and commit it");
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn table_count(url: &str) -> i64 {
    use diesel_async::AsyncConnection;
    let mut conn = diesel_async::AsyncPgConnection::establish(url)
        .await
        .unwrap();
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    row.n
}

#[tokio::test]
async fn migrations_revert_and_reapply_cleanly() {
    let database = fresh_database().await;
    assert_eq!(table_count(&database.url).await, 21);
    let reverted = evently::db::revert_all_migrations(&database.url)
        .await
        .unwrap();
    assert_eq!(reverted, 7);
    assert_eq!(table_count(&database.url).await, 0);
    // Several instances starting at once: the advisory lock lets exactly one apply them.
    let runs =
        futures_util::future::join_all((0..3).map(|_| evently::db::run_migrations(&database.url)))
            .await;
    let applied: usize = runs.into_iter().map(Result::unwrap).sum();
    assert_eq!(applied, 7);
    assert_eq!(table_count(&database.url).await, 21);
}
