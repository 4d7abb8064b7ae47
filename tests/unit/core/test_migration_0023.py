"""Migration 0023 on a database that already bills: clients, contracts and issued invoices survive
the rebuild of ``clients`` (SQLite), and the new rules hold from then on."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from invoiceflow.core import db


def _upgrade_until(engine, last: str, monkeypatch: pytest.MonkeyPatch) -> None:
    every = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [m for m in every if m[0] <= last])
    db.upgrade(engine)
    monkeypatch.setattr(db, "migrations", lambda: every)


@pytest.fixture
def billing_before_0023(db_url, monkeypatch):
    """A database at 0022 with one client, its contract and an issued invoice."""
    engine = db.engine(db_url)
    _upgrade_until(engine, "0022_credit_applications", monkeypatch)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO clients (client_id, name, email, country, currency, vat_id, client_type, "
                "payment_terms_days, delivery, language) VALUES ('C1', 'Kessler Logistik GmbH', "
                "'ap@kessler.example', 'DE', 'EUR', 'DE123456789', 'enterprise', 30, 'email', 'de')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contracts (contract_id, client_id, billing_type, project_code, start_date, currency) "
                "VALUES ('K1', 'C1', 'time_and_materials', 'PRJ-1', '2026-01-01', 'EUR')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO invoices (contract_id, client_id, billing_type, period_start, period_end, trigger_key, "
                "status, currency, net_amount, tax_amount, gross_amount, base_currency, fx_rate, "
                "base_gross_amount, series, invoice_number, issue_date, due_date, payment_reference, pdf_sha256, "
                "created_at) VALUES ('K1', 'C1', 'time_and_materials', '2026-10-01', '2026-11-01', 'cycle', "
                "'issued', 'EUR', 10000, 1900, 11900, 'EUR', '1', 11900, 'NWD-2026', 'NWD-2026-000001', "
                "'2026-11-02', '2026-12-02', 'RF18NWD2026000001', 'abc', :now)"
            ),
            {"now": db.now()},
        )
    return engine


def test_existing_clients_contracts_and_invoices_survive_and_get_the_defaults(billing_before_0023):
    engine = billing_before_0023
    assert "0023_einvoicing" in db.upgrade(engine)
    with engine.connect() as conn:
        client = db.rows(conn, "SELECT * FROM clients WHERE client_id = 'C1'")[0]
        invoice = db.rows(conn, "SELECT * FROM invoices")[0]
        contract = db.rows(conn, "SELECT * FROM contracts")[0]
    assert client["name"] == "Kessler Logistik GmbH" and client["vat_id"] == "DE123456789"
    assert client["einvoice_format"] == "facturx" and bool(client["einvoice_embed_pdf"]) is True
    assert client["address_line1"] is None  # flagged at the next issue, never invented
    assert contract["purchase_order"] is None and contract["client_id"] == "C1"
    assert invoice["invoice_number"] == "NWD-2026-000001" and invoice["einvoice_format"] is None


def test_after_0023_a_peppol_client_is_accepted_and_an_unknown_format_refused(billing_before_0023):
    engine = billing_before_0023
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO clients (client_id, name, email, country, currency, client_type, payment_terms_days, "
                "delivery, language, einvoice_format, electronic_address) VALUES ('C2', 'Brouwerij NV', "
                "'ap@brouwerij.example', 'BE', 'EUR', 'smb', 30, 'peppol', 'fr', 'peppol-bis3', '0208:0403170701')"
            )
        )
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE clients SET einvoice_format = 'pdf-only' WHERE client_id = 'C2'"))
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE clients SET delivery = 'fax' WHERE client_id = 'C2'"))


def test_an_issued_invoice_keeps_its_format_and_its_xml_hash(billing_before_0023):
    engine = billing_before_0023
    db.upgrade(engine)
    with engine.begin() as conn:  # the XML of an issued invoice is stored once, like its PDF
        conn.execute(text("UPDATE invoices SET xml_path = 'a.xml', xml_sha256 = 'x1'"))
    for change in ("einvoice_format = 'xrechnung-ubl'", "xml_sha256 = 'x2'"):
        with pytest.raises(exc.DBAPIError, match="immutable"), engine.begin() as conn:
            conn.execute(text(f"UPDATE invoices SET {change}"))
    with engine.begin() as conn:  # the lifecycle around it still moves
        conn.execute(text("UPDATE invoices SET status = 'sent'"))
