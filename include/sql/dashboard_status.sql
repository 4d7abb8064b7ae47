-- Invoices by the status finance talks about, per currency, in minor units. The stored status is
-- the payment lifecycle; two states are derived on top of it: "disputed" (an open dispute on an
-- invoice still owed) and "overdue" (still owed after its due date, as of the day asked). Credit notes are
-- counted on their own line.
SELECT s.status,
       s.currency,
       COUNT(*) AS invoices,
       SUM(s.gross_amount) AS gross_amount,
       SUM(s.open_amount) AS open_amount
FROM (
    SELECT CASE
               WHEN i.document_type = 'credit_note' THEN 'credit_note'
               WHEN i.status IN ('issued', 'sent', 'partially_paid') AND EXISTS (
                    SELECT 1 FROM disputes d
                    WHERE d.invoice_id = i.invoice_id AND d.resolved_at IS NULL) THEN 'disputed'
               WHEN i.status IN ('issued', 'sent', 'partially_paid') AND i.due_date < :today
                    AND i.gross_amount - i.credited_amount > i.paid_amount THEN 'overdue'
               ELSE i.status
           END AS status,
           i.currency,
           i.gross_amount,
           CASE WHEN i.invoice_number IS NULL OR i.document_type = 'credit_note' THEN 0
                ELSE i.gross_amount - i.credited_amount - i.paid_amount END AS open_amount
    FROM invoices i
) s
GROUP BY s.status, s.currency
ORDER BY s.status, s.currency
