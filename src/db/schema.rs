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

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(events -> users (organizer_id));
diesel::joinable!(bookings -> events (event_id));
diesel::joinable!(bookings -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(users, sessions, refresh_tokens, events, bookings);
