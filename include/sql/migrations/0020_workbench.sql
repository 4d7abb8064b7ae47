-- sqlite: foreign keys off (the runner rebuilds tables with the checks off and verifies them after)
-- The reconciliation workbench (issue 21): finance decides what the nightly run could not, and
-- every decision is a row that says who, when and why, and can be undone.

-- A bank line can carry several payments over its life: a split applied in steps, or a posting
-- undone and applied again. The unique key on payments.txn_id gives way to "the line is claimed
-- under a row lock and its open remainder checked" (collect/decisions.py); an undone payment stays,
-- marked, as a returned one does.
{% if dialect == "postgresql" %}
ALTER TABLE payments DROP CONSTRAINT payments_txn_id_key;
ALTER TABLE payments ADD COLUMN posted_by TEXT NOT NULL DEFAULT 'system';
ALTER TABLE payments ADD COLUMN reason TEXT;
ALTER TABLE payments ADD COLUMN undone_at {{ ts }};
ALTER TABLE payments ADD COLUMN undone_by TEXT;
ALTER TABLE payments ADD COLUMN undo_reason TEXT;
{% else %}
DROP VIEW report_payments;
CREATE TABLE payments_rebuilt (
    payment_id          {{ id }},
    txn_id              BIGINT NOT NULL REFERENCES bank_transactions (txn_id),
    client_id           TEXT REFERENCES clients (client_id),
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    received_on         DATE NOT NULL,
    posted_at           {{ ts }} NOT NULL,
    rule                TEXT,
    confidence          NUMERIC,
    reversed_by_txn_id  BIGINT REFERENCES bank_transactions (txn_id),
    reversed_at         {{ ts }},
    posted_by           TEXT NOT NULL DEFAULT 'system',
    reason              TEXT,
    undone_at           {{ ts }},
    undone_by           TEXT,
    undo_reason         TEXT
);
INSERT INTO payments_rebuilt (payment_id, txn_id, client_id, amount, currency, received_on, posted_at, rule,
                              confidence, reversed_by_txn_id, reversed_at)
SELECT payment_id, txn_id, client_id, amount, currency, received_on, posted_at, rule, confidence,
       reversed_by_txn_id, reversed_at
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_rebuilt RENAME TO payments;
CREATE UNIQUE INDEX ux_payments_reversed_by ON payments (reversed_by_txn_id);
CREATE INDEX ix_payments_amount ON payments (amount, currency);
CREATE VIEW report_payments AS
SELECT p.payment_id,
       p.received_on,
       p.client_id,
       p.currency,
       {{ major("p.amount", "c.factor") }} AS amount,
       i.invoice_number,
       {{ major("a.amount", "c.factor") }} AS allocated_amount,
       a.rule,
       a.confidence,
       t.bank_ref
FROM payments p
JOIN currencies c ON c.code = p.currency
JOIN bank_transactions t ON t.txn_id = p.txn_id
LEFT JOIN allocations a ON a.payment_id = p.payment_id
LEFT JOIN invoices i ON i.invoice_id = a.invoice_id;
{% endif %}
CREATE INDEX ix_payments_txn ON payments (txn_id);

-- Who last decided a bank line and when (the nightly run is 'system'): the answer a second person
-- gets when the line was decided under them. What the bank says beyond the text, for the matcher:
-- the ISO 20022 bank transaction code (PMNT/IDDT/UPDD), a return reason (AM04, MD06), the booking
-- text and the party a payment was made for (ultimate debtor).
ALTER TABLE bank_transactions ADD COLUMN decided_by TEXT;
ALTER TABLE bank_transactions ADD COLUMN decided_at {{ ts }};
ALTER TABLE bank_transactions ADD COLUMN bank_tx_code TEXT;
ALTER TABLE bank_transactions ADD COLUMN return_reason TEXT;
ALTER TABLE bank_transactions ADD COLUMN booking_text TEXT;
ALTER TABLE bank_transactions ADD COLUMN ultimate_debtor TEXT;

-- What the matcher learns and what finance tells it, like Xero's bank rules: a payer (IBAN, name
-- variant, text pattern) belongs to a client, or a line is not a receivable and goes to an account.
-- Learned aliases replace payer_accounts (moved over below). Rules are never deleted: disabled.
CREATE TABLE match_rules (
    rule_id         {{ id }},
    kind            TEXT NOT NULL CHECK (kind IN ('payer', 'non_receivable')),
    payer_iban      TEXT,                 -- compact, upper case
    payer_name      TEXT,                 -- normalised (remittance.normalise_name)
    text_pattern    TEXT,                 -- upper case; the line's text contains it
    direction       TEXT NOT NULL DEFAULT 'any' CHECK (direction IN ('credit', 'debit', 'any')),
    client_id       TEXT REFERENCES clients (client_id),
    category        TEXT,                 -- non_receivable: refund, internal_transfer, loan, interest, fee, ...
    account         TEXT,
    source          TEXT NOT NULL CHECK (source IN ('learned', 'person', 'policy')),
    created_by      TEXT NOT NULL,
    created_at      {{ ts }} NOT NULL,
    origin_txn_id   BIGINT REFERENCES bank_transactions (txn_id),
    note            TEXT,
    fired           INTEGER NOT NULL DEFAULT 0,
    last_fired_at   {{ ts }},
    disabled_at     {{ ts }},
    disabled_by     TEXT,
    disable_reason  TEXT,
    CHECK (payer_iban IS NOT NULL OR payer_name IS NOT NULL OR text_pattern IS NOT NULL),
    CHECK ((kind = 'payer' AND client_id IS NOT NULL) OR (kind = 'non_receivable' AND category IS NOT NULL))
);
CREATE INDEX ix_match_rules_iban ON match_rules (payer_iban);
CREATE UNIQUE INDEX ux_match_rules_payer_iban ON match_rules (payer_iban, client_id)
    WHERE kind = 'payer' AND payer_name IS NULL AND text_pattern IS NULL AND disabled_at IS NULL;
