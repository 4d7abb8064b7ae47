-- Claim the hours of one line: only rows still unbilled, so a record can never be billed twice.
UPDATE time_entries
   SET invoice_line_id = :line_id
 WHERE contract_id = :contract_id
   AND role = :role
   AND invoice_line_id IS NULL
   AND billable
   AND work_date < :period_end
   AND work_date >= :valid_from
   AND work_date <= :valid_to  -- 9999-12-31 for an open-ended rate
