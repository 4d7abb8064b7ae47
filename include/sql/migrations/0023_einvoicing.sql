-- sqlite: foreign keys off (the runner rebuilds tables with the checks off and verifies them after)
-- E-invoices every EU rule accepts (issue 23): the buyer's full postal address (EU VAT Directive
-- art. 226, UStG section 14), the references the buyer routes by (BT-10 buyer reference, the
-- Leitweg-ID of a German public client; BT-13 purchase order), and a format per client.
--
-- clients.einvoice_format   facturx (PDF/A-3 with CII, the default), xrechnung-cii, xrechnung-ubl
--                           (plain XML, the PDF a visual copy), peppol-bis3 (UBL for an access point)
-- clients.electronic_address "scheme:identifier" (EN 16931 BT-49 with its EAS scheme), e.g. a Peppol
--                           participant id "0208:0123456789" or "EM:ap@client.example"
-- clients.einvoice_embed_pdf whether the XML formats carry the PDF as an additional document (BG-24)
-- clients.delivery          gains 'peppol': the UBL goes to the outbox of the company's access point
--
-- A client that has no address yet (a database from before this migration) keeps NULLs here; the
-- issue step stops its next invoice with an exception rather than print it without one.
{% set client_columns = """
    address_line1       TEXT,
    address_line2       TEXT,
    postcode            TEXT,
    city                TEXT,
    country_subdivision TEXT,
    buyer_reference     TEXT,
    einvoice_format     TEXT NOT NULL DEFAULT 'facturx'
                        CHECK (einvoice_format IN ('facturx', 'xrechnung-cii', 'xrechnung-ubl', 'peppol-bis3')),
    electronic_address  TEXT,
    einvoice_embed_pdf  BOOLEAN NOT NULL DEFAULT TRUE
""" %}
{% if dialect == "postgresql" %}
ALTER TABLE clients DROP CONSTRAINT clients_delivery_check;
ALTER TABLE clients ADD CONSTRAINT clients_delivery_check CHECK (delivery IN ('email', 'portal', 'both', 'peppol'));
{% for column in client_columns.strip().split(",\n") %}
ALTER TABLE clients ADD COLUMN {{ column.strip() }};
{% endfor %}
{% else %}
CREATE TABLE clients_rebuilt (
    client_id           TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    email               TEXT NOT NULL,
    country             TEXT NOT NULL,
    currency            TEXT NOT NULL REFERENCES currencies (code),
    vat_id              TEXT,
    client_type         TEXT NOT NULL CHECK (client_type IN ('enterprise', 'smb', 'public')),
    payment_terms_days  INTEGER NOT NULL CHECK (payment_terms_days >= 0),
    delivery            TEXT NOT NULL CHECK (delivery IN ('email', 'portal', 'both', 'peppol')),
    language            TEXT NOT NULL,
    tax_exempt          BOOLEAN NOT NULL DEFAULT FALSE,
    load_id             BIGINT REFERENCES source_loads (load_id),
{{ client_columns }}
);
INSERT INTO clients_rebuilt (client_id, name, email, country, currency, vat_id, client_type, payment_terms_days,
                             delivery, language, tax_exempt, load_id)
SELECT client_id, name, email, country, currency, vat_id, client_type, payment_terms_days, delivery, language,
       tax_exempt, load_id
FROM clients;
DROP TABLE clients;
ALTER TABLE clients_rebuilt RENAME TO clients;
{% endif %}

ALTER TABLE contracts ADD COLUMN purchase_order TEXT;

-- The format an invoice was issued in is part of what it says: taken from the client at issue and
-- frozen with the number (NULL on invoices issued before this migration: they are Factur-X). The
-- XML of the plain-XML formats is stored next to the PDF, written once like the PDF's hash.
ALTER TABLE invoices ADD COLUMN einvoice_format TEXT
    CHECK (einvoice_format IN ('facturx', 'xrechnung-cii', 'xrechnung-ubl', 'peppol-bis3'));
ALTER TABLE invoices ADD COLUMN xml_path TEXT;
ALTER TABLE invoices ADD COLUMN xml_sha256 TEXT;

{% set frozen = ["document_type", "credited_invoice_id", "contract_id", "client_id", "billing_type",
                 "period_start", "period_end", "trigger_key", "currency", "net_amount", "tax_amount",
                 "gross_amount", "base_currency", "fx_rate", "fx_rate_date", "base_gross_amount", "series",
                 "invoice_number", "issue_date", "due_date", "payment_reference", "einvoice_format"] %}
{% if dialect == "postgresql" %}
CREATE OR REPLACE FUNCTION invoices_issued_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || OLD.invoice_number || ' is issued and cannot be deleted; issue a credit note';
    END IF;
    IF {% for c in frozen %}NEW.{{ c }} IS DISTINCT FROM OLD.{{ c }}{% if not loop.last %} OR {% endif %}{% endfor %}
       OR (OLD.pdf_sha256 IS NOT NULL AND NEW.pdf_sha256 IS DISTINCT FROM OLD.pdf_sha256)
       OR (OLD.xml_sha256 IS NOT NULL AND NEW.xml_sha256 IS DISTINCT FROM OLD.xml_sha256) THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || OLD.invoice_number || ' is issued and immutable; correct it with a credit note';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
{% else %}
DROP TRIGGER invoices_issued_no_update;
CREATE TRIGGER invoices_issued_no_update BEFORE UPDATE ON invoices
WHEN OLD.invoice_number IS NOT NULL
 AND ({% for c in frozen %}NEW.{{ c }} IS NOT OLD.{{ c }}{% if not loop.last %} OR {% endif %}{% endfor %}
      OR (OLD.pdf_sha256 IS NOT NULL AND NEW.pdf_sha256 IS NOT OLD.pdf_sha256)
      OR (OLD.xml_sha256 IS NOT NULL AND NEW.xml_sha256 IS NOT OLD.xml_sha256))
BEGIN SELECT RAISE(ABORT, 'invoice is issued and immutable; correct it with a credit note'); END;
{% endif %}
