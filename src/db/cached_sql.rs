//! Hand-written SQL whose prepared statement is cached per connection, as diesel-async caches
//! the statements its query builder writes.
//!
//! `diesel::sql_query` marks itself unsafe to cache, because its text could differ from one
//! call to the next; so each call prepares its statement anew, which is one more round trip
//! to PostgreSQL (`Parse`/`Describe`, then `Bind`/`Execute`). A fixed text with bound
//! parameters (arrays for lists) is safe to cache: wrap such a query in [`cached`] and the
//! connection keeps its statement, keyed by the text.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// `query` (a `sql_query` with its binds) with its statement cached per connection. Its SQL
/// text must be the same on every call (a literal): the cache is keyed by it.
pub fn cached<Q>(query: Q) -> CachedSql<Q> {
    CachedSql(query)
}

#[derive(Debug, Clone)]
pub struct CachedSql<Q>(Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for CachedSql<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for CachedSql<Q> {
    type QueryId = ();
    // Keyed by its SQL text, not by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for CachedSql<Q> {
    type SqlType = Q::SqlType;
}
