-- Read-only views for finance and BI tools: amounts in major units, one row per business object.
-- The major() macro divides minor units by the currency factor without integer division.

CREATE VIEW report_invoices AS
SELECT i.invoice_id,
       i.invoice_number,
       i.document_type,
       o.invoice_number AS credited_invoice_number,
       i.client_id,
       i.contract_id,
       i.billing_type,
       CASE WHEN i.document_type = 'invoice' AND i.status IN ('issued', 'sent', 'partially_paid')
                 AND i.due_date < CURRENT_DATE THEN 'overdue' ELSE i.status END AS status,
       i.currency,
       i.issue_date,
       i.due_date,
       i.period_start,
       i.period_end,
       {{ major("i.net_amount", "c.factor") }} AS net_amount,
       {{ major("i.tax_amount", "c.factor") }} AS tax_amount,
       {{ major("i.gross_amount", "c.factor") }} AS gross_amount,
       {{ major("i.paid_amount", "c.factor") }} AS paid_amount,
       {{ major("i.credited_amount", "c.factor") }} AS credited_amount,
       {{ major("CASE WHEN i.invoice_number IS NULL OR i.document_type = 'credit_note' THEN 0 "
                "ELSE i.gross_amount - i.credited_amount - i.paid_amount END", "c.factor") }} AS open_amount,
       i.base_currency,
       i.fx_rate,
       i.fx_rate_date,
       {{ major("i.base_gross_amount", "b.factor") }} AS base_gross_amount
FROM invoices i
JOIN currencies c ON c.code = i.currency
JOIN currencies b ON b.code = i.base_currency
LEFT JOIN invoices o ON o.invoice_id = i.credited_invoice_id;

CREATE VIEW report_invoice_lines AS
SELECT i.invoice_number,
       l.invoice_id,
       l.line_no,
       l.kind,
       l.description,
       l.service_code,
       l.project_code,
       {{ major("l.quantity", "100") }} AS quantity,
       l.unit,
       {{ major("l.unit_price", "c.factor") }} AS unit_price,
       {{ major("l.net_amount", "c.factor") }} AS net_amount,
       l.tax_code,
       {{ major("l.tax_rate_bp", "100") }} AS tax_rate_percent,
       i.currency,
       l.line_id,
       l.credited_line_id
FROM invoice_lines l
JOIN invoices i ON i.invoice_id = l.invoice_id
JOIN currencies c ON c.code = i.currency;

-- Lineage: the source records behind every invoice line, so "why is this amount X" has an answer.
CREATE VIEW report_line_sources AS
SELECT l.line_id, 'time_entry' AS source_type, t.entry_id AS source_id, t.work_date AS source_date,
       {{ major("t.hours", "100") }} AS recorded_quantity, {{ major("t.billed_hours", "100") }} AS billed_quantity
FROM time_entries t JOIN invoice_lines l ON l.line_id = t.invoice_line_id
UNION ALL
SELECT l.line_id, 'milestone', m.milestone_id, m.completed_at, 1, 1
FROM milestones m JOIN invoice_lines l ON l.line_id = m.invoice_line_id
UNION ALL
SELECT l.line_id, 'retainer_period', r.contract_id || ':' || CAST(r.period_start AS TEXT), r.service_from, 1, 1
FROM retainer_periods r JOIN invoice_lines l ON l.line_id = r.invoice_line_id
UNION ALL
SELECT l.line_id, 'expense', e.expense_id, e.incurred_on, 1, 1
FROM expenses e JOIN invoice_lines l ON l.line_id = e.invoice_line_id;

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

CREATE VIEW report_exceptions AS
SELECT e.category,
       e.subject_type,
       e.subject_id,
       e.currency,
       {{ major("e.amount", "COALESCE(c.factor, 100)") }} AS amount,
       e.detail,
       e.created_at,
       e.resolved_at
FROM exceptions e
LEFT JOIN currencies c ON c.code = e.currency
UNION ALL
SELECT 'quarantined_row',
       'source_row',
       q.feed || ':' || q.source || ':' || CAST(q.line_no AS TEXT),
       NULL,
       NULL,
       q.field || ': ' || q.reason,
       q.created_at,
       q.resolved_at
FROM quarantine q;

-- The audit trail is append-only: the database itself refuses to rewrite it.
{% if dialect == "postgresql" %}
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
{% else %}
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
{% endif %}
