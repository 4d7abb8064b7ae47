-- Issued invoices are immutable (invariant 4, docs/design.md): once an invoice has a number, the database
-- refuses to change what it says or to touch its lines and taxes. Corrections are credit notes.
-- What may still move is the lifecycle around it: status, paid and credited amounts, and the PDF
-- path and hash, which are written once when the document is rendered.
{% set frozen = ["document_type", "credited_invoice_id", "contract_id", "client_id", "billing_type",
                 "period_start", "period_end", "trigger_key", "currency", "net_amount", "tax_amount",
                 "gross_amount", "base_currency", "fx_rate", "fx_rate_date", "base_gross_amount", "series",
                 "invoice_number", "issue_date", "due_date", "payment_reference"] %}
{% if dialect == "postgresql" %}
CREATE FUNCTION invoices_issued_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || OLD.invoice_number || ' is issued and cannot be deleted; issue a credit note';
    END IF;
    IF {% for c in frozen %}NEW.{{ c }} IS DISTINCT FROM OLD.{{ c }}{% if not loop.last %} OR {% endif %}{% endfor %}
       OR (OLD.pdf_sha256 IS NOT NULL AND NEW.pdf_sha256 IS DISTINCT FROM OLD.pdf_sha256) THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || OLD.invoice_number || ' is issued and immutable; correct it with a credit note';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoices_issued_no_change BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW WHEN (OLD.invoice_number IS NOT NULL) EXECUTE FUNCTION invoices_issued_immutable();

CREATE FUNCTION invoice_parts_immutable() RETURNS trigger AS $$
DECLARE
    number TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT invoice_number INTO number FROM invoices WHERE invoice_id = NEW.invoice_id;
    ELSE
        SELECT invoice_number INTO number FROM invoices WHERE invoice_id = OLD.invoice_id;
    END IF;
    IF number IS NOT NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || number || ' is issued: its ' || TG_TABLE_NAME || ' cannot change';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoice_lines_issued_no_change BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_parts_immutable();
CREATE TRIGGER invoice_taxes_issued_no_change BEFORE INSERT OR UPDATE OR DELETE ON invoice_taxes
    FOR EACH ROW EXECUTE FUNCTION invoice_parts_immutable();
{% else %}
CREATE TRIGGER invoices_issued_no_update BEFORE UPDATE ON invoices
WHEN OLD.invoice_number IS NOT NULL
 AND ({% for c in frozen %}NEW.{{ c }} IS NOT OLD.{{ c }}{% if not loop.last %} OR {% endif %}{% endfor %}
      OR (OLD.pdf_sha256 IS NOT NULL AND NEW.pdf_sha256 IS NOT OLD.pdf_sha256))
BEGIN SELECT RAISE(ABORT, 'invoice is issued and immutable; correct it with a credit note'); END;
CREATE TRIGGER invoices_issued_no_delete BEFORE DELETE ON invoices
WHEN OLD.invoice_number IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'invoice is issued and cannot be deleted; issue a credit note'); END;
{% for table in ["invoice_lines", "invoice_taxes"] %}
{% for op, row in [("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")] %}
CREATE TRIGGER {{ table }}_issued_no_{{ op | lower }} BEFORE {{ op }} ON {{ table }}
WHEN (SELECT invoice_number FROM invoices WHERE invoice_id = {{ row }}.invoice_id) IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'invoice is issued: its {{ table }} cannot change'); END;
{% endfor %}
{% endfor %}
{% endif %}
