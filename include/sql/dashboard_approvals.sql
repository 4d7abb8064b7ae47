-- Drafts waiting for a finance decision, oldest first, with when they started waiting (the
-- "routed" audit event) and the approval step now asked (tier, approvers, time to answer). The
-- deadline itself lives in Airflow (the review task's response timeout) and is joined in by the
-- dashboard app.
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
       s.step_no,
       s.tier,
       s.approvers,
       s.response_seconds,
       s.escalated,
       COALESCE((SELECT MAX(a.occurred_at) FROM audit_events a
                  WHERE a.entity_type = 'invoice' AND a.entity_id = CAST(i.invoice_id AS TEXT)
                    AND a.action = 'routed'), i.created_at) AS waiting_since
FROM invoices i
JOIN clients c ON c.client_id = i.client_id
LEFT JOIN approval_steps s ON s.invoice_id = i.invoice_id AND s.status = 'pending'
     AND s.step_no = (SELECT MIN(p.step_no) FROM approval_steps p WHERE p.invoice_id = i.invoice_id AND p.status = 'pending')
WHERE i.status = 'awaiting_approval'
ORDER BY waiting_since, i.invoice_id
