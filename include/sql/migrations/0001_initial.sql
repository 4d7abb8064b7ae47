-- The billing database, first version. Portable between SQLite and PostgreSQL; the only
-- differences are the Jinja macros id (an identity primary key) and ts (a timestamp).
-- Money columns are integer minor units (BIGINT) next to an ISO 4217 currency code.
-- Unique keys carry the "exactly once" invariant: they, not the code, refuse a second billing.

CREATE TABLE currencies (
    code        TEXT PRIMARY KEY,
    minor_unit  INTEGER NOT NULL,
    factor      INTEGER NOT NULL          -- 10 ** minor_unit, for the reporting views
);

-- Every file (or query) a feed has loaded, by content hash: a re-dropped file is recognised.
CREATE TABLE source_loads (
    load_id            {{ id }},
    feed               TEXT NOT NULL,
    source             TEXT NOT NULL,     -- file path or query name
    sha256             TEXT NOT NULL,
    status             TEXT NOT NULL,     -- loaded, rejected
    rows_read          INTEGER NOT NULL DEFAULT 0,
    rows_accepted      INTEGER NOT NULL DEFAULT 0,
    rows_quarantined   INTEGER NOT NULL DEFAULT 0,
    message            TEXT,
    loaded_at          {{ ts }} NOT NULL,
    UNIQUE (feed, sha256)
);

-- Rows that failed validation, with the reason; nothing is silently dropped.
CREATE TABLE quarantine (
    quarantine_id  {{ id }},
    load_id        BIGINT NOT NULL REFERENCES source_loads (load_id),
    feed           TEXT NOT NULL,
    source         TEXT NOT NULL,
    line_no        INTEGER NOT NULL,      -- line in the file, header is line 1
    record_id      TEXT,
    field          TEXT NOT NULL,
    value          TEXT,
    reason         TEXT NOT NULL,
    raw            TEXT NOT NULL,         -- the whole row as JSON
    resolved_at    {{ ts }},
    created_at     {{ ts }} NOT NULL,
    UNIQUE (load_id, line_no, field)
);

CREATE TABLE clients (
    client_id           TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    email               TEXT NOT NULL,
    country             TEXT NOT NULL,
    currency            TEXT NOT NULL REFERENCES currencies (code),
    vat_id              TEXT,
    client_type         TEXT NOT NULL CHECK (client_type IN ('enterprise', 'smb', 'public')),
    payment_terms_days  INTEGER NOT NULL CHECK (payment_terms_days >= 0),
    delivery            TEXT NOT NULL CHECK (delivery IN ('email', 'portal', 'both')),
    language            TEXT NOT NULL,
    tax_exempt          BOOLEAN NOT NULL DEFAULT FALSE,  -- e.g. a charity or public body exempt from VAT
    load_id             BIGINT REFERENCES source_loads (load_id)
);

CREATE TABLE contracts (
    contract_id        TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL REFERENCES clients (client_id),
    billing_type       TEXT NOT NULL CHECK (billing_type IN ('time_and_materials', 'milestone', 'retainer')),
    project_code       TEXT NOT NULL,
    signed_at          DATE,
    start_date         DATE NOT NULL,
    end_date           DATE,
    currency           TEXT NOT NULL REFERENCES currencies (code),
    cap_amount         BIGINT,
    retainer_amount    BIGINT,
    retainer_interval  TEXT CHECK (retainer_interval IN ('monthly', 'quarterly', 'yearly')),
    billing_increment  INTEGER NOT NULL DEFAULT 1 CHECK (billing_increment >= 1),  -- hundredths of an hour: 25 = 0.25 h
    discount_bp        INTEGER NOT NULL DEFAULT 0 CHECK (discount_bp BETWEEN 0 AND 10000),  -- on fees, basis points
    expense_markup_bp  INTEGER NOT NULL DEFAULT 0 CHECK (expense_markup_bp >= 0),
    load_id            BIGINT REFERENCES source_loads (load_id)
);

