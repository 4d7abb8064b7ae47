"""Invoice PDFs: one template per billing type, in the client's language, read back with pypdf."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader
from support.factories import sample_document

from invoiceflow.airflow import runtime
from invoiceflow.demo import documents
from invoiceflow.invoicing import build, einvoice, labels, render
from invoiceflow.invoicing.document import Line, Party, TaxGroup, TimesheetEntry


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.parametrize(
    ("language", "title", "gross", "due"),
    [
        ("en", "Invoice", "€2,451.40", "1 Dec 2026"),
        ("de", "Rechnung", "2.451,40 €", "01.12.2026"),
        ("fr", "Facture", "2 451,40 €", "1 déc. 2026"),
    ],
)
def test_pdf_in_the_clients_language(language, title, gross, due):
    text = _text(render.render_invoice_pdf(sample_document(language=language)))
    assert f"{title} NWD-2026-000012" in text
    assert gross in text.replace("\u202f", " ").replace("\xa0", " ")
    assert due in text and "RF38NWD2026000012" in text and "DE89370400440532013000" in text


@pytest.mark.parametrize("billing_type", ["time_and_materials", "milestone", "retainer"])
def test_one_template_per_billing_type(billing_type):
    intro = {
        "time_and_materials": "based on the hours recorded",
        "milestone": "project milestones",
        "retainer": "retainer for the following period",
    }[billing_type]
    assert intro in _text(render.render_invoice_pdf(sample_document(billing_type=billing_type)))


# Full addresses, the buyer's references and the seller's contact (issue 23) ----------------------

SELLER = replace(
    sample_document().seller,
    street2="Aufgang B",
    subdivision="Berlin",
    contact_name="Accounts receivable",
    contact_phone="+49 30 5557 3100",
)
BUYER = replace(
    documents.BUYER,
    email="accounts@kessler.example",
    street2="3. OG",
    subdivision="Hamburg-Mitte",
    electronic_address="",
)


def _words(text: str) -> str:
    """The PDF's text as a reader sees it: one line, CLDR's special spaces as plain ones."""
    for space in ("\xa0", "\u202f", "\u2009"):
        text = text.replace(space, " ")
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("language", "country", "seller_country", "reference", "order", "contact"),
    [
        ("de", "Deutschland", "Deutschland", "Ihre Referenz", "Ihre Bestellnummer", "Ansprechpartner:"),
        ("en", "Germany", "Germany", "Buyer reference", "Your order", "Contact:"),
        ("fr", "Allemagne", "Allemagne", "Référence acheteur", "Votre commande", "Contact:"),
    ],
)
def test_pdf_shows_both_full_addresses_the_buyers_references_and_the_sellers_contact(
    language, country, seller_country, reference, order, contact
):
    doc = sample_document(
        language=language, seller=SELLER, buyer=BUYER, buyer_reference="KST-4711", purchase_order="PO-2026-0815"
    )
    reader = PdfReader(io.BytesIO(render.render_invoice_pdf(doc)))
    assert len(reader.pages) == 1  # a short invoice stays one A4 page
    lines = [_words(line) for line in reader.pages[0].extract_text().splitlines()]
    seller, contact_line = lines[1], lines[2]  # the letterhead, under the company name
    assert seller.startswith(f"Friedrichstraße 68 · Aufgang B · 10117 Berlin · Berlin · {seller_country} · ")
    phone = labels.LABELS[language]["phone"]
    assert (
        contact_line == f"{contact} Accounts receivable · {phone} +49 30 5557 3100 · billing@northwind-digital.example"
    )
    # the buyer's address block, line by line, as a window envelope shows it
    at = lines.index("Kessler Logistik GmbH")
    assert lines[at + 1 : at + 6] == ["Hafenstraße 12", "3. OG", "20457 Hamburg", "Hamburg-Mitte", country]
    assert f"{reference} KST-4711" in lines and f"{order} PO-2026-0815" in lines
    assert " DE " not in f" {' '.join(lines)} "  # the country by its name, never its code alone


def test_buyer_reference_of_an_xrechnung_client_is_its_leitweg_id_and_unknown_references_are_left_out():
    xrechnung = sample_document(
        language="de", buyer=BUYER, buyer_reference="04011000-12345-03", einvoice_format="xrechnung-cii"
    )
    html = render.render_invoice_html(xrechnung)
    assert "Leitweg-ID" in html and "04011000-12345-03" in html and "Ihre Referenz" not in html
    # a business on XRechnung routes by its own reference (a cost centre): no Leitweg-ID, so not called one
    business = sample_document(language="de", buyer=BUYER, buyer_reference="KST-2472", einvoice_format="xrechnung-ubl")
    html = render.render_invoice_html(business)
    assert "Ihre Referenz" in html and "KST-2472" in html and "Leitweg-ID" not in html
    plain = _words(_text(render.render_invoice_pdf(sample_document(language="de", buyer=BUYER))))
    assert "Ihre Referenz" not in plain and "Leitweg-ID" not in plain and "Ihre Bestellnummer" not in plain
    # a seller without a contact name or phone prints what it has, without empty labels
    bare = _words(_text(render.render_invoice_pdf(sample_document(language="de"))))
    assert "Ansprechpartner" not in bare and "Tel." not in bare and "billing@northwind-digital.example" in bare


@pytest.mark.parametrize(
    ("party", "window"),
    [
        # the UK: the town, then the postcode on its own line
        (
            Party("Brightwater Analytics Ltd", "1 Canal Street", "Manchester", "M1 3HE", "GB", None, "a@b.example"),
            ["1 Canal Street", "Manchester", "M1 3HE", "United Kingdom"],
        ),
        # North America: the state between the town and the ZIP code
        (
            Party(
                "Summit Ridge Inc.", "500 Congress Ave", "Austin", "78701", "US", None, "a@s.example", subdivision="TX"
            ),
            ["500 Congress Ave", "Austin, TX 78701", "United States"],
        ),
        # nothing but the country (an old client not yet completed): no empty lines
        (Party("Old Client AG", "", "", "", "CH", None, "a@o.example"), ["Switzerland"]),
    ],
)
def test_an_address_is_written_the_way_its_country_posts_it(party, window):
    text = [_words(line) for line in _text(render.render_invoice_pdf(sample_document(buyer=party))).splitlines()]
    at = text.index(party.name)
    assert text[at + 1 : at + 1 + len(window)] == window


def test_roles_in_the_timesheet_appendix_are_named_in_the_language_and_an_unknown_one_readably():
    entries = (
        TimesheetEntry("PRJ-1", "data_engineer", date(2026, 10, 2), "E1", 800, "Pipeline", "T1"),
        TimesheetEntry("PRJ-1", "prompt_whisperer", date(2026, 10, 3), "E2", 100, "Prompts", "T2"),
    )
    appendix = _words(_text(render.render_invoice_pdf(sample_document(language="fr", timesheet=entries))))
    assert "Rôle Ingénieur de données" in appendix and "Sous-total PRJ-1 · Ingénieur de données" in appendix
    assert "Rôle Prompt whisperer" in appendix and "Sous-total PRJ-1 · Prompt whisperer" in appendix


def test_hostile_text_is_shown_not_run():
    buyer = Party('Evil <script>alert(1)</script> & "Co" {{ 7*7 }}', "", "", "", "DE", None, "x@evil.example")
    line = Line(1, "Ελληνικά 日本語 {% raw %}<b>x</b>", "S", "P", 100, "C62", 100, 100, "S", 1900)
    doc = sample_document(
        buyer=buyer,
        lines=(line,),
        taxes=(TaxGroup("S", 1900, 100, 19),),
        net_amount=100,
        tax_amount=19,
        gross_amount=119,
    )
    html = render.render_invoice_html(doc)
    assert "&lt;script&gt;" in html and "<script>" not in html and "{{ 7*7 }}" in html and "49" not in html
    assert "{% raw %}&lt;b&gt;" in html and "日本語" in html
    # Greek comes through in the PDF with DejaVu; CJK glyphs need a CJK font (fonts-noto-cjk) installed
    greek = replace(doc, lines=(replace(line, description="Ελληνικά: συμβουλευτικές υπηρεσίες"),))
    assert "συμβουλευτικές" in _text(render.render_invoice_pdf(greek))


def test_rendering_is_deterministic():
    """Also with the attached timesheet CSV, whose file dates are pinned like the PDF's."""
    doc = sample_document(timesheet=(TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E1", 800, "API", "T1"),))
    assert render.render_invoice_pdf(doc) == render.render_invoice_pdf(doc)


def test_many_lines_break_over_pages():
    lines = tuple(Line(n, f"Line {n}", "S", "P", 100, "HUR", 1000, 1000, "S", 1900) for n in range(1, 61))
    doc = sample_document(
        lines=lines, net_amount=60000, taxes=(TaxGroup("S", 1900, 60000, 11400),), tax_amount=11400, gross_amount=71400
    )
    reader = PdfReader(io.BytesIO(render.render_invoice_pdf(doc)))
    assert len(reader.pages) >= 2 and "Line 60" in reader.pages[-1].extract_text()


def test_formats():
    assert labels.format_money(123456, "EUR", "de") == "1.234,56\xa0€"
    assert labels.format_money(123456, "GBP", "en") == "£1,234.56"
    assert labels.format_date(date(2026, 3, 1), "de") == "01.03.2026"
    assert labels.format_quantity(750, "de") == "7,5"
    assert render.pdf_filename(replace(sample_document(), invoice_number="../x/NWD 1")) == "x_NWD_1.pdf"


# Payment details, the timesheet appendix and the e-invoice --------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("payment_reference", "RF39NWD2026000012"), ("iban", "DE89370400440532013001"), ("bic", "COBADEF")],
)
def test_a_wrong_check_digit_is_never_printed(field, value):
    with pytest.raises(
        render.PaymentDetailsError,
        match=field.split("_")[0].upper() if field != "payment_reference" else "ISO 11649",
    ):
        render.render_invoice_pdf(sample_document(**{field: value}))


def test_timesheet_appendix_grouped_by_project_and_role():
    entries = (
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E1", 800, "API design"),
        TimesheetEntry("PRJ-1", "architect", date(2026, 10, 20), "E3", 250, "Architecture board"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 1), "E2", 425, "Code review"),
        TimesheetEntry("PRJ-9", "developer", date(2026, 10, 3), "E1", 100, "Support"),
    )
    groups = render.timesheet_groups(entries)
    assert [(g["project"], g["role"], g["hours"]) for g in groups] == [
        ("PRJ-1", "architect", 250),
        ("PRJ-1", "developer", 1225),
        ("PRJ-9", "developer", 100),
    ]
    assert [e.work_date.day for e in groups[1]["entries"]] == [1, 2]
    reader = PdfReader(io.BytesIO(render.render_invoice_pdf(sample_document(language="de", timesheet=entries))))
    appendix = reader.pages[-1].extract_text()
    assert len(reader.pages) == 2 and "Anlage: Stundennachweis" in appendix
    assert "Rolle Architekt" in appendix and "Zwischensumme PRJ-1 · Entwickler" in appendix  # roles in German
    assert "12,25 Std." in appendix
    assert "Stunden gesamt: 15,75 Std." in appendix
    # only time-and-materials invoices have the appendix
    other = _text(render.render_invoice_pdf(sample_document(billing_type="retainer", timesheet=entries)))
    assert "timesheet" not in other


