-- Open receivables for the billing dashboard: every issued invoice with money still owed, its
-- open amount in the invoice currency and in the base currency (at the invoice's own rate), the
-- highest reminder level sent so far, and whether a dispute is open. Aging buckets, upcoming
-- reminders and the overdue count are computed from these rows in invoiceflow.dashboard.
SELECT i.invoice_id,
       i.invoice_number,
       i.client_id,
       c.name AS client_name,
       i.currency,
       i.status,
       i.issue_date,
       i.due_date,
       i.gross_amount,
       i.base_currency,
       i.base_gross_amount,
       i.gross_amount - i.credited_amount - i.paid_amount AS open_amount,
       (SELECT MAX(CAST(SUBSTR(d.document, 10) AS INTEGER)) FROM deliveries d
         WHERE d.invoice_id = i.invoice_id AND d.document LIKE 'reminder-%'
           AND d.status IN ('sent', 'sending')) AS last_level,
       (SELECT COUNT(*) FROM disputes x
         WHERE x.invoice_id = i.invoice_id AND x.resolved_at IS NULL) AS disputed
FROM invoices i
JOIN clients c ON c.client_id = i.client_id
WHERE i.document_type = 'invoice'
  AND i.invoice_number IS NOT NULL
  AND i.status IN ('issued', 'sent', 'partially_paid')
  AND i.gross_amount - i.credited_amount > i.paid_amount
ORDER BY i.due_date, i.invoice_number
