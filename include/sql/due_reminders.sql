-- Open invoices that a reminder may be due for: issued, not fully paid or credited, not disputed,
-- with a due date inside the policy's earliest offset; last_level is the highest reminder level
-- already sent (or possibly sent: 'sending'), so a level is never sent twice. Reminders also wait
-- while finance is about to settle the invoice: a write-off waiting for its second person, or a
-- bank line booked within the hold (hold_since) whose best suggestion is this invoice (likely_payments).
SELECT i.invoice_id, i.due_date, i.currency,
       i.gross_amount - i.credited_amount - i.paid_amount AS open_amount,
       c.email,
       (SELECT MAX(CAST(SUBSTR(d.document, 10) AS INTEGER)) FROM deliveries d
         WHERE d.invoice_id = i.invoice_id AND d.document LIKE 'reminder-%'
           AND d.status IN ('sent', 'sending')) AS last_level
FROM invoices i
JOIN clients c ON c.client_id = i.client_id
WHERE i.document_type = 'invoice'
  AND i.status IN ('issued', 'sent', 'partially_paid')
  AND i.gross_amount - i.credited_amount > i.paid_amount
  AND i.due_date <= :horizon
  AND NOT EXISTS (SELECT 1 FROM disputes x WHERE x.invoice_id = i.invoice_id AND x.resolved_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM write_offs w WHERE w.invoice_id = i.invoice_id AND w.status = 'proposed')
  AND NOT EXISTS (SELECT 1 FROM likely_payments h WHERE h.invoice_id = i.invoice_id AND h.booking_date >= :hold_since)
ORDER BY i.invoice_id
