-- When an event was first published; NULL for one that never was. A draft that is cancelled
-- stays hidden from everyone but its organizer and admins, and only this column tells such an
-- event from one that was on sale before it was cancelled.
ALTER TABLE events ADD COLUMN published_at timestamptz;

-- Events from before this column: anything that is not a draft is taken to have been
-- published (that is how they were shown until now).
UPDATE events SET published_at = created_at WHERE status <> 'DRAFT';
