-- Disputes raised by finance on issued invoices, from the billing dashboard. A dispute is an
-- overlay on the invoice's payment status (issued, sent, partially paid), not a status of its own:
-- the issued invoice stays immutable, payments still post, and the dispute opens and closes
-- around it. While a dispute is open (resolved_at IS NULL) no reminder goes out for the invoice:
--   ... AND NOT EXISTS (SELECT 1 FROM invoice_disputes d
--                       WHERE d.invoice_id = i.invoice_id AND d.resolved_at IS NULL)
-- Opening and resolving are audit events (actions 'disputed' and 'dispute_resolved').
CREATE TABLE invoice_disputes (
    dispute_id   {{ id }},
    invoice_id   BIGINT NOT NULL REFERENCES invoices (invoice_id),
    reason       TEXT NOT NULL CHECK (LENGTH(reason) > 0),
    opened_by    TEXT NOT NULL,
    opened_at    {{ ts }} NOT NULL,
    resolution   TEXT,
    resolved_by  TEXT,
    resolved_at  {{ ts }},
    CHECK ((resolved_at IS NULL) = (resolved_by IS NULL))
);
-- At most one open dispute per invoice: a second "mark disputed" is refused by the database.
CREATE UNIQUE INDEX ux_invoice_disputes_open ON invoice_disputes (invoice_id) WHERE resolved_at IS NULL;
CREATE INDEX ix_invoice_disputes_invoice ON invoice_disputes (invoice_id);
