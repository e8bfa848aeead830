DROP INDEX refunds_succeeded_at_idx;
DROP INDEX orders_paid_at_idx;
