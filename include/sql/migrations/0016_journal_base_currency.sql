-- The journal in the company's base currency: each entry keeps its own currency (so it balances in
-- it, as before) and records the rate it was revalued at; each line carries its base-currency
-- amount. A payment's entry balances in the base currency through a realised FX gain or loss line
-- (zero in the payment's currency). Entries written before this migration have no base currency.
ALTER TABLE journal_entries ADD COLUMN base_currency TEXT;
ALTER TABLE journal_entries ADD COLUMN fx_rate TEXT;       -- units of the entry currency per 1 base unit (ECB style)
ALTER TABLE journal_entries ADD COLUMN fx_rate_date DATE;  -- the feed's rate date; NULL for the base currency or a fallback
ALTER TABLE journal_lines ADD COLUMN base_debit BIGINT NOT NULL DEFAULT 0 CHECK (base_debit >= 0);
ALTER TABLE journal_lines ADD COLUMN base_credit BIGINT NOT NULL DEFAULT 0 CHECK (base_credit >= 0);
