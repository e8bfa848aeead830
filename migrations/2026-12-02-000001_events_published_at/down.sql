ALTER TABLE events DROP COLUMN published_at;
