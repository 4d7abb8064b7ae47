-- Clients changed since the last load, from the CRM's database.
-- The columns are the clients feed's (see docs/sources.md): the required ones, then the optional
-- ones a CRM usually holds (tax exemption, postal address, buyer reference, e-invoice format and
-- electronic address), plus updated_at, the watermark. A column the CRM does not have may be left
-- out of the SELECT: it reads as empty, which means its default (no address: the client's next
-- invoice waits for one). Adapt the FROM and the column expressions to the source; keep the names,
-- the WHERE and the ORDER BY.
SELECT client_id,
       name,
       email,
       country,
       currency,
       vat_id,
       client_type,
       payment_terms_days,
       delivery,
       language,
       tax_exempt,
       address_line1,
       address_line2,
       postcode,
       city,
       country_subdivision,
       buyer_reference,
       einvoice_format,
       electronic_address,
       einvoice_embed_pdf,
       updated_at
FROM clients
WHERE updated_at > :watermark
ORDER BY updated_at, client_id
