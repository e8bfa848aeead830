-- The waiting list of an event that sells ticket types: each entry waits for seats of one
-- type, and is promoted to an order pending payment at that type's price (its hold is the
-- entry's offer). Entries of events without ticket types keep no type.
ALTER TABLE waitlist_entries
    ADD COLUMN ticket_type_id uuid REFERENCES ticket_types (id) ON DELETE CASCADE;

-- Theatre tiers: a ticket type of a seated event may be sold only for seats of some sections
-- of the venue's seat map ("Stalls" = section A). Empty: any seat.
ALTER TABLE ticket_types
    ADD COLUMN sections text[] NOT NULL DEFAULT '{}';
