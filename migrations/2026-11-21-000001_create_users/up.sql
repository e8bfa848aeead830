CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'USER',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_role_check CHECK (role IN ('USER', 'ORGANIZER', 'ADMIN')),
    -- Emails are stored normalised so the unique index is case-insensitive.
    CONSTRAINT users_email_check CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_name_check CHECK (length(name) BETWEEN 1 AND 100)
);

CREATE UNIQUE INDEX users_email_key ON users (email);
