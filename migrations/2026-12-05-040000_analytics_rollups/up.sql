-- Sales figures rolled up as bookings change, so analytics read a few rows instead of every
-- booking (issue 16, "Speed"). A statement-level trigger on `bookings` keeps them, in the
-- transaction of the change: a figure read from them is exactly the recount of the committed
-- bookings in the same snapshot, whichever code path wrote the bookings (the group-commit batch
-- inserts a batch in one statement, so it pays one roll-up per batch, not per booking).
--
-- A booking counts as sold in the 15-minute bucket of its `created_at` and as cancelled in the
-- bucket of its `cancelled_at`. Fifteen minutes, because every real time zone's offset is a
-- multiple of it, so any zone's hours and days are whole sets of buckets.

-- Every booking of an event, all time: what `eventStats` reads.
CREATE TABLE event_sales (
    event_id          uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    bookings          bigint NOT NULL DEFAULT 0,
    tickets           bigint NOT NULL DEFAULT 0,
    cancellations     bigint NOT NULL DEFAULT 0,
    tickets_cancelled bigint NOT NULL DEFAULT 0
);

-- One event's sales per 15 minutes: `salesOverTime`, and an event's figures over a period.
CREATE TABLE event_sales_15m (
    event_id          uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    bucket            timestamptz NOT NULL,
    bookings          bigint NOT NULL DEFAULT 0,
    tickets_sold      bigint NOT NULL DEFAULT 0,
    cancellations     bigint NOT NULL DEFAULT 0,
    tickets_cancelled bigint NOT NULL DEFAULT 0,
    CONSTRAINT event_sales_15m_pkey PRIMARY KEY (event_id, bucket)
);
CREATE INDEX event_sales_15m_bucket_idx ON event_sales_15m (bucket);

-- The platform's sales per 15 minutes (`platformStats` by day), in four shards picked by event,
-- so that the onsales of different events seldom wait on one another's row until commit. The
-- sweeper folds the shards of quarter hours over a day old into shard 0 (one statement, so
-- exact at every moment), so a year is read from some 35,000 rows; the partial index finds
-- what is left to fold.
CREATE TABLE platform_sales_15m (
    bucket            timestamptz NOT NULL,
    shard             smallint NOT NULL,
    bookings          bigint NOT NULL DEFAULT 0,
    tickets_sold      bigint NOT NULL DEFAULT 0,
    cancellations     bigint NOT NULL DEFAULT 0,
    tickets_cancelled bigint NOT NULL DEFAULT 0,
    CONSTRAINT platform_sales_15m_pkey PRIMARY KEY (bucket, shard)
);
CREATE INDEX platform_sales_15m_unfolded_idx ON platform_sales_15m (bucket) WHERE shard <> 0;

