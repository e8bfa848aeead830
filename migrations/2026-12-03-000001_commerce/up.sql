-- Commerce: ticket types with prices, quotas shared by several types, orders with lines,
-- promo codes, payments through a provider, tickets and refunds.
--
-- Money is integer minor units (bigint) of the event's ISO 4217 currency; no floats.
-- Every counter has a CHECK that has the last word: for each quota
-- available + held + sold = size, and a ticket type's own held + sold never passes its
-- quantity. Counters move under the event's row lock, in the transaction that moves the seats.

-- An event that sells ticket types has a currency (set by its first ticket type); one without
-- keeps selling through bookSeats exactly as before.
ALTER TABLE events
    ADD COLUMN currency text,
    ADD COLUMN payment_provider text NOT NULL DEFAULT 'MANUAL',
    ADD COLUMN payment_window_days integer NOT NULL DEFAULT 3,
    ADD COLUMN refund_until timestamptz,
    ADD CONSTRAINT events_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT events_payment_provider_check CHECK (payment_provider IN ('MANUAL', 'STRIPE')),
    ADD CONSTRAINT events_payment_window_days_check CHECK (payment_window_days BETWEEN 1 AND 60);

CREATE TABLE ticket_types (
    id             uuid PRIMARY KEY,
    event_id       uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name           text NOT NULL,
    description    text,
    price_amount   bigint NOT NULL,
    currency       text NOT NULL,
    quantity       integer,
    held           integer NOT NULL DEFAULT 0,
    sold           integer NOT NULL DEFAULT 0,
    sales_start_at timestamptz,
    sales_end_at   timestamptz,
    min_per_order  integer NOT NULL DEFAULT 1,
    max_per_order  integer NOT NULL DEFAULT 10,
    hidden         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_types_name_check CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT ticket_types_price_check CHECK (price_amount >= 0),
    CONSTRAINT ticket_types_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT ticket_types_counters_check
        CHECK (held >= 0 AND sold >= 0 AND (quantity IS NULL OR held + sold <= quantity)),
    CONSTRAINT ticket_types_per_order_check
        CHECK (min_per_order >= 1 AND max_per_order >= min_per_order),
    CONSTRAINT ticket_types_sales_window_check CHECK (sales_end_at > sales_start_at)
);
CREATE INDEX ticket_types_event_id_idx ON ticket_types (event_id, created_at);

CREATE TABLE quotas (
    id         uuid PRIMARY KEY,
    event_id   uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name       text NOT NULL,
    size       integer NOT NULL,
    available  integer NOT NULL,
    held       integer NOT NULL DEFAULT 0,
    sold       integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quotas_name_check CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT quotas_counters_check
        CHECK (size >= 0 AND available >= 0 AND held >= 0 AND sold >= 0
               AND available + held + sold = size)
);
CREATE INDEX quotas_event_id_idx ON quotas (event_id);

CREATE TABLE quota_ticket_types (
    quota_id       uuid NOT NULL REFERENCES quotas (id) ON DELETE CASCADE,
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id) ON DELETE CASCADE,
    PRIMARY KEY (quota_id, ticket_type_id)
);
CREATE INDEX quota_ticket_types_type_idx ON quota_ticket_types (ticket_type_id);

CREATE TABLE promo_codes (
    id             uuid PRIMARY KEY,
    event_id       uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    code           text NOT NULL,
    discount_kind  text NOT NULL,
    value          bigint NOT NULL,
    max_uses       integer,
    uses           integer NOT NULL DEFAULT 0,
    valid_from     timestamptz,
    valid_until    timestamptz,
    unlocks_hidden boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT promo_codes_code_check CHECK (length(code) BETWEEN 1 AND 64),
    CONSTRAINT promo_codes_kind_check CHECK (discount_kind IN ('PERCENT', 'FIXED')),
    CONSTRAINT promo_codes_value_check
        CHECK (value >= 0 AND (discount_kind <> 'PERCENT' OR value <= 100)),
    CONSTRAINT promo_codes_uses_check
        CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)),
    CONSTRAINT promo_codes_max_uses_check CHECK (max_uses >= 0),
    CONSTRAINT promo_codes_window_check CHECK (valid_until > valid_from)
);
-- Codes are case-insensitive: one per event whatever its case.
CREATE UNIQUE INDEX promo_codes_event_code_key ON promo_codes (event_id, lower(code));

