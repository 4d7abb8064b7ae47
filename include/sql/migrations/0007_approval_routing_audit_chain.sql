-- Approval routing and a tamper-evident audit trail (issue 5).
--
-- Every audit event from now on carries the hash of the event before it and its own hash over its
-- content (invoiceflow.audit): an event changed, removed or inserted later breaks the chain, and
-- `invoiceflow audit verify` names the first broken event. The unique index refuses a fork: two
-- events cannot both follow the same predecessor. Events written before this migration have no
-- hash; `audit verify` counts them as not covered.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN event_hash TEXT;
CREATE UNIQUE INDEX ux_audit_events_prev_hash ON audit_events (prev_hash);

-- The approval each waiting invoice needs, one row per step of its tier (finance, then director),
-- copied from the policy when it is routed so that a policy change does not move a decision under
-- way. Current state only: every change of it is also an audit event.
CREATE TABLE approval_steps (
    invoice_id        BIGINT NOT NULL REFERENCES invoices (invoice_id),
    step_no           INTEGER NOT NULL,
    tier              TEXT NOT NULL,
    approvers         TEXT NOT NULL,          -- the policy's approver group asked now
    response_seconds  INTEGER NOT NULL,       -- how long the group has to answer
    on_timeout        TEXT NOT NULL CHECK (on_timeout IN ('escalate', 'approve')),
    escalate_to       TEXT NOT NULL,          -- the group asked when the time has passed
    escalated         INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    asked_run_id      TEXT,                   -- the DAG run whose review task asks it now
    decided_by        TEXT,
    decided_at        {{ ts }},
    comment           TEXT,
    PRIMARY KEY (invoice_id, step_no)
);

-- Manual adjustments of a draft (a write-down by a person): they route the invoice to review, and
-- whoever made one may not approve that invoice (segregation of duties).
CREATE TABLE invoice_adjustments (
    adjustment_id  {{ id }},
    invoice_id     BIGINT NOT NULL REFERENCES invoices (invoice_id),
    line_id        BIGINT NOT NULL REFERENCES invoice_lines (line_id),
    amount         BIGINT NOT NULL,           -- net, minor units of the invoice currency
    reason         TEXT NOT NULL,
    adjusted_by    TEXT NOT NULL,             -- user:<id>
    adjusted_at    {{ ts }} NOT NULL
);
CREATE INDEX ix_invoice_adjustments_invoice ON invoice_adjustments (invoice_id);
