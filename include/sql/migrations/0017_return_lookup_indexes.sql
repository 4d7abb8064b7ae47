-- A bank return looks for the payment it undoes by amount and currency (then end-to-end id, the
-- invoice it names, or the payer's account). Without these indexes each return walked every
-- payment (the unique index on reversed_by_txn_id, with IS NULL, looked selective to SQLite's
-- planner) and every allocation: a night with thousands of returns grew with their product.
CREATE INDEX ix_payments_amount ON payments (amount, currency);
CREATE INDEX ix_allocations_invoice ON allocations (invoice_id);