def test_timesheet_appendix_has_a_row_per_person_and_day_and_every_entry_attached():
    """Three entries of E1 on one day are one row (hours summed, each description once); the
    attached CSV, inside the PDF/A-3, still has every entry with its source id."""
    entries = (
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E1", 125, "API design", "T3"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E1", 200, "Code review", "T1"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E1", 75, "API design", "T2"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 2), "E2", 300, "Testing; fixes", "T4"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 5), "E1", 50, "", "T5"),
        TimesheetEntry("PRJ-1", "developer", date(2026, 10, 6), "E1", 25, '=HYPERLINK("http://x.example")', "T6"),
    )
    (group,) = render.timesheet_groups(entries)
    rows = [(e.work_date.day, e.employee_id, e.hours, e.description) for e in group["entries"]]
    # ordered by entry id within a day: T1 (Code review), T2 and T3 (API design, once)
    assert rows[:3] == [(2, "E1", 400, "Code review; API design"), (2, "E2", 300, "Testing; fixes"), (5, "E1", 50, "")]
    assert group["hours"] == 775  # 1.25 + 2.00 + 0.75 + 3.00 + 0.50 + 0.25

    doc = sample_document(timesheet=entries)
    reader = PdfReader(io.BytesIO(render.render_invoice_pdf(doc)))
    name = render.timesheet_filename(doc)
    assert name == "NWD-2026-000012-timesheet.csv"
    assert name in reader.pages[-1].extract_text().replace("\n", " ")
    (attached,) = reader.attachments[name]
    assert attached.decode("utf-8").splitlines() == [
        "entry_id,project_code,role,work_date,employee_id,hours,description",
        "T1,PRJ-1,developer,2026-10-02,E1,2,Code review",
        "T2,PRJ-1,developer,2026-10-02,E1,0.75,API design",
        "T3,PRJ-1,developer,2026-10-02,E1,1.25,API design",
        "T4,PRJ-1,developer,2026-10-02,E2,3,Testing; fixes",
        "T5,PRJ-1,developer,2026-10-05,E1,0.5,",
        # a spreadsheet shows the text instead of running it
        '''T6,PRJ-1,developer,2026-10-06,E1,0.25,"'=HYPERLINK(""http://x.example"")"''',
    ]
    assert sorted(reader.attachments) == sorted([name, "factur-x.xml"])


NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}


def _xml_values(xml: bytes) -> dict:
    from lxml import etree

    root = etree.fromstring(xml)
    summation = root.find(".//ram:SpecifiedTradeSettlementHeaderMonetarySummation", NS)

    def amount(tag):
        return summation.findtext(f"ram:{tag}", namespaces=NS)

    return {
        "number": root.findtext("rsm:ExchangedDocument/ram:ID", namespaces=NS),
        "type": root.findtext("rsm:ExchangedDocument/ram:TypeCode", namespaces=NS),
        "net": amount("TaxBasisTotalAmount"),
        "tax": amount("TaxTotalAmount"),
        "gross": amount("GrandTotalAmount"),
        "due": amount("DuePayableAmount"),
        "lines": sum(
            Decimal(x.text)
            for x in root.findall(".//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount", NS)
        ),
        "reference": root.findtext(".//ram:ApplicableHeaderTradeSettlement/ram:PaymentReference", namespaces=NS),
        "iban": root.findtext(".//ram:PayeePartyCreditorFinancialAccount/ram:IBANID", namespaces=NS),
        "categories": [
            x.text
            for x in root.findall(".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:CategoryCode", NS)
        ],
        "exemptions": [
            x.text
            for x in root.findall(
                ".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:ExemptionReason", NS
            )
        ],
        "preceding": root.findtext(".//ram:InvoiceReferencedDocument/ram:IssuerAssignedID", namespaces=NS),
    }


