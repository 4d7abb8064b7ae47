-- A client's credit (an overpayment left on its account) applied by finance to a later invoice of
-- the client: the invoice's open amount drops by it, the credit by the same. Undone, it is marked.
CREATE TABLE credit_applications (
    application_id  {{ id }},
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    invoice_id      BIGINT NOT NULL REFERENCES invoices (invoice_id),
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    reason          TEXT NOT NULL,
    applied_by      TEXT NOT NULL,
    applied_at      {{ ts }} NOT NULL,
    undone_by       TEXT,
    undone_at       {{ ts }},
    undo_reason     TEXT
);
CREATE INDEX ix_credit_applications_client ON credit_applications (client_id, currency);
