-- Batch bookings (CAMT.053 + CAMT.054): one collective entry on the statement, the single payments
-- in a debit/credit notification. A batch is one row here, whichever half arrived first; its keys
-- (the bank's entry reference, the customer's payment-information or message id) find it when the
-- other half comes. The lines of both halves point at it (bank_transactions.batch_id); the
-- collective line has match_status 'batch', which the nightly run never takes, so the DETAILS are
-- what is matched, once (collect/importing.py: _link_batches).
--
-- state: awaiting_details  the statement's collective entry is in, its details are not yet
--        detailed          the details are in (and used); the statement's line, if in, is 'batch'
--        itemised          the statement carried the payments itself: a notification adds nothing
--        undetailed        a statement entry without details: a notification that fits takes its place
--                          while the line is still undecided
--        mismatch          the two halves do not add up: neither is used automatically (an exception)
--        unused            the details came after the statement's line was decided: not used
CREATE TABLE bank_batches (
    batch_id           {{ id }},
    account_iban       TEXT NOT NULL,
    currency           TEXT NOT NULL,
    booking_date       DATE NOT NULL,
    amount             BIGINT NOT NULL,          -- signed, the entry's amount
    payments           INTEGER,                  -- NbOfTxs, when the bank says
    state              TEXT NOT NULL CHECK (state IN ('awaiting_details', 'detailed', 'itemised', 'undetailed',
                                                       'mismatch', 'unused')),
    linked_by          TEXT,                     -- reference, amount and date
    collective_txn_id  BIGINT REFERENCES bank_transactions (txn_id),
    details_load_id    BIGINT REFERENCES source_loads (load_id),
    created_at         {{ ts }} NOT NULL
);
CREATE INDEX ix_bank_batches_open ON bank_batches (account_iban, booking_date, amount);

CREATE TABLE bank_batch_keys (
    account_iban  TEXT NOT NULL,
    batch_key     TEXT NOT NULL,                 -- ref:<AcctSvcrRef>, pmtinf:<day>:<amount>:<id>, msg:...
    batch_id      BIGINT NOT NULL REFERENCES bank_batches (batch_id),
    PRIMARY KEY (account_iban, batch_key)
);

ALTER TABLE bank_transactions ADD COLUMN batch_id BIGINT REFERENCES bank_batches (batch_id);
