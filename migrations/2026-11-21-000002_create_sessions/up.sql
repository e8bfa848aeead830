-- A session is one login on one device. Access tokens name their session, so revoking
-- the session (logout) invalidates them at once; refresh tokens rotate within it.
CREATE TABLE sessions (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Only SHA-256 digests of refresh tokens are stored. A used token stays behind (used_at set)
-- so that presenting it again can be recognised as theft and end the whole session.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