-- The ticket types a promo code applies to (none: all of the event's) and, for an access
-- code, the hidden ones it unlocks.
CREATE TABLE promo_code_ticket_types (
    promo_code_id  uuid NOT NULL REFERENCES promo_codes (id) ON DELETE CASCADE,
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id) ON DELETE CASCADE,
    PRIMARY KEY (promo_code_id, ticket_type_id)
);

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id),
    user_id         uuid NOT NULL REFERENCES users (id),
    status          text NOT NULL,
    currency        text NOT NULL,
    subtotal        bigint NOT NULL,
    discount        bigint NOT NULL DEFAULT 0,
    total           bigint NOT NULL,
    promo_code_id   uuid REFERENCES promo_codes (id),
    -- The hold that keeps the order's seats until it is paid or expires.
    hold_id         uuid REFERENCES holds (id),
    idempotency_key text,
    expires_at      timestamptz NOT NULL,
    provider        text NOT NULL,
    intent_id       text,
    client_secret   text,
    payment_status  text NOT NULL DEFAULT 'awaiting_buyer',
    amount_paid     bigint NOT NULL DEFAULT 0,
    amount_refunded bigint NOT NULL DEFAULT 0,
    payment_reference text,
    -- Why the order is where it is, for the buyer (a payment refunded because its seats were
    -- gone, a cancelled event).
    reason          text,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz,
    CONSTRAINT orders_status_check CHECK (status IN
        ('PENDING_PAYMENT', 'PAID', 'EXPIRED', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    CONSTRAINT orders_provider_check CHECK (provider IN ('MANUAL', 'STRIPE')),
    CONSTRAINT orders_money_check
        CHECK (subtotal >= 0 AND discount >= 0 AND total = subtotal - discount AND total >= 0),
    CONSTRAINT orders_paid_check CHECK (amount_paid >= 0 AND amount_paid <= total),
    CONSTRAINT orders_refunded_check CHECK (amount_refunded >= 0 AND amount_refunded <= amount_paid),
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key),
    CONSTRAINT orders_intent_key UNIQUE (provider, intent_id)
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_event_idx ON orders (event_id, created_at DESC, id DESC);
CREATE INDEX orders_hold_idx ON orders (hold_id) WHERE hold_id IS NOT NULL;
CREATE INDEX orders_pending_idx ON orders (created_at) WHERE status = 'PENDING_PAYMENT';

CREATE TABLE order_lines (
    id             uuid PRIMARY KEY,
    order_id       uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    position       integer NOT NULL,
    quantity       integer NOT NULL,
    unit_price     bigint NOT NULL,
    total          bigint NOT NULL,
    -- The seats of a seated event's line (claimed by the order's hold, then its booking).
    seat_ids       uuid[] NOT NULL DEFAULT '{}',
    -- The booking that holds the line's seats once the order is paid.
    booking_id     uuid REFERENCES bookings (id),
    -- The refund that took the line back; a line is refunded once.
    refund_id      uuid,
    CONSTRAINT order_lines_quantity_check CHECK (quantity >= 1),
    CONSTRAINT order_lines_total_check CHECK (unit_price >= 0 AND total = unit_price * quantity),
    CONSTRAINT order_lines_position_key UNIQUE (order_id, position)
);
CREATE INDEX order_lines_booking_idx ON order_lines (booking_id) WHERE booking_id IS NOT NULL;

-- One per seat (or per place of a general-admission event) of a paid order. The code is what
-- a door scanner will read; checked_in_at waits for check-in.
CREATE TABLE tickets (
    id             uuid PRIMARY KEY,
    order_id       uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    order_line_id  uuid NOT NULL REFERENCES order_lines (id) ON DELETE CASCADE,
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    event_id       uuid NOT NULL REFERENCES events (id),
    seat_id        uuid REFERENCES venue_seats (id),
    code           text NOT NULL,
    status         text NOT NULL DEFAULT 'VALID',
    checked_in_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tickets_code_key UNIQUE (code),
    CONSTRAINT tickets_status_check CHECK (status IN ('VALID', 'REFUNDED', 'CANCELLED'))
);
CREATE INDEX tickets_order_idx ON tickets (order_id);

-- A refund is recorded PENDING before the provider is called (its id is the provider's
-- idempotency key), then applied once the provider answers.
CREATE TABLE refunds (
    id                 uuid PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    amount             bigint NOT NULL,
    reason             text,
    status             text NOT NULL DEFAULT 'PENDING',
    line_ids           uuid[] NOT NULL DEFAULT '{}',
    provider_refund_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_amount_check CHECK (amount > 0),
    CONSTRAINT refunds_status_check CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED'))
);
CREATE INDEX refunds_order_idx ON refunds (order_id);
CREATE INDEX refunds_pending_idx ON refunds (created_at) WHERE status = 'PENDING';

-- Each provider event (a webhook's id, a reconciliation's, a manual payment's) is applied
-- once: a duplicate delivery finds its row and changes nothing.
CREATE TABLE provider_events (
    provider    text NOT NULL,
    event_id    text NOT NULL,
    order_id    uuid REFERENCES orders (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    created     bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