CREATE FUNCTION sales_bucket(at timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00');

CREATE FUNCTION sales_shard(event_id uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (get_byte(uuid_send(event_id), 15) & 3)::smallint;

CREATE TYPE booking_change AS (
    event_id uuid, quantity integer, created_at timestamptz, cancelled_at timestamptz, sign integer
);

-- Adds `changes` (rows added with sign 1, rows removed with sign -1) to the roll-ups. The
-- events are locked first, in id order (every booking path locks its event before its
-- bookings anyway), then the roll-up rows in key order: two transactions cannot wait on each
-- other's roll-up rows in opposite orders.
CREATE FUNCTION roll_up_booking_changes(changes booking_change[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM events
     WHERE id IN (SELECT DISTINCT event_id FROM unnest(changes))
     ORDER BY id FOR NO KEY UPDATE;

    INSERT INTO event_sales AS s (event_id, bookings, tickets, cancellations, tickets_cancelled)
    SELECT event_id, sum(sign), sum(sign * quantity),
           coalesce(sum(sign) FILTER (WHERE cancelled_at IS NOT NULL), 0),
           coalesce(sum(sign * quantity) FILTER (WHERE cancelled_at IS NOT NULL), 0)
      FROM unnest(changes)
     GROUP BY event_id
     ORDER BY event_id
    ON CONFLICT (event_id) DO UPDATE
       SET bookings = s.bookings + excluded.bookings,
           tickets = s.tickets + excluded.tickets,
           cancellations = s.cancellations + excluded.cancellations,
           tickets_cancelled = s.tickets_cancelled + excluded.tickets_cancelled;

    WITH moves AS (
        SELECT event_id, sales_bucket(created_at) AS bucket, sign AS bookings,
               sign * quantity AS tickets_sold, 0 AS cancellations, 0 AS tickets_cancelled
          FROM unnest(changes)
        UNION ALL
        SELECT event_id, sales_bucket(cancelled_at), 0, 0, sign, sign * quantity
          FROM unnest(changes) WHERE cancelled_at IS NOT NULL
    ), per_event AS (
        SELECT event_id, bucket, sum(bookings) AS bookings, sum(tickets_sold) AS tickets_sold,
               sum(cancellations) AS cancellations, sum(tickets_cancelled) AS tickets_cancelled
          FROM moves GROUP BY event_id, bucket
        HAVING sum(bookings) <> 0 OR sum(tickets_sold) <> 0 OR sum(cancellations) <> 0
            OR sum(tickets_cancelled) <> 0
    ), per_event_written AS (
        INSERT INTO event_sales_15m AS r
               (event_id, bucket, bookings, tickets_sold, cancellations, tickets_cancelled)
        SELECT * FROM per_event ORDER BY event_id, bucket
        ON CONFLICT (event_id, bucket) DO UPDATE
           SET bookings = r.bookings + excluded.bookings,
               tickets_sold = r.tickets_sold + excluded.tickets_sold,
               cancellations = r.cancellations + excluded.cancellations,
               tickets_cancelled = r.tickets_cancelled + excluded.tickets_cancelled
    )
    INSERT INTO platform_sales_15m AS p
           (bucket, shard, bookings, tickets_sold, cancellations, tickets_cancelled)
    SELECT bucket, sales_shard(event_id), sum(bookings), sum(tickets_sold), sum(cancellations),
           sum(tickets_cancelled)
      FROM per_event
     GROUP BY 1, 2
     ORDER BY 1, 2
    ON CONFLICT (bucket, shard) DO UPDATE
       SET bookings = p.bookings + excluded.bookings,
           tickets_sold = p.tickets_sold + excluded.tickets_sold,
           cancellations = p.cancellations + excluded.cancellations,
           tickets_cancelled = p.tickets_cancelled + excluded.tickets_cancelled;
END
$$;

-- Transition tables need one trigger per kind of statement.
CREATE FUNCTION bookings_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM roll_up_booking_changes(ARRAY(
            SELECT (event_id, quantity, created_at, cancelled_at, 1)::booking_change
              FROM new_bookings));
    ELSIF TG_OP = 'UPDATE' THEN
        -- Only rows whose counted columns changed (a status change moves `cancelled_at`).
        PERFORM roll_up_booking_changes(ARRAY(
            SELECT (n.event_id, n.quantity, n.created_at, n.cancelled_at, 1)::booking_change
              FROM new_bookings n JOIN old_bookings o USING (id)
             WHERE (n.event_id, n.quantity, n.created_at, n.cancelled_at)
                   IS DISTINCT FROM (o.event_id, o.quantity, o.created_at, o.cancelled_at)
            UNION ALL
            SELECT (o.event_id, o.quantity, o.created_at, o.cancelled_at, -1)::booking_change
              FROM new_bookings n JOIN old_bookings o USING (id)
             WHERE (n.event_id, n.quantity, n.created_at, n.cancelled_at)
                   IS DISTINCT FROM (o.event_id, o.quantity, o.created_at, o.cancelled_at)));
    ELSE
        PERFORM roll_up_booking_changes(ARRAY(
            SELECT (event_id, quantity, created_at, cancelled_at, -1)::booking_change
              FROM old_bookings));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_roll_up_insert AFTER INSERT ON bookings
    REFERENCING NEW TABLE AS new_bookings
    FOR EACH STATEMENT EXECUTE FUNCTION bookings_roll_up();
CREATE TRIGGER bookings_roll_up_update AFTER UPDATE ON bookings
    REFERENCING OLD TABLE AS old_bookings NEW TABLE AS new_bookings
    FOR EACH STATEMENT EXECUTE FUNCTION bookings_roll_up();
CREATE TRIGGER bookings_roll_up_delete AFTER DELETE ON bookings
    REFERENCING OLD TABLE AS old_bookings
    FOR EACH STATEMENT EXECUTE FUNCTION bookings_roll_up();

-- The bookings already there.
SELECT roll_up_booking_changes(ARRAY(
    SELECT (event_id, quantity, created_at, cancelled_at, 1)::booking_change FROM bookings));
