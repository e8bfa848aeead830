DROP TABLE rsvps;
DROP TABLE waitlist_entries;
DROP TABLE seat_claims;
DROP TABLE holds;
DROP INDEX events_ends_at_published_idx;
DROP INDEX events_venue_id_idx;
UPDATE events SET status = 'PUBLISHED' WHERE status IN ('DRAFT', 'COMPLETED');
UPDATE events SET seats_available = seats_available + seats_held;
ALTER TABLE events
    DROP CONSTRAINT events_seats_check,
    DROP CONSTRAINT events_status_check,
    DROP COLUMN seats_held,
    DROP COLUMN venue_id,
    DROP COLUMN free,
    DROP COLUMN sales_start_at,
    DROP COLUMN sales_end_at,
    DROP COLUMN max_per_user,
    DROP COLUMN hold_minutes,
    DROP COLUMN offer_minutes,
    ADD CONSTRAINT events_seats_available_check CHECK (seats_available >= 0 AND seats_available <= capacity),
    ADD CONSTRAINT events_status_check CHECK (status IN ('PUBLISHED', 'CANCELLED'));
DROP TABLE venue_seats;
DROP TABLE venues;
