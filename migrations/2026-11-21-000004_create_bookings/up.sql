CREATE TABLE bookings (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id),
    user_id         uuid NOT NULL REFERENCES users (id),
    quantity        integer NOT NULL,
    status          text NOT NULL DEFAULT 'CONFIRMED',
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    cancelled_at    timestamptz,
    CONSTRAINT bookings_quantity_check CHECK (quantity > 0),
    CONSTRAINT bookings_status_check CHECK (status IN ('CONFIRMED', 'CANCELLED')),
    CONSTRAINT bookings_cancelled_at_check CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL)),
    CONSTRAINT bookings_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    -- NULL keys are distinct, so only keyed requests are deduplicated. Concurrent retries
    -- meet here, in the index, rather than in a check-then-insert race.
    CONSTRAINT bookings_user_idempotency_key UNIQUE (user_id, idempotency_key)
);

-- Both listings are newest first and paginate on (created_at, id).
CREATE INDEX bookings_user_created_idx ON bookings (user_id, created_at DESC, id DESC);
CREATE INDEX bookings_event_created_idx ON bookings (event_id, created_at DESC, id DESC);
