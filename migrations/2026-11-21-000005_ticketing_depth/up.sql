-- Ticketing depth: holds that expire, seat maps, a waiting list, RSVP and the event lifecycle.
-- The event row still carries the counters that a booking checks and moves under its lock;
-- the invariant is now seats_available + seats_held + (seats in confirmed bookings) = capacity.

-- Venues with a seat layout. Venues are never edited in place (events copy nothing from them
-- but refer to their seats), so a layout is fixed once created.
CREATE TABLE venues (
    id         uuid PRIMARY KEY,
    owner_id   uuid NOT NULL REFERENCES users (id),
    name       text NOT NULL,
    address    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT venues_name_check CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT venues_address_check CHECK (length(address) BETWEEN 1 AND 500)
);

CREATE INDEX venues_owner_id_idx ON venues (owner_id);

CREATE TABLE venue_seats (
    id        uuid PRIMARY KEY,
    venue_id  uuid NOT NULL REFERENCES venues (id) ON DELETE CASCADE,
    section   text NOT NULL,
    row_label text NOT NULL,
    number    integer NOT NULL,
    -- Listing order inside the venue: sections, rows and seats as the layout gave them.
    position  integer NOT NULL,
    CONSTRAINT venue_seats_section_check CHECK (length(section) BETWEEN 1 AND 50),
    CONSTRAINT venue_seats_row_check CHECK (length(row_label) BETWEEN 1 AND 20),
    CONSTRAINT venue_seats_number_check CHECK (number >= 1),
    CONSTRAINT venue_seats_place_key UNIQUE (venue_id, section, row_label, number),
    CONSTRAINT venue_seats_position_key UNIQUE (venue_id, position)
);

ALTER TABLE events
    ADD COLUMN seats_held integer NOT NULL DEFAULT 0,
    ADD COLUMN venue_id uuid REFERENCES venues (id),
    ADD COLUMN free boolean NOT NULL DEFAULT false,
    ADD COLUMN sales_start_at timestamptz,
    ADD COLUMN sales_end_at timestamptz,
    ADD COLUMN max_per_user integer,
    ADD COLUMN hold_minutes integer NOT NULL DEFAULT 10,
    ADD COLUMN offer_minutes integer NOT NULL DEFAULT 1440,
    DROP CONSTRAINT events_seats_available_check,
    DROP CONSTRAINT events_status_check,
    ADD CONSTRAINT events_seats_check
        CHECK (seats_available >= 0 AND seats_held >= 0 AND seats_available + seats_held <= capacity),
    ADD CONSTRAINT events_status_check
        CHECK (status IN ('DRAFT', 'PUBLISHED', 'CANCELLED', 'COMPLETED')),
    ADD CONSTRAINT events_sales_window_check CHECK (sales_end_at > sales_start_at),
    ADD CONSTRAINT events_max_per_user_check CHECK (max_per_user >= 1),
    ADD CONSTRAINT events_hold_minutes_check CHECK (hold_minutes BETWEEN 1 AND 1440),
    ADD CONSTRAINT events_offer_minutes_check CHECK (offer_minutes BETWEEN 1 AND 10080);

CREATE INDEX events_venue_id_idx ON events (venue_id) WHERE venue_id IS NOT NULL;
-- The sweeper's "events that have ended" scan.
CREATE INDEX events_ends_at_published_idx ON events (ends_at) WHERE status = 'PUBLISHED';

-- A hold keeps seats for one user until it is confirmed, released or expires. Held seats are
-- counted in events.seats_held. A waiting-list offer is a hold too (waitlist_entries.hold_id).
CREATE TABLE holds (
    id          uuid PRIMARY KEY,
    event_id    uuid NOT NULL REFERENCES events (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    quantity    integer NOT NULL,
    status      text NOT NULL DEFAULT 'HELD',
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- When it stopped being HELD (confirmed, released or expired).
    ended_at    timestamptz,
    booking_id  uuid UNIQUE REFERENCES bookings (id),
    CONSTRAINT holds_quantity_check CHECK (quantity > 0),
    CONSTRAINT holds_status_check CHECK (status IN ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED')),
    CONSTRAINT holds_ended_at_check CHECK ((status = 'HELD') = (ended_at IS NULL)),
    CONSTRAINT holds_booking_check CHECK ((status = 'CONFIRMED') = (booking_id IS NOT NULL))
);

CREATE INDEX holds_expiry_idx ON holds (expires_at) WHERE status = 'HELD';
CREATE INDEX holds_event_held_idx ON holds (event_id, user_id) WHERE status = 'HELD';
CREATE INDEX holds_user_created_idx ON holds (user_id, created_at DESC, id DESC);

-- Which seat of a seated event is taken, by a hold or a booking. The primary key is what
-- makes two buyers unable to get the same seat: a second claim is a unique violation.
CREATE TABLE seat_claims (
    event_id   uuid NOT NULL REFERENCES events (id),
    seat_id    uuid NOT NULL REFERENCES venue_seats (id),
    hold_id    uuid REFERENCES holds (id),
    booking_id uuid REFERENCES bookings (id),
    PRIMARY KEY (event_id, seat_id),
    CONSTRAINT seat_claims_owner_check CHECK (hold_id IS NOT NULL OR booking_id IS NOT NULL)
);

CREATE INDEX seat_claims_hold_id_idx ON seat_claims (hold_id) WHERE hold_id IS NOT NULL;
CREATE INDEX seat_claims_booking_id_idx ON seat_claims (booking_id) WHERE booking_id IS NOT NULL;

-- The waiting list of a sold-out event, first come first served.
CREATE TABLE waitlist_entries (
    id         uuid PRIMARY KEY,
    event_id   uuid NOT NULL REFERENCES events (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    quantity   integer NOT NULL,
    status     text NOT NULL DEFAULT 'WAITING',
    -- Joined by an RSVP: promoted straight to a booking rather than offered a hold.
    rsvp       boolean NOT NULL DEFAULT false,
    -- The offer made to this entry (status OFFERED, then FULFILLED or EXPIRED).
    hold_id    uuid UNIQUE REFERENCES holds (id),
    booking_id uuid UNIQUE REFERENCES bookings (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT waitlist_quantity_check CHECK (quantity > 0),
    CONSTRAINT waitlist_status_check
        CHECK (status IN ('WAITING', 'OFFERED', 'FULFILLED', 'LEFT', 'EXPIRED', 'CLOSED')),
    CONSTRAINT waitlist_offer_check CHECK (status <> 'OFFERED' OR hold_id IS NOT NULL)
);

-- One place in the queue per user and event: joining twice cannot double-count.
CREATE UNIQUE INDEX waitlist_one_active_entry
    ON waitlist_entries (event_id, user_id) WHERE status IN ('WAITING', 'OFFERED');
CREATE INDEX waitlist_queue_idx ON waitlist_entries (event_id, created_at, id) WHERE status = 'WAITING';
CREATE INDEX waitlist_user_idx ON waitlist_entries (user_id, created_at DESC, id DESC);

-- One answer per user and free event. GOING holds a seat through its booking, or waits in
-- the waiting list while the event is full.
CREATE TABLE rsvps (
    event_id   uuid NOT NULL REFERENCES events (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    response   text NOT NULL,
    booking_id uuid REFERENCES bookings (id),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id),
    CONSTRAINT rsvps_response_check CHECK (response IN ('GOING', 'MAYBE', 'NOT_GOING')),
    CONSTRAINT rsvps_booking_check CHECK (response = 'GOING' OR booking_id IS NULL)
);
