-- Which check refused a quarantined row: the Great Expectations expectation type, "conversion" for a
-- value that passed the suite but cannot be stored, "already_billed" for a change to a billed record.
ALTER TABLE quarantine ADD COLUMN check_name TEXT;
