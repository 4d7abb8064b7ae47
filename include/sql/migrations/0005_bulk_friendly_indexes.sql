-- Indexes shaped for bulk loads and set-based claims of a million time entries.
-- The lineage index only needs billed entries: unbilled ones (invoice_line_id NULL) all shared one
-- key, so every row of a bulk load also had to be added to it; a partial index skips them.
DROP INDEX ix_time_entries_line;
CREATE INDEX ix_time_entries_line ON time_entries (invoice_line_id) WHERE invoice_line_id IS NOT NULL;
-- A time line claims one contract's hours for one role: with the role in the key, the claim reads
-- only the rows it takes.
DROP INDEX ix_time_entries_unbilled;
CREATE INDEX ix_time_entries_unbilled ON time_entries (contract_id, role, work_date) WHERE invoice_line_id IS NULL;
