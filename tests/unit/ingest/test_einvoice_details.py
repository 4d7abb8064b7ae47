"""The clients' e-invoicing details through the clients feed: the address, buyer reference, format
and electronic address load as given, and each mistake in them is quarantined with its file, line,
field and a reason that says what is expected. A client without an address loads: its next invoice
waits for one (tests/unit/invoicing/test_client_details.py)."""

from __future__ import annotations

import pytest
from support.paths import CORPUS
from support.sample_data import FEEDS, write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources

DETAILS = CORPUS / "sources" / "clients" / "einvoice-details.csv"

# line of einvoice-details.csv (the header is line 1) -> (field, what the reason says)
MISTAKES = {
    3: ("buyer_reference", "is not a valid Leitweg-ID"),  # check digits off by one
    4: ("buyer_reference", "is required for a German public client: its Leitweg-ID"),
    5: ("buyer_reference", "is not a valid Leitweg-ID"),  # a Grobadressierung of one digit
    6: ("buyer_reference", "is required for the XRechnung formats (BR-DE-15)"),  # a German business
    7: ("einvoice_format", "must be one of facturx, xrechnung-cii, xrechnung-ubl, peppol-bis3"),
    8: ("electronic_address", "must be a Peppol participant id"),  # delivery peppol to an e-mail address
    9: ("electronic_address", "must be a Peppol participant id"),  # peppol-bis3 without an address
    10: ("electronic_address", "is not a valid identifier of its scheme"),  # 0208 with wrong check digits
    11: ("electronic_address", "is not scheme:identifier with a scheme of the EAS code list"),  # 9999
    12: ("electronic_address", "is not scheme:identifier with a scheme of the EAS code list"),  # no scheme
    13: ("postcode", "5 digits in DE and FR"),
    14: ("postcode", "is not a British postcode"),
    15: ("postcode", "is not a Dutch postcode"),
    16: ("postcode", "4 digits in AT, BE, CH and DK"),
    17: ("einvoice_embed_pdf", "is not true, false or empty"),  # and a GLN with a wrong check digit
    18: ("electronic_address", "must be a Peppol participant id"),  # delivery peppol without an address
    20: ("electronic_address", "is not a valid identifier of its scheme"),  # an Austrian VAT id under 9930
}


@pytest.fixture
def loaded(engine, data_dir):
    """The sample feeds, then the file of e-invoicing details (mostly mistakes: a lenient limit)."""
    write_feeds(data_dir / "inbox")
    (data_dir / "inbox" / "clients" / DETAILS.name).write_bytes(DETAILS.read_bytes())
    policy = load_policy()
    policy = policy.model_copy(update={"validation": policy.validation.model_copy(update={"max_bad_row_ratio": 0.95})})
    results = sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    return engine, {r.source.rsplit("/", 1)[-1]: r for r in results}


def test_each_einvoicing_mistake_is_quarantined_with_file_line_field_and_reason(loaded):
    engine, results = loaded
    details = results[DETAILS.name]
    assert (details.status, details.rows_read, details.rows_quarantined) == ("loaded", 19, len(MISTAKES))
    with engine.connect() as conn:
        found = db.rows(
            conn,
            "SELECT source, line_no, record_id, field, reason, check_name FROM quarantine ORDER BY line_no, field",
        )
    assert {q["source"] for q in found} == {DETAILS.name}
    by_line: dict[int, dict[str, str]] = {}
    for q in found:
        by_line.setdefault(q["line_no"], {})[q["field"]] = q["reason"]
    assert set(by_line) == set(MISTAKES)
    for line_no, (field, reason) in MISTAKES.items():
        assert reason in by_line[line_no].get(field, ""), (line_no, by_line[line_no])
    # one mistake, one finding: the line with two mistakes has two, every other line one
    assert by_line[17] == {
        "einvoice_embed_pdf": "is not true, false or empty",
        "electronic_address": by_line[17]["electronic_address"],
    }
    assert "0088 a GLN" in by_line[17]["electronic_address"]
    assert all(len(fields) == 1 for line_no, fields in by_line.items() if line_no != 17)
    assert all(q["check_name"].startswith("expect_column_") for q in found)  # Great Expectations refused them
    # the exception report names the file and line, for finance
    assert f"{DETAILS.name} line 3: buyer_reference is not a valid Leitweg-ID" in details.problems[0]


