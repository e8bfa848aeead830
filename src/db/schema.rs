// @generated-style table definitions matching migrations/ (checked by the migration tests).

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    events (id) {
        id -> Uuid,
        organizer_id -> Uuid,
        title -> Text,
        description -> Nullable<Text>,
        category -> Text,
        venue -> Text,
        starts_at -> Timestamptz,
        ends_at -> Timestamptz,
        capacity -> Int4,
        seats_available -> Int4,
        max_per_booking -> Int4,
        status -> Text,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        seats_held -> Int4,
        venue_id -> Nullable<Uuid>,
        free -> Bool,
        sales_start_at -> Nullable<Timestamptz>,
        sales_end_at -> Nullable<Timestamptz>,
        max_per_user -> Nullable<Int4>,
        hold_minutes -> Int4,
        offer_minutes -> Int4,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    bookings (id) {
        id -> Uuid,
        event_id -> Uuid,
        user_id -> Uuid,
        quantity -> Int4,
        status -> Text,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamptz,
        cancelled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    venues (id) {
        id -> Uuid,
        owner_id -> Uuid,
        name -> Text,
        address -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    venue_seats (id) {
        id -> Uuid,
        venue_id -> Uuid,
        section -> Text,
        row_label -> Text,
        number -> Int4,
        position -> Int4,
    }
}

diesel::table! {
    holds (id) {
        id -> Uuid,
        event_id -> Uuid,
        user_id -> Uuid,
        quantity -> Int4,
        status -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
        booking_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    seat_claims (event_id, seat_id) {
        event_id -> Uuid,
        seat_id -> Uuid,
        hold_id -> Nullable<Uuid>,
        booking_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    waitlist_entries (id) {
        id -> Uuid,
        event_id -> Uuid,
        user_id -> Uuid,
        quantity -> Int4,
        status -> Text,
        rsvp -> Bool,
        hold_id -> Nullable<Uuid>,
        booking_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    rsvps (event_id, user_id) {
        event_id -> Uuid,
        user_id -> Uuid,
        response -> Text,
        booking_id -> Nullable<Uuid>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Uuid,
        at -> Timestamptz,
        actor_id -> Uuid,
        action -> Text,
        subject_type -> Text,
        subject_id -> Uuid,
        event_id -> Nullable<Uuid>,
        before -> Nullable<Jsonb>,
        after -> Nullable<Jsonb>,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(venue_seats -> venues (venue_id));
diesel::joinable!(events -> venues (venue_id));
diesel::joinable!(holds -> events (event_id));
diesel::joinable!(seat_claims -> venue_seats (seat_id));
diesel::joinable!(waitlist_entries -> events (event_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(events -> users (organizer_id));
diesel::joinable!(bookings -> events (event_id));
diesel::joinable!(bookings -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    refresh_tokens,
    events,
    bookings,
    venues,
    venue_seats,
    holds,
    seat_claims,
    waitlist_entries,
    rsvps,
    audit_log,
);