def test_einvoice_agrees_with_pdf_and_database(engine, data_dir):
    """Every invoice of the sample month (domestic, export, reverse charge, capped) and a credit
    note: the embedded XML extracts, passes the Factur-X XSD, and says what the PDF and the database say."""
    import facturx
    from support.billing_fixtures import issued_month

    from invoiceflow.core import db
    from invoiceflow.core.money import format_plain
    from invoiceflow.core.policy import load_policy
    from invoiceflow.invoicing import credit_notes
    from invoiceflow.send import outbox

    policy = load_policy()
    month = issued_month(engine, data_dir)
    note = credit_notes.credit_note(
        runtime.run_for(engine, actor="test", today=date(2026, 11, 5), policy=policy),
        month["K1"]["invoice_number"],
        reason="test",
    )
    ids = [inv["invoice_id"] for inv in month.values()] + [note]
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    with engine.connect() as conn:
        invoices = [r for r in db.rows(conn, "SELECT * FROM invoices") if r["invoice_id"] in ids]
    assert len(invoices) == 5
    for inv in invoices:
        pdf = Path(inv["pdf_path"]).read_bytes()
        assert hashlib.sha256(pdf).hexdigest() == inv["pdf_sha256"]
        xml = einvoice.embedded_xml(pdf)
        facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")  # raises when invalid
        got = _xml_values(xml)
        cur = inv["currency"]
        assert got["number"] == inv["invoice_number"]
        assert (got["net"], got["tax"], got["gross"], got["due"]) == (
            format_plain(inv["net_amount"], cur),
            format_plain(inv["tax_amount"], cur),
            format_plain(inv["gross_amount"], cur),
            format_plain(inv["gross_amount"], cur),
        )
        assert got["lines"] == Decimal(format_plain(inv["net_amount"], cur))
        with engine.connect() as conn:
            doc = build.complete_document(conn, policy, inv["invoice_id"])
        text = _text(pdf).replace("\u202f", " ").replace("\xa0", " ")
        assert (
            labels.format_money(inv["gross_amount"], cur, doc.language).replace("\xa0", " ").replace("\u202f", " ")
            in text
        )
        for note_text in got["exemptions"]:
            assert note_text in " ".join(text.split())
        if inv["document_type"] == "invoice":
            assert got["type"] == "380" and got["reference"] == inv["payment_reference"] in text
            assert got["iban"] == policy.seller.accounts[cur].iban
        else:
            assert got["type"] == "381" and got["preceding"] == month["K1"]["invoice_number"]
        reader = PdfReader(io.BytesIO(pdf))
        xmp = reader.xmp_metadata.rdf_root.toxml()
        assert 'pdfaid:part="3"' in xmp or "<pdfaid:part>3</pdfaid:part>" in xmp  # PDF/A-3
        assert "factur-x.xml" in xmp and "EN 16931" in xmp
        assert "/OutputIntents" in reader.trailer["/Root"]  # the sRGB profile PDF/A requires
        # a re-render from the database is byte-identical to what was stored
        assert hashlib.sha256(render.render_invoice_pdf(doc)).hexdigest() == inv["pdf_sha256"]
    by_contract = {inv["contract_id"]: inv for inv in invoices if inv["document_type"] == "invoice"}
    k3 = _xml_values(einvoice.embedded_xml(Path(by_contract["K3"]["pdf_path"]).read_bytes()))
    assert k3["categories"] == ["AE"] and "art. 196" in k3["exemptions"][0]  # reverse charge, in French
    k2 = _xml_values(einvoice.embedded_xml(Path(by_contract["K2"]["pdf_path"]).read_bytes()))
    assert k2["categories"] == ["G"]
    # rendered once: a second run keeps the stored file and hash
    before = {inv["invoice_id"]: inv["pdf_sha256"] for inv in invoices}
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    with engine.connect() as conn:
        after = {r["invoice_id"]: r["pdf_sha256"] for r in db.rows(conn, "SELECT invoice_id, pdf_sha256 FROM invoices")}
    assert all(after[i] == h for i, h in before.items())


