"""The document benchmark (issue 25, target 2): invoiceflow's document path against bare WeasyPrint.

The same 20 time-and-materials invoices (0 to 500 time entries, as in the scale run) are rendered
twice, interleaved so that drift of the machine hits both alike:

- **invoiceflow**: ``render.render_documents`` (template, PDF/A-3, the Factur-X XML and the timesheet
  CSV attached), the SHA-256 and the file written as the outbox stores it; the check against the
  format's official rules (``einvoice_rules``, which the render step runs before storing) is
  timed apart, so both ratios can be read;
- **bare**: ``weasyprint.HTML(string=html).write_pdf()`` of the same HTML with the same stylesheet,
  the floor no invoice document gets under.

Writes ``bench/results/documents-latest.json`` with the machine, per invoice the entries, pages and
milliseconds of both, and the ratios. Times are measured, never asserted.

    python bench/bench_documents.py [--invoices 20] [--max-entries 500] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

ROLES = ("developer", "architect", "data_engineer", "project_manager")


def documents(count: int, max_entries: int) -> list[Any]:
    """``count`` German T&M invoices with 0 to ``max_entries`` time entries, evenly spread."""
    from invoiceflow.core.policy import load_policy
    from invoiceflow.invoicing.document import InvoiceDocument, Line, Party, TaxGroup, TimesheetEntry

    seller = load_policy().seller
    me = Party(seller.name, seller.street, seller.city, seller.postcode, seller.country, seller.vat_id, seller.email)
    me = replace(
        me,
        electronic_address=seller.electronic_address,
        contact_name=seller.contact_name,
        contact_phone=seller.contact_phone,
    )
    buyer = Party(
        "Kessler Logistik GmbH",
        "Hafenstraße 12",
        "Hamburg",
        "20457",
        "DE",
        "DE123456789",
        "ap@kessler.example",
        electronic_address="EM:ap@kessler.example",
    )
    out = []
    for n in range(count):
        entries = round(max_entries * n / max(count - 1, 1))
        sheet = tuple(
            TimesheetEntry(
                "PRJ-1",
                ROLES[i % len(ROLES)],
                date(2026, 10, 1) + timedelta(days=i % 28),
                f"E{i % 12}",
                50 + 25 * (i % 15),
                f"work item {i}",
                f"T{n}-{i}",
            )
            for i in range(entries)
        )
        hours = {role: sum(e.hours for e in sheet if e.role == role) for role in ROLES}
        lines = tuple(
            Line(
                k + 1, f"{role}: hours October 2026", f"TM-{role.upper()}", "PRJ-1", h, "HUR", 10000, h * 100, "S", 1900
            )
            for k, (role, h) in enumerate((r, h) for r, h in hours.items() if h)
        ) or (Line(1, "Retainer October 2026", "RETAINER", "PRJ-1", 100, "C62", 150000, 150000, "S", 1900),)
        net = sum(ln.net_amount for ln in lines)
        tax = (net * 19 + 50) // 100
        number = f"NWD-2026-{n + 1:06d}"
        out.append(
            InvoiceDocument(
                invoice_number=number,
                issue_date=date(2026, 11, 1),
                due_date=date(2026, 12, 1),
                period_start=date(2026, 10, 1),
                period_end=date(2026, 11, 1),
                billing_type="time_and_materials",
                currency="EUR",
                language="de",
                seller=me,
                buyer=buyer,
                client_id="C1",
                contract_id="K1",
                project_code="PRJ-1",
                lines=lines,
                taxes=(TaxGroup("S", 1900, net, tax),),
                net_amount=net,
                tax_amount=tax,
                gross_amount=net + tax,
                payment_reference=_reference(number),
                iban="DE89370400440532013000",
                bic="COBADEFFXXX",
                payment_terms_days=30,
                timesheet=sheet,
            )
        )
    return out


def _reference(number: str) -> str:
    from invoiceflow.invoicing.build import creditor_reference

    return creditor_reference(number)


def measure(docs: list[Any], repeat: int, folder: Path) -> dict[str, Any]:
    import weasyprint
    from pypdf import PdfReader

    from invoiceflow.core import settings
    from invoiceflow.invoicing import einvoice_rules, render

    stylesheet = weasyprint.CSS(filename=str(settings.TEMPLATES_DIR / "invoice" / "invoice.css"))
    base = str(settings.TEMPLATES_DIR / "invoice")
    render.render_documents(docs[0])  # warm: fonts, templates, the stylesheet cache of the render path
    einvoice_rules.validator("facturx")  # compiled once per process, as the render task does
    rows = []
    for doc in docs:
        ours, bare, check = [], [], []
        for _ in range(repeat):
            start = time.perf_counter()
            rendered = render.render_documents(doc)
            digest = hashlib.sha256(rendered.pdf).hexdigest()
            (folder / render.pdf_filename(doc)).write_bytes(rendered.pdf)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            report = einvoice_rules.check_rendered(doc.einvoice_format, rendered.pdf, rendered.xml, digest)
            check.append(time.perf_counter() - start)
            assert report.ok, report.text(errors_only=True)
            html = render.render_invoice_html(doc)
            start = time.perf_counter()
            weasyprint.HTML(string=html, base_url=base).write_pdf(stylesheets=[stylesheet])
            bare.append(time.perf_counter() - start)
        pages = len(PdfReader(io.BytesIO(rendered.pdf)).pages)
        rows.append(
            {
                "invoice": doc.invoice_number,
                "entries": len(doc.timesheet),
                "pages": pages,
                "invoiceflow_ms": round(1000 * statistics.median(ours), 1),
                "rules_check_ms": round(1000 * statistics.median(check), 1),
                "bare_weasyprint_ms": round(1000 * statistics.median(bare), 1),
            }
        )
    total = {k: sum(r[k] for r in rows) for k in ("invoiceflow_ms", "rules_check_ms", "bare_weasyprint_ms")}
    return {
        "invoices": rows,
        "total_ms": {k: round(v, 1) for k, v in total.items()},
        "ratio": round(total["invoiceflow_ms"] / total["bare_weasyprint_ms"], 3),
        "ratio_with_rules_check": round(
            (total["invoiceflow_ms"] + total["rules_check_ms"]) / total["bare_weasyprint_ms"], 3
        ),
        "target_ratio": 1.2,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=20)
    parser.add_argument("--max-entries", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "documents-latest.json")
    args = parser.parse_args(argv)
    from bench_pricing import machine

    with tempfile.TemporaryDirectory() as tmp:
        result = measure(documents(args.invoices, args.max_entries), args.repeat, Path(tmp))
    result = {"benchmark": "documents", **result, "machine": machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["invoices"]:
        print(
            f"{row['invoice']}: {row['entries']:>4} entries, {row['pages']:>2} pages, invoiceflow "
            f"{row['invoiceflow_ms']:>7.1f} ms (+{row['rules_check_ms']:.1f} ms rules), "
            f"bare {row['bare_weasyprint_ms']:>7.1f} ms"
        )
    print(
        f"invoiceflow / bare WeasyPrint: {result['ratio']} ({result['ratio_with_rules_check']} with the rules check); "
        f"target {result['target_ratio']}; {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
