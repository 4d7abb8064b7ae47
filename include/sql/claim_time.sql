-- Claim the hours of every time line in claim_keys at once: only rows still unbilled, so a record
-- can never be billed twice, even by a concurrent run (it re-checks invoice_line_id after waiting).
-- Each entry is rounded to its contract's billing increment (hundredths of an hour: 25 = 0.25 h),
-- up or to the nearest (half up) as the policy says, and the billed hours are kept on the entry.
UPDATE time_entries
   SET invoice_line_id = k.line_id,
       billed_hours = CASE
           WHEN k.increment <= 1 THEN time_entries.hours
           WHEN :nearest = 1 THEN ((2 * time_entries.hours + k.increment) / (2 * k.increment)) * k.increment
           ELSE ((time_entries.hours + k.increment - 1) / k.increment) * k.increment
       END
  FROM claim_keys k
 WHERE time_entries.contract_id = k.contract_id
   AND time_entries.role = k.role
   AND time_entries.invoice_line_id IS NULL
   AND time_entries.billable
   AND time_entries.work_date < :period_end
   AND time_entries.work_date >= k.valid_from
   AND time_entries.work_date <= k.valid_to  -- 9999-12-31 for an open-ended rate