def test_ubl_passes_its_xsd():
    import facturx

    xml = einvoice.ubl_xml(sample_document())
    facturx.xml_check_xsd(xml, flavor="ubl-2.1", level="en16931")
    assert b"RF38NWD2026000012" in xml and b"2451.40" in xml


def test_the_xsd_is_loaded_once_per_process_and_still_bites():
    """The factur-x library loaded the UBL 2.1 XSD (and its imports) for every document it built:
    80-150 ms a UBL invoice. Now it is loaded once and every generated XML is still checked."""
    einvoice.ubl_xml(sample_document())
    loaded = einvoice.xsd.cache_info().misses
    einvoice.ubl_xml(sample_document(invoice_number="NWD-2026-000013"))
    einvoice.facturx_xml(sample_document())
    assert einvoice.xsd.cache_info().misses <= loaded + 1  # at most the CII XSD, if not loaded before
    wrong = b'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><Nonsense/></Invoice>'
    with pytest.raises(ValueError, match="not valid against UBL-Invoice-2.1.xsd"):
        einvoice._checked(wrong)


def test_issued_invoices_show_both_addresses_references_and_lines_in_the_clients_language(engine, data_dir):
    """The sample month from the feeds to the stored PDFs: C1 (Kessler) reads German, C2 English,
    C3 French; C1 gave a buyer reference and K1 a purchase order, the others none."""
    from support.billing_fixtures import ISSUE_DAY, OCTOBER
    from support.sample_data import FEEDS, write_feeds

    from invoiceflow.billing import pricing
    from invoiceflow.core import db
    from invoiceflow.core.policy import load_policy
    from invoiceflow.ingest import sources
    from invoiceflow.invoicing import approval, issuing
    from invoiceflow.send import outbox

    clients = FEEDS["clients"].splitlines()
    clients = [clients[0] + ",buyer_reference", clients[1] + ",KST-4711", *(row + "," for row in clients[2:])]
    contracts = FEEDS["contracts"].splitlines()
    contracts = [contracts[0] + ",purchase_order", contracts[1] + ",PO-2026-0815", *(r + "," for r in contracts[2:])]
    write_feeds(data_dir / "inbox", clients="\n".join(clients) + "\n", contracts="\n".join(contracts) + "\n")
    policy = load_policy()
    sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
    batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
    routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
    for invoice_id in routed["review"]:
        issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
    ids = routed["auto"] + routed["review"]
    issuing.issue(runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), ids)
    outbox.render_invoices(runtime.run_for(engine, actor="test", policy=policy), ids)
    with engine.connect() as conn:
        pdfs = {r["contract_id"]: Path(r["pdf_path"]).read_bytes() for r in db.rows(conn, "SELECT * FROM invoices")}

    expected = {
        "K1": (
            "Friedrichstraße 68 · 10117 Berlin · Deutschland",
            ["Kessler Logistik GmbH", "Hafenstraße 12", "20457 Hamburg", "Deutschland"],
            [
                "Ihre Referenz KST-4711",
                "Ihre Bestellnummer PO-2026-0815",
                "Entwickler: Stunden 01.–14.10.2026, Satz ab 01.01.2026",
                "Rolle Architekt",
            ],
        ),
        "K2": (
            "Friedrichstraße 68 · 10117 Berlin · Germany",
            ["Brightwater Analytics Ltd", "1 Canal Street", "Manchester", "M1 3HE", "United Kingdom"],
            ["Milestone: Phase 1: discovery (completed 10 Oct 2026)"],
        ),
        "K3": (
            "Friedrichstraße 68 · 10117 Berlin · Allemagne",
            ["Ville de Lyon", "1 Place de la Comédie", "69001 Lyon", "France"],
            ["Forfait (mensuel), 1–30 nov. 2026"],
        ),
        "K4": (
            "Friedrichstraße 68 · 10117 Berlin · Deutschland",
            ["Kessler Logistik GmbH", "Hafenstraße 12", "20457 Hamburg", "Deutschland"],
            ["Ihre Referenz KST-4711", "Entwickler: Stunden 02.10.2026", "Budgetobergrenze von 1.000,00 € erreicht"],
        ),
    }
    for contract_id, (seller, buyer, shown) in expected.items():
        reader = PdfReader(io.BytesIO(pdfs[contract_id]))
        first = [_words(line) for line in reader.pages[0].extract_text().splitlines()]
        assert first[1].startswith(seller), contract_id
        at = first.index(buyer[0])
        assert first[at : at + len(buyer)] == buyer, contract_id
        text = _words(_text(pdfs[contract_id]))
        assert all(s in text for s in shown), (contract_id, [s for s in shown if s not in text])
        # a short invoice is one page; K1 and K4 add their timesheet appendix on a second
        assert len(reader.pages) == (2 if contract_id in ("K1", "K4") else 1), contract_id
    assert "Your order" not in _words(_text(pdfs["K2"])) and "Buyer reference" not in _words(_text(pdfs["K2"]))
    assert "Ihre Bestellnummer" not in _words(_text(pdfs["K4"]))  # K4 has no purchase order


def test_the_pdf_beside_an_xml_invoice_says_it_is_a_visual_copy():
    for fmt, language, words in (
        ("xrechnung-ubl", "de", "Sichtkopie. Die Rechnung ist die mitgesendete E-Rechnung im Format XRechnung (XML)."),
        ("peppol-bis3", "en", "Visual copy. The invoice is the Peppol BIS Billing 3.0 e-invoice (XML) sent with it."),
    ):
        assert words in render.render_invoice_html(sample_document(language=language, einvoice_format=fmt))
    facturx = render.render_invoice_html(sample_document(language="de"))  # the PDF is the invoice itself
    assert "Sichtkopie" not in facturx and "visual-copy" not in facturx
