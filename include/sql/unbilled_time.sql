-- Billable, not yet billed hours up to the end of the period, per contract, role and rate window.
-- Late entries of earlier periods are included: they go on the next invoice, exactly once.
SELECT te.contract_id,
       te.role,
       rc.valid_from,
       rc.valid_to,
       rc.hourly_rate,
       MIN(te.work_date) AS first_day,
       MAX(te.work_date) AS last_day
FROM time_entries te
JOIN rate_cards rc
  ON rc.contract_id = te.contract_id
 AND rc.role = te.role
 AND rc.valid_from <= te.work_date
 AND (rc.valid_to IS NULL OR te.work_date <= rc.valid_to)
WHERE te.invoice_line_id IS NULL
  AND te.billable
  AND te.work_date < :period_end
GROUP BY te.contract_id, te.role, rc.valid_from, rc.valid_to, rc.hourly_rate
ORDER BY te.contract_id, te.role, rc.valid_from