CREATE TABLE rate_cards (
    contract_id  TEXT NOT NULL REFERENCES contracts (contract_id),
    role         TEXT NOT NULL,
    hourly_rate  BIGINT NOT NULL CHECK (hourly_rate >= 0),
    valid_from   DATE NOT NULL,
    valid_to     DATE,
    load_id      BIGINT REFERENCES source_loads (load_id),
    PRIMARY KEY (contract_id, role, valid_from)
);

-- Billing runs: one batch per DAG run (a re-run of the same run reuses it).
CREATE TABLE billing_batches (
    batch_id        {{ id }},
    run_id          TEXT NOT NULL UNIQUE,
    period_start    DATE NOT NULL,
    period_end      DATE NOT NULL,          -- exclusive
    status          TEXT NOT NULL,          -- open, priced, done
    invoices_created INTEGER NOT NULL DEFAULT 0,
    started_at      {{ ts }} NOT NULL,
    finished_at     {{ ts }}
);

-- Gapless numbering: one row per series, bumped in the same transaction that issues.
CREATE TABLE invoice_series (
    series       TEXT PRIMARY KEY,
    last_number  INTEGER NOT NULL
);

CREATE TABLE invoices (
    invoice_id       {{ id }},
    document_type    TEXT NOT NULL DEFAULT 'invoice' CHECK (document_type IN ('invoice', 'credit_note')),
    credited_invoice_id BIGINT REFERENCES invoices (invoice_id),  -- the invoice a credit note corrects
    batch_id         BIGINT REFERENCES billing_batches (batch_id),
    contract_id      TEXT NOT NULL REFERENCES contracts (contract_id),
    client_id        TEXT NOT NULL REFERENCES clients (client_id),
    billing_type     TEXT NOT NULL,
    period_start     DATE NOT NULL,
    period_end       DATE NOT NULL,          -- exclusive
    trigger_key      TEXT NOT NULL,          -- 'cycle', the id of the event that earned it, or 'credit-note:N'
    status           TEXT NOT NULL CHECK (status IN ('draft', 'awaiting_approval', 'approved', 'issued',
                         'sent', 'partially_paid', 'paid', 'overpaid', 'credited')),
    review_reason    TEXT,
    currency         TEXT NOT NULL REFERENCES currencies (code),
    net_amount       BIGINT NOT NULL,
    tax_amount       BIGINT NOT NULL,
    gross_amount     BIGINT NOT NULL,
    paid_amount      BIGINT NOT NULL DEFAULT 0,
    credited_amount  BIGINT NOT NULL DEFAULT 0,  -- gross of the credit notes issued against it
    base_currency    TEXT NOT NULL REFERENCES currencies (code),
    fx_rate          TEXT NOT NULL,          -- units of the invoice currency per 1 base unit (ECB style)
    fx_rate_date     DATE,                   -- the feed's rate date; NULL when the policy's fallback was used
    base_gross_amount BIGINT NOT NULL,       -- gross in the base currency, for thresholds and reporting
    series           TEXT,
    invoice_number   TEXT UNIQUE,            -- assigned at issue, never at draft
    issue_date       DATE,
    due_date         DATE,
    payment_reference TEXT UNIQUE,
    pdf_path         TEXT,
    pdf_sha256       TEXT,
    created_at       {{ ts }} NOT NULL,
    UNIQUE (contract_id, period_start, trigger_key),
    CHECK (gross_amount = net_amount + tax_amount),
    CHECK ((invoice_number IS NULL) = (status IN ('draft', 'awaiting_approval', 'approved')))
);