def test_the_good_rows_load_with_their_details(loaded):
    engine, _ = loaded
    with engine.connect() as conn:
        clients = {c["client_id"]: c for c in db.rows(conn, "SELECT * FROM clients")}
    assert set(clients) == {"C1", "C2", "C3", "C20", "C37"}
    koeln = clients["C20"]
    assert (koeln["address_line1"], koeln["postcode"], koeln["city"]) == ("Willy-Brandt-Platz 2", "50679", "Köln")
    assert (koeln["buyer_reference"], koeln["einvoice_format"]) == ("05315000-12345-30", "xrechnung-ubl")
    assert koeln["electronic_address"] == "0204:05315000-12345-30"
    assert koeln["einvoice_embed_pdf"] in (True, 1) and koeln["address_line2"] is None  # empty means the default
    kingsley = clients["C37"]
    assert (kingsley["electronic_address"], kingsley["einvoice_embed_pdf"]) == ("9932:GB980780684", False)
    # the sample clients name no format: Factur-X, the PDF with its XML inside
    assert {clients[c]["einvoice_format"] for c in ("C1", "C2", "C3")} == {"facturx"}


def _load_clients(engine, data_dir, content: str) -> list[dict]:
    """Only a clients file, loaded with a lenient limit; what the quarantine holds afterwards."""
    folder = data_dir / "inbox" / "clients"
    folder.mkdir(parents=True)
    (folder / "clients.csv").write_text(content, encoding="utf-8")
    policy = load_policy()
    policy = policy.model_copy(update={"validation": policy.validation.model_copy(update={"max_bad_row_ratio": 0.5})})
    (result,) = sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    assert result.status == "loaded", result.message
    with engine.connect() as conn:
        return db.rows(conn, "SELECT feed, source, line_no, field, reason FROM quarantine")


def test_a_client_without_an_address_loads(engine, data_dir):
    header, *rows = FEEDS["clients"].splitlines()
    without_address = [",".join(line.split(",")[:10]) for line in (header, *rows)]  # the required columns only
    assert _load_clients(engine, data_dir, "\n".join(without_address) + "\n") == []
    with engine.connect() as conn:
        assert db.scalar(conn, "SELECT COUNT(*) FROM clients WHERE address_line1 IS NULL AND city IS NULL") == 3


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"delivery": "peppol"}, "electronic_address", "must be a Peppol participant id"),
        ({"delivery": "peppol", "electronic_address": "0208:0403019261"}, None, None),
        (
            {"einvoice_format": "peppol-bis3", "electronic_address": "EM:ap@kessler.example"},
            "electronic_address",
            "not EM",
        ),
        ({"client_type": "public"}, "buyer_reference", "is required for a German public client"),
        ({"client_type": "public", "buyer_reference": "04011000-12345-03"}, None, None),
        (
            {"client_type": "public", "buyer_reference": "04011000-12345-04"},
            "buyer_reference",
            "not a valid Leitweg-ID",
        ),
        ({"buyer_reference": "04011000-12345-04"}, None, None),  # a business's own reference is free text
        ({"einvoice_format": "xrechnung-ubl"}, "buyer_reference", "is required for the XRechnung formats"),
        ({"einvoice_format": "xrechnung-ubl", "buyer_reference": "PO-4711"}, None, None),
        ({"postcode": "2045"}, "postcode", "5 digits in DE and FR"),
        ({"country": "AT", "postcode": "2045"}, None, None),
    ],
)
def test_a_rule_that_depends_on_another_column(engine, data_dir, change, field, reason):
    """Kessler (C1, a German business) changed one way at a time: each rule fires only where it should."""
    header, c1, *rest = FEEDS["clients"].splitlines()
    columns = [*header.split(","), "buyer_reference", "einvoice_format", "electronic_address"]
    row = dict(zip(columns, [*c1.split(","), "", "", ""], strict=True)) | change
    found = _load_clients(
        engine, data_dir, "\n".join([",".join(columns), ",".join(row[c] for c in columns), *(r + ",,," for r in rest)])
    )
    if field is None:
        assert found == []
    else:
        assert [(q["source"], q["line_no"], q["field"]) for q in found] == [("clients.csv", 2, field)]
        assert reason in found[0]["reason"]


def test_a_contracts_purchase_order_loads(engine, data_dir):
    header, k1, *rest = FEEDS["contracts"].splitlines()
    contracts = [f"{header},purchase_order", f"{k1},4500012345", *(f"{row}," for row in rest)]
    write_feeds(data_dir / "inbox", contracts="\n".join(contracts) + "\n")
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=load_policy()))
    with engine.connect() as conn:
        orders = {r["contract_id"]: r["purchase_order"] for r in db.rows(conn, "SELECT * FROM contracts")}
    assert orders == {"K1": "4500012345", "K2": None, "K3": None, "K4": None}
