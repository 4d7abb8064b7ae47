-- The time entries an issued invoice billed, for its timesheet appendix: each entry points at the
-- invoice line that billed it, so this is exactly what the invoice charges, hours after rounding.
SELECT t.entry_id, t.project_code, t.role, t.work_date, t.employee_id,
       COALESCE(t.billed_hours, t.hours) AS hours, COALESCE(t.description, '') AS description
FROM time_entries t
JOIN invoice_lines l ON l.line_id = t.invoice_line_id
WHERE l.invoice_id = :invoice_id
ORDER BY t.project_code, t.role, t.work_date, t.entry_id
