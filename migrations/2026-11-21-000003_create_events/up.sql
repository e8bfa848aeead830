CREATE TABLE events (
    id              uuid PRIMARY KEY,
    organizer_id    uuid NOT NULL REFERENCES users (id),
    title           text NOT NULL,
    description     text,
    category        text NOT NULL,
    venue           text NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    capacity        integer NOT NULL,
    -- Kept in the row (not summed from bookings) so that taking seats is one conditional
    -- UPDATE on one row. Later inventory states (held seats) get their own counter column.
    seats_available integer NOT NULL,
    max_per_booking integer NOT NULL DEFAULT 10,
    status          text NOT NULL DEFAULT 'PUBLISHED',
    -- Bumped by every change to the row; live subscribers use it to drop stale messages.
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_capacity_check CHECK (capacity >= 0),
    CONSTRAINT events_seats_available_check CHECK (seats_available >= 0 AND seats_available <= capacity),
    CONSTRAINT events_max_per_booking_check CHECK (max_per_booking >= 1),
    CONSTRAINT events_time_check CHECK (ends_at >= starts_at),
    CONSTRAINT events_status_check CHECK (status IN ('PUBLISHED', 'CANCELLED')),
    CONSTRAINT events_title_check CHECK (length(title) BETWEEN 1 AND 200),
    CONSTRAINT events_category_check CHECK (length(category) BETWEEN 1 AND 50),
    CONSTRAINT events_venue_check CHECK (length(venue) BETWEEN 1 AND 200)
);

-- The listing order (starts_at, id) is also the keyset-pagination key.
CREATE INDEX events_starts_at_id_idx ON events (starts_at, id);
CREATE INDEX events_category_starts_at_id_idx ON events (category, starts_at, id);
CREATE INDEX events_organizer_id_idx ON events (organizer_id);
