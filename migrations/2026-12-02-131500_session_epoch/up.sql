-- One counter, raised in the same transaction as every change that may end or narrow a
-- signed-in session (a logout, a revocation, a role change). Each instance caches sessions
-- only while it has read this counter within the last lease (SESSION_CACHE_MS), and empties
-- its cache when the counter moved; the change waits out one lease before it answers. So an
-- ended session is refused on every instance by the time its logout answers, whether or not
-- Redis is up (see `domain::session_cache`).
CREATE TABLE session_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT session_epoch_one_row CHECK (only_row),
    epoch bigint NOT NULL
);
INSERT INTO session_epoch (only_row, epoch) VALUES (true, 0);
