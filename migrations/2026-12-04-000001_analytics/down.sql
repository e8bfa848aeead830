DROP INDEX users_created_at_idx;
DROP INDEX bookings_cancelled_at_idx;
DROP INDEX bookings_event_cancelled_idx;
DROP INDEX bookings_created_at_idx;
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
