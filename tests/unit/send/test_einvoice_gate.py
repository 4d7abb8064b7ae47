"""Nothing leaves that its receiver's rules would reject: every stored e-invoice passed the XSD,
EN 16931 and its CIUS when it was rendered. One that fails waits, named in the exception report with
the rules it broke, and goes out on the first run after its cause is fixed; the others go on."""

from __future__ import annotations

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.send import outbox


def _exception(engine, invoice_id: int) -> dict | None:
    with engine.connect() as conn:
        found = db.rows(
            conn,
            "SELECT * FROM exceptions WHERE category = 'einvoice_rejected' AND subject_id = :i",
            {"i": str(invoice_id)},
        )
    return found[0] if found else None


def _stored(engine, invoice_id: int) -> dict:
    with engine.connect() as conn:
        return db.rows(conn, "SELECT * FROM invoices WHERE invoice_id = :i", {"i": invoice_id})[0]


def test_an_xrechnung_without_the_sellers_phone_waits_then_goes_out_once_fixed(
    engine, data_dir, smtp, issue_in_formats
):
    month = issue_in_formats(c1_format="xrechnung-ubl")
    ids = [inv["invoice_id"] for inv in month.values()]
    k1, k2 = month["K1"]["invoice_id"], month["K2"]["invoice_id"]
    # XRechnung wants a telephone for the seller's contact (BR-DE-6); Factur-X does not
    policy = load_policy()
    no_phone = policy.model_copy(update={"seller": policy.seller.model_copy(update={"contact_phone": ""})})

    sent = outbox.render_invoices(runtime.run_for(engine, actor="test", policy=no_phone), ids)

    assert k1 not in sent and k2 in sent  # Kessler's XRechnung waits, Brightwater's Factur-X goes on
    assert _stored(engine, k1)["pdf_sha256"] is None and _stored(engine, k1)["xml_sha256"] is None
    assert not (data_dir / "outbox" / "xml" / f"{month['K1']['invoice_number']}.xml").exists()
    reported = _exception(engine, k1)
    assert reported and reported["resolved_at"] is None
    assert "BR-DE-6" in reported["detail"] and month["K1"]["invoice_number"] in reported["detail"]
    outbox.deliver_invoices(runtime.run_for(engine, actor="test", policy=no_phone), sent)
    # Brightwater (e-mail and portal) got its invoice; Kessler's two wait (Lyon takes the portal only)
    assert [m.message["X-Invoice-Number"] for m in smtp.messages] == [month["K2"]["invoice_number"]]

    again = outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)  # phone restored
    assert k1 in again and _stored(engine, k1)["xml_sha256"] is not None
    assert _exception(engine, k1)["resolved_at"] is not None
    outbox.deliver_invoices(runtime.run_for(engine, actor="test", policy=policy), again)
    assert month["K1"]["invoice_number"] in {m.message["X-Invoice-Number"] for m in smtp.messages}