CREATE TABLE invoice_lines (
    line_id        {{ id }},
    invoice_id     BIGINT NOT NULL REFERENCES invoices (invoice_id),
    line_no        INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('time', 'milestone', 'retainer', 'expense', 'discount', 'cap')),
    description    TEXT NOT NULL,
    service_code   TEXT NOT NULL,
    project_code   TEXT NOT NULL,
    quantity       BIGINT NOT NULL,           -- hundredths: 750 = 7.50 hours or units
    unit           TEXT NOT NULL,             -- HUR (hour) or C62 (one), UN/ECE rec. 20
    unit_price     BIGINT NOT NULL,           -- minor units per whole unit
    net_amount     BIGINT NOT NULL,
    tax_code       TEXT NOT NULL,
    tax_rate_bp    INTEGER NOT NULL,          -- basis points: 1900 = 19 %
    credited_line_id BIGINT REFERENCES invoice_lines (line_id),  -- on a credit note: the line it corrects
    UNIQUE (invoice_id, line_no)
);

-- Tax per rate group over the sum of line net amounts (EN 16931), stored as issued.
CREATE TABLE invoice_taxes (
    invoice_id   BIGINT NOT NULL REFERENCES invoices (invoice_id),
    tax_code     TEXT NOT NULL,
    tax_rate_bp  INTEGER NOT NULL,
    base_amount  BIGINT NOT NULL,
    tax_amount   BIGINT NOT NULL,
    exemption_reason TEXT,               -- the legal note of a zero-rated category (EN 16931 BT-120)
    PRIMARY KEY (invoice_id, tax_code, tax_rate_bp)
);

-- Source records point at the invoice line that billed them: one column, so at most one line.
CREATE TABLE time_entries (
    entry_id          TEXT PRIMARY KEY,
    contract_id       TEXT NOT NULL REFERENCES contracts (contract_id),
    project_code      TEXT NOT NULL,
    employee_id       TEXT NOT NULL,
    role              TEXT NOT NULL,
    work_date         DATE NOT NULL,
    hours             INTEGER NOT NULL CHECK (hours > 0),   -- hundredths of an hour
    billed_hours      INTEGER,                              -- hours after the contract's increment, once billed
    billable          BOOLEAN NOT NULL,
    description       TEXT,
    load_id           BIGINT REFERENCES source_loads (load_id),
    invoice_line_id   BIGINT REFERENCES invoice_lines (line_id)
);
CREATE INDEX ix_time_entries_unbilled ON time_entries (contract_id, work_date) WHERE invoice_line_id IS NULL;

CREATE TABLE milestones (
    milestone_id      TEXT PRIMARY KEY,
    contract_id       TEXT NOT NULL REFERENCES contracts (contract_id),
    name              TEXT NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount > 0),
    completed_at      DATE,
    load_id           BIGINT REFERENCES source_loads (load_id),
    invoice_line_id   BIGINT REFERENCES invoice_lines (line_id)
);

-- One row per retainer interval billed; period_* is the calendar interval, service_* the part of
-- it the contract covers (a partial first or last interval is prorated by days).
CREATE TABLE retainer_periods (
    contract_id       TEXT NOT NULL REFERENCES contracts (contract_id),
    period_start      DATE NOT NULL,
    period_end        DATE NOT NULL,
    service_from      DATE NOT NULL,
    service_to        DATE NOT NULL,          -- exclusive
    invoice_line_id   BIGINT NOT NULL REFERENCES invoice_lines (line_id),
    PRIMARY KEY (contract_id, period_start)
);

-- Reimbursable expenses, billed at cost plus the contract's markup.
CREATE TABLE expenses (
    expense_id        TEXT PRIMARY KEY,
    contract_id       TEXT NOT NULL REFERENCES contracts (contract_id),
    incurred_on       DATE NOT NULL,
    category          TEXT NOT NULL,
    description       TEXT NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount > 0),  -- minor units of the contract currency
    load_id           BIGINT REFERENCES source_loads (load_id),
    invoice_line_id   BIGINT REFERENCES invoice_lines (line_id)
);

-- Exchange rates from the FX feed, ECB style: 1 base unit = rate units of the currency.
CREATE TABLE fx_rates (
    rate_date         DATE NOT NULL,
    currency          TEXT NOT NULL REFERENCES currencies (code),
    rate              TEXT NOT NULL,          -- a decimal string, kept exactly as published
    load_id           BIGINT REFERENCES source_loads (load_id),
    PRIMARY KEY (currency, rate_date)
);

