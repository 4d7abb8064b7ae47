-- Time entries changed since the last load, from the time tracking system's database.
-- The columns are the timesheets feed's (see docs/design.md, source data contract) plus updated_at, the watermark: each load
-- reads only rows changed after the newest updated_at it has loaded. Adapt the FROM and the
-- column expressions to the source; keep the names, the WHERE and the ORDER BY.
SELECT entry_id,
       contract_id,
       project_code,
       employee_id,
       role,
       work_date,
       hours,
       billable,
       description,
       updated_at
FROM time_entries
WHERE updated_at > :watermark
ORDER BY updated_at, entry_id
