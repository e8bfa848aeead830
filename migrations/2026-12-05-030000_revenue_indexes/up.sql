-- Revenue over a period reads orders by when they were paid and refunds by when they
-- succeeded (their last status change); these keep platformStats and organizerStats off full
-- scans of both tables.
CREATE INDEX orders_paid_at_idx ON orders (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX refunds_succeeded_at_idx ON refunds (updated_at) WHERE status = 'SUCCEEDED';
