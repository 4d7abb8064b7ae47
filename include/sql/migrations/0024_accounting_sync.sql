-- The books in an accounting system, both ways (issue 24): what invoiceflow pushed to each target
-- and what it pulled back, so each happens once whatever fails in between.
--
-- accounting_sync      one row per document (customer, invoice, credit note, journal entry) and
--                      target: the target's id and number, when it was pushed, its state
--                      (pending: being pushed, the target may hold a draft of it; pushed; failed:
--                      the target refused it, last_error says why; stopped: a code is not mapped,
--                      nothing of it was sent).
-- accounting_watermarks per target, the last record of the target a pull has seen.
-- accounting_pulled    each record pulled from a target, once (its id in the target), and what was
--                      done with it: applied, conflict (the books and invoiceflow disagree: an
--                      exception names both), unmatched (a credit note made there), ignored (not
--                      applicable, the exception says why). A payment that settles no invoice of
--                      ours yet is not recorded: the pulls read it again until it does.
-- booked_payments      a payment or write-off booked by a person in the accounting system and
--                      applied to an invoice (collect/decisions/booked.py): there is no bank line.
CREATE TABLE accounting_sync (
    target           TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('customer', 'invoice', 'credit_note', 'entry')),
    source_id        TEXT NOT NULL,          -- client id, invoice number, or 'source_type:source_id'
    external_id      TEXT,
    external_number  TEXT,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'pushed', 'failed', 'stopped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    pushed_at        {{ ts }},
    updated_at       {{ ts }} NOT NULL,
    PRIMARY KEY (target, kind, source_id)
);
CREATE INDEX ix_accounting_sync_state ON accounting_sync (target, state);

CREATE TABLE accounting_watermarks (
    target       TEXT PRIMARY KEY,
    last_seen    BIGINT NOT NULL,
    pulled_at    {{ ts }} NOT NULL
);

CREATE TABLE accounting_pulled (
    target        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,              -- payment, write_off, credit_note
    invoice_id    BIGINT REFERENCES invoices (invoice_id),
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    booked_on     DATE NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('applied', 'conflict', 'unmatched', 'ignored')),
    detail        TEXT NOT NULL,
    pulled_at     {{ ts }} NOT NULL,
    PRIMARY KEY (target, external_id)
);

CREATE TABLE booked_payments (
    booked_id     {{ id }},
    invoice_id    BIGINT NOT NULL REFERENCES invoices (invoice_id),
    target        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('payment', 'write_off')),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    currency      TEXT NOT NULL,
    booked_on     DATE NOT NULL,
    reason        TEXT NOT NULL,
    applied_by    TEXT NOT NULL,
    applied_at    {{ ts }} NOT NULL,
    UNIQUE (target, external_id)
);
CREATE INDEX ix_booked_payments_invoice ON booked_payments (invoice_id);
