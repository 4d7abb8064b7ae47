-- The Great Expectations Data Docs page(s) of a load whose rows failed validation, one path per
-- line, for finance to open from the exception report.
ALTER TABLE source_loads ADD COLUMN data_docs TEXT;
