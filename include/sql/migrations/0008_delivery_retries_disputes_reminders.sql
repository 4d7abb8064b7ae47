-- Delivery retries, disputes that pause reminders, and the dunning log (issue 6).

-- A failed e-mail waits until next_attempt_at (the policy's back-off) before the sweep tries again.
ALTER TABLE deliveries ADD COLUMN next_attempt_at {{ ts }};

-- A client disputes an invoice: reminders stop until the dispute is resolved. At most one open
-- dispute per invoice; resolved ones stay as history.
CREATE TABLE disputes (
    dispute_id   {{ id }},
    invoice_id   BIGINT NOT NULL REFERENCES invoices (invoice_id),
    reason       TEXT NOT NULL,
    opened_by    TEXT NOT NULL,
    opened_at    {{ ts }} NOT NULL,
    resolved_by  TEXT,
    resolved_at  {{ ts }},
    resolution   TEXT
);
CREATE UNIQUE INDEX ux_disputes_open ON disputes (invoice_id) WHERE resolved_at IS NULL;

-- One row per reminder level sent: what it asked for (open amount and late fee) and when. The
-- primary key is the "once per level" rule; the e-mail itself is the deliveries row of the same
-- Message-ID.
CREATE TABLE reminders (
    invoice_id   BIGINT NOT NULL REFERENCES invoices (invoice_id),
    level        INTEGER NOT NULL,
    name         TEXT NOT NULL,
    as_of        DATE NOT NULL,
    currency     TEXT NOT NULL,
    open_amount  BIGINT NOT NULL,
    late_fee     BIGINT NOT NULL DEFAULT 0,
    message_id   TEXT NOT NULL,
    sent_at      {{ ts }} NOT NULL,
    PRIMARY KEY (invoice_id, level)
);
