-- The audit log: every organizer and admin action, written in the transaction of the action
-- (so it commits or rolls back with it). Only `changes` that differ are kept, as JSONB
-- objects of the fields before and after.
CREATE TABLE audit_log (
    id         uuid PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    -- Who did it; no foreign key, so the record outlives anything it names.
    actor_id   uuid NOT NULL,
    action     text NOT NULL,
    subject_type text NOT NULL,
    subject_id uuid NOT NULL,
    -- The event it concerns, when it concerns one (its organizer reads it).
    event_id   uuid,
    before     jsonb,
    after      jsonb,
    CONSTRAINT audit_log_action_check CHECK (length(action) BETWEEN 1 AND 100),
    CONSTRAINT audit_log_subject_type_check CHECK (length(subject_type) BETWEEN 1 AND 50)
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_event_at_idx ON audit_log (event_id, at DESC, id DESC) WHERE event_id IS NOT NULL;

-- Nobody changes history, the application's own role included (it owns the table, so a
-- REVOKE would not bind it): a trigger refuses every UPDATE, DELETE and TRUNCATE. Only a
-- superuser disabling the trigger on purpose gets past it.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Analytics read the committed rows (exact when read). These indexes keep the windowed
-- reads off full scans: sales by time across the platform, cancellations by time, and new
-- users by day.
CREATE INDEX bookings_created_at_idx ON bookings (created_at);
CREATE INDEX bookings_event_cancelled_idx ON bookings (event_id, cancelled_at) WHERE cancelled_at IS NOT NULL;
CREATE INDEX bookings_cancelled_at_idx ON bookings (cancelled_at) WHERE cancelled_at IS NOT NULL;
CREATE INDEX users_created_at_idx ON users (created_at);
