"""The document benchmark (issue 25, target 2): invoiceflow's document path against bare WeasyPrint.

The same 20 time-and-materials invoices (0 to 500 time entries, as in the scale run) are rendered
twice, interleaved so that drift of the machine hits both alike:

- **invoiceflow**: ``render.render_documents`` (template, PDF/A-3, the Factur-X XML and the timesheet
  CSV attached), the SHA-256 and the file written as the outbox stores it; the check against the
  format's official rules (``einvoice_rules``, which the render step runs before storing) is
  timed apart, so both ratios can be read;
- **bare**: ``weasyprint.HTML(string=html).write_pdf()`` of the same HTML with the same stylesheet,
  the floor no invoice document gets under.

Writes ``bench/results/documents-latest.json`` with the machine and commit, per invoice the entries,
pages and milliseconds of both, the ratios (the headline ``ratio_with_rules_check``: the check is
part of the path), and the rules check of one document in each e-invoice format (compile once, then
per document). Times are measured, never asserted.

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

RULES_FORMATS = ("facturx", "xrechnung-cii", "xrechnung-ubl", "peppol-bis3")


def documents(count: int, max_entries: int) -> list[Any]:
    """``count`` German T&M invoices with 0 to ``max_entries`` time entries, evenly spread
    (``invoiceflow.demo.documents``: the policy's seller, one buyer, one line per role)."""
    from invoiceflow.demo.documents import timesheet_invoice

    return [
        timesheet_invoice(f"NWD-2026-{n + 1:06d}", round(max_entries * n / max(count - 1, 1))) for n in range(count)
    ]


def rules_check_per_format(doc: Any, repeat: int) -> dict[str, Any]:
    """The rules check of one document in each e-invoice format: its one-off compile per process
    and then its median per document; every format's document must pass."""
    from invoiceflow.invoicing import einvoice_rules, render

    out = {}
    for fmt in RULES_FORMATS:
        start = time.perf_counter()
        einvoice_rules.Validator(fmt)  # a fresh one: what the first document of a process pays
        compile_s = time.perf_counter() - start
        # a buyer reference (XRechnung) and a GLN as electronic address (Peppol's schemes exclude EM)
        buyer = replace(doc.buyer, electronic_address="0088:4001234000008")
        fields = {"einvoice_format": fmt, "buyer": buyer, "buyer_reference": "991-12345-73"}
        rendered = render.render_documents(replace(doc, **fields))
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            report = einvoice_rules.check_rendered(fmt, rendered.pdf, rendered.xml, fmt)
            times.append(time.perf_counter() - start)
            assert report.ok, report.text(errors_only=True)
        out[fmt] = {"compile_ms": round(1000 * compile_s, 1), "check_ms": round(1000 * statistics.median(times), 1)}
    return out


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
        "headline": "ratio_with_rules_check",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=20)
    parser.add_argument("--max-entries", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "documents-latest.json")
    args = parser.parse_args(argv)
    from common import git_state, machine

    with tempfile.TemporaryDirectory() as tmp:
        docs = documents(args.invoices, args.max_entries)
        result = measure(docs, args.repeat, Path(tmp))
        result["rules_check_per_format"] = rules_check_per_format(docs[len(docs) // 2], args.repeat)
    result = {"benchmark": "documents", **result, "machine": machine(), "git": git_state(ROOT)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["invoices"]:
        print(
            f"{row['invoice']}: {row['entries']:>4} entries, {row['pages']:>2} pages, invoiceflow "
            f"{row['invoiceflow_ms']:>7.1f} ms (+{row['rules_check_ms']:.1f} ms rules), "
            f"bare {row['bare_weasyprint_ms']:>7.1f} ms"
        )
    print(
        f"invoiceflow / bare WeasyPrint with the rules check: {result['ratio_with_rules_check']} "
        f"({result['ratio']} without); target {result['target_ratio']}; {args.out}"
    )
    for fmt, cost in result["rules_check_per_format"].items():
        print(f"rules check {fmt}: {cost['check_ms']} ms a document after {cost['compile_ms']} ms to compile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
