-- Look up the source records of an invoice line without scanning every time entry: pricing sums
-- a line's hours by it, lineage reports join on it, and deleting a line checks its foreign keys.
CREATE INDEX ix_time_entries_line ON time_entries (invoice_line_id);
CREATE INDEX ix_milestones_line ON milestones (invoice_line_id);
CREATE INDEX ix_expenses_line ON expenses (invoice_line_id);
