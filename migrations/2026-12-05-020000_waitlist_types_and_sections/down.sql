ALTER TABLE ticket_types DROP COLUMN sections;
ALTER TABLE waitlist_entries DROP COLUMN ticket_type_id;
