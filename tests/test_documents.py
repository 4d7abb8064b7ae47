"""Invoice PDFs: one template per billing type, in the client's language, read back with pypdf."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date

import pytest
from factories import sample_document
from invoiceflow import documents
from invoiceflow.documents import Line, Party, TaxGroup
from pypdf import PdfReader


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
    text = _text(documents.render_invoice_pdf(sample_document(language=language)))
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
    assert intro in _text(documents.render_invoice_pdf(sample_document(billing_type=billing_type)))


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
    html = documents.render_invoice_html(doc)
    assert "&lt;script&gt;" in html and "<script>" not in html and "{{ 7*7 }}" in html and "49" not in html
    assert "{% raw %}&lt;b&gt;" in html and "日本語" in html
    # Greek comes through in the PDF with DejaVu; CJK glyphs need a CJK font (fonts-noto-cjk) installed
    greek = replace(doc, lines=(replace(line, description="Ελληνικά: συμβουλευτικές υπηρεσίες"),))
    assert "συμβουλευτικές" in _text(documents.render_invoice_pdf(greek))


def test_rendering_is_deterministic():
    doc = sample_document()
    assert documents.render_invoice_pdf(doc) == documents.render_invoice_pdf(doc)


def test_many_lines_break_over_pages():
    lines = tuple(Line(n, f"Line {n}", "S", "P", 100, "HUR", 1000, 1000, "S", 1900) for n in range(1, 61))
    doc = sample_document(
        lines=lines, net_amount=60000, taxes=(TaxGroup("S", 1900, 60000, 11400),), tax_amount=11400, gross_amount=71400
    )
    reader = PdfReader(io.BytesIO(documents.render_invoice_pdf(doc)))
    assert len(reader.pages) >= 2 and "Line 60" in reader.pages[-1].extract_text()


def test_formats():
    assert documents.format_money(123456, "EUR", "de") == "1.234,56\xa0€"
    assert documents.format_money(123456, "GBP", "en") == "£1,234.56"
    assert documents.format_date(date(2026, 3, 1), "de") == "01.03.2026"
    assert documents.format_quantity(750, "de") == "7,5"
    assert documents.pdf_filename(replace(sample_document(), invoice_number="../x/NWD 1")) == "x_NWD_1.pdf"
