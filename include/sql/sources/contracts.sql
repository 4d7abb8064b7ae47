-- Contracts changed since the last load, from the CRM's database.
-- The columns are the contracts feed's (see docs/sources.md), with the optional purchase_order (the
-- client's PO number, printed on each invoice of the contract as BT-13), plus updated_at, the
-- watermark. An optional column the CRM does not have may be left out of the SELECT: it reads as
-- empty. Adapt the FROM and the column expressions to the source; keep the names, the WHERE and
-- the ORDER BY.
SELECT contract_id,
       client_id,
       billing_type,
       project_code,
       signed_at,
       start_date,
       end_date,
       currency,
       cap_amount,
       retainer_amount,
       retainer_interval,
       billing_increment,
       discount_percent,
       expense_markup_percent,
       purchase_order,
       updated_at
FROM contracts
WHERE updated_at > :watermark
ORDER BY updated_at, contract_id