INSERT INTO match_rules (kind, payer_iban, client_id, source, created_by, created_at, note)
SELECT 'payer', iban, client_id, CASE WHEN source = 'finance' THEN 'person' ELSE 'learned' END,
       CASE WHEN source = 'finance' THEN 'finance' ELSE 'system' END, created_at,
       'payer account from before the workbench'
FROM payer_accounts;
DROP TABLE payer_accounts;

-- A line that is not a client payment (a salary, a supplier, a loan, interest, a refund we paid),
-- booked to its account; undone by a person, a new classification may follow.
CREATE TABLE line_classifications (
    classification_id  {{ id }},
    txn_id             BIGINT NOT NULL REFERENCES bank_transactions (txn_id),
    category           TEXT NOT NULL,
    account            TEXT NOT NULL,
    rule_id            BIGINT REFERENCES match_rules (rule_id),
    decided_by         TEXT NOT NULL,
    decided_at         {{ ts }} NOT NULL,
    reason             TEXT NOT NULL,
    undone_at          {{ ts }},
    undone_by          TEXT,
    undo_reason        TEXT
);
CREATE UNIQUE INDEX ux_line_classifications_live ON line_classifications (txn_id) WHERE undone_at IS NULL;

-- A difference written off an invoice. Above the policy's approval limit it is proposed and waits
-- for a second finance user; approved, it settles the invoice (paid_amount, as a tolerated
-- short payment does) and is journaled.
CREATE TABLE write_offs (
    write_off_id   {{ id }},
    invoice_id     BIGINT NOT NULL REFERENCES invoices (invoice_id),
    txn_id         BIGINT REFERENCES bank_transactions (txn_id),
    payment_id     BIGINT REFERENCES payments (payment_id),  -- the part payment it completes, if any
    kind           TEXT NOT NULL CHECK (kind IN ('short_payment', 'bank_fee', 'cash_discount', 'bad_debt', 'other')),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    currency       TEXT NOT NULL,
    account        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('proposed', 'approved', 'rejected', 'undone')),
    reason         TEXT NOT NULL,
    proposed_by    TEXT NOT NULL,
    proposed_at    {{ ts }} NOT NULL,
    decided_by     TEXT,
    decided_at     {{ ts }},
    decision_note  TEXT,
    undone_by      TEXT,
    undone_at      {{ ts }},
    undo_reason    TEXT
);
CREATE UNIQUE INDEX ux_write_offs_pending ON write_offs (invoice_id) WHERE status = 'proposed';

-- Money to pay back to a client: unapplied cash or an overpayment. Exported for the bank as a SEPA
-- credit transfer file (pain.001) with the day's other refunds.
CREATE TABLE refunds (
    refund_id      {{ id }},
    client_id      TEXT REFERENCES clients (client_id),   -- none when the payer is no client
    txn_id         BIGINT REFERENCES bank_transactions (txn_id),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    currency       TEXT NOT NULL,
    payee_name     TEXT NOT NULL,
    payee_iban     TEXT,
    status         TEXT NOT NULL CHECK (status IN ('requested', 'exported', 'cancelled')),
    reason         TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    requested_at   {{ ts }} NOT NULL,
    exported_at    {{ ts }},
    export_file    TEXT,
    cancelled_by   TEXT,
    cancelled_at   {{ ts }},
    cancel_reason  TEXT
);

-- A person's request, once: a double click or a retried request with the same key returns the
-- first answer instead of acting twice.
CREATE TABLE idempotency_keys (
    idem_key      TEXT PRIMARY KEY,
    action        TEXT NOT NULL,
    actor         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    result        TEXT NOT NULL,          -- JSON
    created_at    {{ ts }} NOT NULL
);

-- Closing an exception or a quarantined row with a note: the row stays, marked.
ALTER TABLE exceptions ADD COLUMN resolved_by TEXT;
ALTER TABLE exceptions ADD COLUMN resolution TEXT;
ALTER TABLE quarantine ADD COLUMN resolved_by TEXT;
ALTER TABLE quarantine ADD COLUMN resolution TEXT;

-- Reminders wait while an undecided bank line's best suggestion is the invoice (for at most the
-- policy's reconciliation.hold_reminders_days after the line's booking date: send/reminders.py).
CREATE VIEW likely_payments AS
SELECT i.invoice_id, t.txn_id, t.booking_date
FROM bank_transactions t
JOIN match_suggestions s ON s.txn_id = t.txn_id AND s.rank = 1
JOIN invoices i ON {{ "strpos" if dialect == "postgresql" else "instr" }}(', ' || s.invoice_numbers || ',', ', ' || i.invoice_number || ',') > 0
WHERE t.match_status IN ('new', 'exception') AND t.amount > 0;
