-- Drafts waiting for a finance decision, oldest first, with when they started waiting (the
-- "routed" audit event). The deadline itself lives in Airflow (the review task's response timeout)
-- and is joined in by the dashboard app.
SELECT i.invoice_id,
       i.client_id,
       c.name AS client_name,
       i.contract_id,
       i.currency,
       i.gross_amount,
       i.base_currency,
       i.base_gross_amount,
       i.review_reason,
       i.period_start,
       COALESCE((SELECT MAX(a.occurred_at) FROM audit_events a
                  WHERE a.entity_type = 'invoice' AND a.entity_id = CAST(i.invoice_id AS TEXT)
                    AND a.action = 'routed'), i.created_at) AS waiting_since
FROM invoices i
JOIN clients c ON c.client_id = i.client_id
WHERE i.status = 'awaiting_approval'
ORDER BY waiting_since, i.invoice_id
