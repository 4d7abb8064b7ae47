-- Reconciliation in depth: where each bank line came from, known payer accounts, write-offs and
-- unapplied cash, returned payments, ranked suggestions, the double-entry journal, the accounting
-- system's view of payment status, and each finance report sent once.

ALTER TABLE bank_statements ADD COLUMN file_format TEXT;
ALTER TABLE bank_transactions ADD COLUMN end_to_end_id TEXT;
ALTER TABLE bank_transactions ADD COLUMN reversal BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE bank_transactions ADD COLUMN load_id BIGINT REFERENCES source_loads (load_id);
CREATE INDEX ix_bank_transactions_status ON bank_transactions (match_status);
CREATE INDEX ix_bank_transactions_e2e ON bank_transactions (account_iban, end_to_end_id);

-- The accounts a client pays from: learned from payments that quoted a reference, or given by finance.
CREATE TABLE payer_accounts (
    iban        TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (client_id),
    source      TEXT NOT NULL,            -- learned, finance
    created_at  {{ ts }} NOT NULL
);

-- How a payment was matched, and the bank line that returned it (a return undoes its allocations).
ALTER TABLE payments ADD COLUMN rule TEXT;
ALTER TABLE payments ADD COLUMN confidence NUMERIC;
ALTER TABLE payments ADD COLUMN reversed_by_txn_id BIGINT REFERENCES bank_transactions (txn_id);
ALTER TABLE payments ADD COLUMN reversed_at {{ ts }};
CREATE UNIQUE INDEX ux_payments_reversed_by ON payments (reversed_by_txn_id);

-- What a payment settled beyond its cash: a payer's bank fee or cash discount written off, an FX
-- difference (positive: a loss), or an overpayment left unapplied on the client's account.
CREATE TABLE payment_adjustments (
    adjustment_id {{ id }},
    payment_id    BIGINT NOT NULL REFERENCES payments (payment_id),
    invoice_id    BIGINT REFERENCES invoices (invoice_id),
    kind          TEXT NOT NULL CHECK (kind IN ('bank_fee', 'cash_discount', 'fx_difference', 'unapplied')),
    amount        BIGINT NOT NULL,        -- minor units of the payment's currency
    currency      TEXT NOT NULL,
    account       TEXT NOT NULL,          -- chart of accounts number from the policy
    UNIQUE (payment_id, kind, invoice_id)
);

-- Up to three ranked suggestions for a bank line that was not posted.
CREATE TABLE match_suggestions (
    txn_id           BIGINT NOT NULL REFERENCES bank_transactions (txn_id),
    rank             INTEGER NOT NULL,
    invoice_numbers  TEXT NOT NULL,       -- comma separated
    rule             TEXT NOT NULL,
    evidence         TEXT NOT NULL,
    confidence       NUMERIC NOT NULL,
    PRIMARY KEY (txn_id, rank)
);

-- The double-entry journal: one entry per issued document, payment and return, written once.
CREATE TABLE journal_entries (
    entry_id     {{ id }},
    source_type  TEXT NOT NULL,           -- invoice, credit_note, payment, return
    source_id    TEXT NOT NULL,
    entry_date   DATE NOT NULL,
    currency     TEXT NOT NULL,
    description  TEXT NOT NULL,
    run_id       TEXT,
    created_at   {{ ts }} NOT NULL,
    exported_at  {{ ts }},
    UNIQUE (source_type, source_id)
);
CREATE TABLE journal_lines (
    entry_id            BIGINT NOT NULL REFERENCES journal_entries (entry_id),
    line_no             INTEGER NOT NULL,
    account             TEXT NOT NULL,
    debit               BIGINT NOT NULL DEFAULT 0 CHECK (debit >= 0),
    credit              BIGINT NOT NULL DEFAULT 0 CHECK (credit >= 0),
    client_id           TEXT,
    project_code        TEXT,
    tax_code            TEXT,
    invoice_number      TEXT,
    payment_terms_days  INTEGER,
    memo                TEXT,
    PRIMARY KEY (entry_id, line_no)
);

-- Payment status as the accounting system sees it, imported back and compared with ours.
CREATE TABLE accounting_status (
    invoice_number  TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    paid_amount     BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    paid_on         DATE,
    load_id         BIGINT REFERENCES source_loads (load_id),
    imported_at     {{ ts }} NOT NULL
);

-- Each finance report (nightly exception report, weekly digest) is e-mailed once per day.
CREATE TABLE report_deliveries (
    report      TEXT NOT NULL,            -- exceptions, digest
    as_of       DATE NOT NULL,
    recipients  TEXT NOT NULL,
    message_id  TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,            -- pending, sent
    created_at  {{ ts }} NOT NULL,
    sent_at     {{ ts }},
    PRIMARY KEY (report, as_of)
);
