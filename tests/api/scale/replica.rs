//! Browse reads on a PostgreSQL streaming replica.