-- Bank side ------------------------------------------------------------------------------------

CREATE TABLE bank_statements (
    statement_pk     {{ id }},
    load_id          BIGINT NOT NULL REFERENCES source_loads (load_id),
    account_iban     TEXT NOT NULL,
    statement_id     TEXT NOT NULL,
    currency         TEXT NOT NULL,
    opening_balance  BIGINT,
    closing_balance  BIGINT,
    from_date        DATE,
    to_date          DATE,
    UNIQUE (account_iban, statement_id)
);

CREATE TABLE bank_transactions (
    txn_id             {{ id }},
    statement_pk       BIGINT NOT NULL REFERENCES bank_statements (statement_pk),
    account_iban       TEXT NOT NULL,
    dedup_key          TEXT NOT NULL,          -- bank reference, else content hash + occurrence
    booking_date       DATE NOT NULL,
    value_date         DATE,
    amount             BIGINT NOT NULL,        -- signed: credits positive
    currency           TEXT NOT NULL,
    counterparty_name  TEXT,
    counterparty_iban  TEXT,
    remittance         TEXT,
    structured_ref     TEXT,
    bank_ref           TEXT,
    match_status       TEXT NOT NULL DEFAULT 'new',  -- new, matched, exception, ignored
    UNIQUE (account_iban, dedup_key)
);

CREATE TABLE payments (
    payment_id    {{ id }},
    txn_id        BIGINT NOT NULL UNIQUE REFERENCES bank_transactions (txn_id),
    client_id     TEXT REFERENCES clients (client_id),
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    received_on   DATE NOT NULL,
    posted_at     {{ ts }} NOT NULL
);

CREATE TABLE allocations (
    payment_id   BIGINT NOT NULL REFERENCES payments (payment_id),
    invoice_id   BIGINT NOT NULL REFERENCES invoices (invoice_id),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    rule         TEXT NOT NULL,
    evidence     TEXT NOT NULL,
    confidence   NUMERIC NOT NULL,
    PRIMARY KEY (payment_id, invoice_id)
);

-- What finance must look at: unmatched bank lines, cap excess, rejected files...
CREATE TABLE exceptions (
    exception_id  {{ id }},
    category      TEXT NOT NULL,
    subject_type  TEXT NOT NULL,        -- bank_transaction, invoice, contract, source_load
    subject_id    TEXT NOT NULL,
    amount        BIGINT,
    currency      TEXT,
    detail        TEXT NOT NULL,
    run_id        TEXT,
    created_at    {{ ts }} NOT NULL,
    resolved_at   {{ ts }},
    UNIQUE (category, subject_type, subject_id)
);

-- Delivery: one row per document and channel. The Message-ID is written before sending, and
-- sent_at after: a retry finds the row and does not send twice.
CREATE TABLE deliveries (
    delivery_id   {{ id }},
    invoice_id    BIGINT NOT NULL REFERENCES invoices (invoice_id),
    document      TEXT NOT NULL,        -- invoice, reminder-1, reminder-2, ...
    channel       TEXT NOT NULL,        -- email, portal
    recipient     TEXT NOT NULL,
    message_id    TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL,        -- pending, sent, failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    path          TEXT,
    created_at    {{ ts }} NOT NULL,
    sent_at       {{ ts }},
    UNIQUE (invoice_id, document, channel)
);

-- Append-only: who did what to which record, when and why.
CREATE TABLE audit_events (
    event_id     {{ id }},
    occurred_at  {{ ts }} NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT,
    before_state TEXT,
    after_state  TEXT
);
CREATE INDEX ix_audit_entity ON audit_events (entity_type, entity_id);

INSERT INTO currencies (code, minor_unit, factor) VALUES
    ('EUR', 2, 100), ('USD', 2, 100), ('GBP', 2, 100), ('CHF', 2, 100),
    ('SEK', 2, 100), ('DKK', 2, 100), ('NOK', 2, 100), ('PLN', 2, 100), ('JPY', 0, 1);
