"""Render each issued document once and store it: the PDF/A-3 and, for the XML formats, the XML.

Rendering stores what the client's e-invoice format makes of an issued invoice or credit note: the
PDF/A-3 (Factur-X: the invoice, with its XML inside) and, for the XML formats (XRechnung, Peppol
BIS), the XML beside it, each with its SHA-256, written once, after the document passed its
format's official rules. Delivery (``send.outbox``) reads what was stored back through
``stored_documents``, checked against those hashes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoiceflow.core import audit, db, settings, tallies
from invoiceflow.core.errors import DataError
from invoiceflow.core.run import Run
from invoiceflow.invoicing import build, render
from invoiceflow.invoicing.document import InvoiceDocument

log = logging.getLogger("invoiceflow.send.outbox")  # the outbox's log, as before the split: log filters name it


class RenderMismatch(DataError):
    """A document rendered again differs from the one stored at its first render: the templates or
    a library changed in between. Nothing is stored beside a PDF the client may already have."""


class StoredDocumentChanged(DataError):
    """A stored PDF or XML is missing or no longer has the hash recorded when it was rendered."""


def render_invoices(run: Run, invoice_ids: list[int]) -> list[int]:
    """Render and store each issued document once: its PDF, and its XML for the XML formats.

    An issued document never changes: a stored hash is never replaced (the database refuses it),
    and a document whose PDF was stored but whose XML is still missing is rendered again only if
    the PDF comes out byte for byte as stored (``RenderMismatch`` otherwise). Returns the ids whose
    documents are stored, for delivery: one that fails its e-invoice rules waits, reported.
    """
    engine, policy = run.engine, run.policy
    rendered: list[int] = []
    rejected: list[int] = []
    for invoice_id in invoice_ids:
        with engine.begin() as conn:
            stored = db.rows(
                conn,
                "SELECT pdf_sha256, xml_sha256, COALESCE(einvoice_format, 'facturx') AS einvoice_format "
                "FROM invoices WHERE invoice_id = :i",
                {"i": invoice_id},
            )[0]
            if stored["pdf_sha256"] and (stored["xml_sha256"] or stored["einvoice_format"] not in render.XML_FORMATS):
                continue
            doc = build.complete_document(conn, policy, invoice_id)
        documents = render.render_documents(doc)
        if not _passes_its_rules(run, invoice_id, doc, documents):
            rejected.append(invoice_id)
            continue
        _store_rendered(run, invoice_id, doc, documents, stored["pdf_sha256"])
        rendered.append(invoice_id)
    log.info(
        "documents rendered for %s (gross); %d had theirs already; %d failed their e-invoice rules and wait",
        tallies.invoices(engine, rendered),
        len(invoice_ids) - len(rendered) - len(rejected),
        len(rejected),
    )
    return [i for i in invoice_ids if i not in rejected]


def _passes_its_rules(run: Run, invoice_id: int, doc: InvoiceDocument, documents: render.RenderedDocuments) -> bool:
    """Check the e-invoice against the official rules of its format before anything is stored or sent.

    A receiver (a public client's portal, a Peppol access point, an accounts-payable system) checks
    the same XSD, EN 16931 and CIUS rules and rejects what fails; better that finance hears it now,
    with the rule named, than the client weeks later. A document that fails is not stored and not
    sent; it waits, reported, and is rendered again by the next run (after the client record or the
    policy is fixed). It never changes what was issued: numbers and amounts are frozen.
    """
    from invoiceflow.invoicing import einvoice_rules

    report = einvoice_rules.check_rendered(doc.einvoice_format, documents.pdf, documents.xml, doc.invoice_number)
    with run.engine.begin() as conn:
        if report.ok:
            db.execute(
                conn,
                "UPDATE exceptions SET resolved_at = :now, resolved_by = :a, resolution = 'passed its rules' "
                "WHERE category = 'einvoice_rejected' AND subject_type = 'invoice' AND subject_id = :i "
                "AND resolved_at IS NULL",
                {"now": db.now(), "a": run.actor, "i": str(invoice_id)},
            )
            return True
        failed = "; ".join(f"{f.rule}: {f.text}" for f in report.failed) or report.problem or "not checked"
        detail = f"{doc.invoice_number} ({doc.einvoice_format}) fails its rules and was not sent: {failed}"[:2000]
        audit.record_exception(
            conn,
            category="einvoice_rejected",
            subject_type="invoice",
            subject_id=str(invoice_id),
            amount=doc.gross_amount,
            currency=doc.currency,
            detail=detail,
            run_id=run.run_id,
        )
        db.execute(
            conn,
            "UPDATE exceptions SET resolved_at = NULL, detail = :d WHERE category = 'einvoice_rejected' "
            "AND subject_type = 'invoice' AND subject_id = :i",
            {"d": detail, "i": str(invoice_id)},
        )
    log.error("%s", detail)
    return False


def _write(folder: Path, name: str, data: bytes) -> Path:
    """A file written whole or not at all (temporary name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store_rendered(
    run: Run, invoice_id: int, doc: InvoiceDocument, documents: render.RenderedDocuments, stored_pdf: str | None
) -> None:
    """Write the files, then record their paths and hashes where none are recorded yet, and audit it."""
    pdf_digest = _sha256(documents.pdf)
    if stored_pdf and stored_pdf != pdf_digest:
        raise RenderMismatch(
            f"invoice {doc.invoice_number}: its PDF renders to {pdf_digest[:12]}... now, not the stored "
            f"{stored_pdf[:12]}...; the templates or a library changed since it was rendered. Its "
            f"{doc.einvoice_format} XML is not built from a PDF the client may not have: restore the "
            "templates or library of its first render"
        )
    pdf_path = _write(settings.outbox() / "pdf", render.pdf_filename(doc), documents.pdf)
    after: dict[str, object] = {"format": doc.einvoice_format, "pdf": pdf_path.name, "sha256": pdf_digest}
    xml_path, xml_digest = None, None
    if documents.xml is not None:
        xml_path = _write(settings.outbox() / "xml", render.xml_filename(doc), documents.xml)
        xml_digest = _sha256(documents.xml)
        after.update({"xml": xml_path.name, "xml_sha256": xml_digest})
    with run.engine.begin() as conn:
        db.execute(
            conn,
            "UPDATE invoices SET pdf_path = COALESCE(pdf_path, :p), pdf_sha256 = COALESCE(pdf_sha256, :h), "
            "xml_path = COALESCE(xml_path, :xp), xml_sha256 = COALESCE(xml_sha256, :xh) WHERE invoice_id = :i",
            {
                "p": str(pdf_path),
                "h": pdf_digest,
                "xp": str(xml_path) if xml_path else None,
                "xh": xml_digest,
                "i": invoice_id,
            },
        )
        audit.record(conn, entity_type="invoice", entity_id=invoice_id, action="rendered", actor=run.actor, after=after)


@dataclass(frozen=True)
class StoredDocuments:
    """An issued document's files as stored at render, read back and checked against their hashes."""

    pdf_path: Path
    pdf: bytes
    xml_path: Path | None = None
    xml: bytes | None = None  # the XML formats only


def stored_documents(inv: dict[str, Any]) -> StoredDocuments:
    """Read what ``render_invoices`` stored for an invoice row; ``StoredDocumentChanged`` if a file
    is not what was rendered, since an issued document must go out exactly as it was issued."""
    if not inv["pdf_path"]:
        raise StoredDocumentChanged(f"invoice {inv['invoice_id']} has no rendered PDF; render it before delivery")

    def read(path: Path, digest: str) -> bytes:
        data = path.read_bytes()
        if _sha256(data) != digest:
            raise StoredDocumentChanged(
                f"{path}: the file's SHA-256 is {_sha256(data)[:12]}..., not the {digest[:12]}... recorded when it "
                "was rendered; restore the file from the backup (an issued document never changes)"
            )
        return data

    pdf_path = Path(inv["pdf_path"])
    if not inv["xml_path"]:
        return StoredDocuments(pdf_path, read(pdf_path, inv["pdf_sha256"]))
    xml_path = Path(inv["xml_path"])
    return StoredDocuments(pdf_path, read(pdf_path, inv["pdf_sha256"]), xml_path, read(xml_path, inv["xml_sha256"]))
