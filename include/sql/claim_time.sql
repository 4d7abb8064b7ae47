-- Claim the hours of one line: only rows still unbilled, so a record can never be billed twice.
-- Each entry is rounded to the contract's billing increment (hundredths of an hour: 25 = 0.25 h),
-- up or to the nearest (half up) as the policy says, and the billed hours are kept on the entry.
UPDATE time_entries
   SET invoice_line_id = :line_id,
       billed_hours = CASE
           WHEN :increment <= 1 THEN hours
           WHEN :nearest = 1 THEN ((2 * hours + :increment) / (2 * :increment)) * :increment
           ELSE ((hours + :increment - 1) / :increment) * :increment
       END
 WHERE contract_id = :contract_id
   AND role = :role
   AND invoice_line_id IS NULL
   AND billable
   AND work_date < :period_end
   AND work_date >= :valid_from
   AND work_date <= :valid_to  -- 9999-12-31 for an open-ended rate
RETURNING billed_hours
