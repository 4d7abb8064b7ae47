"""The ``peppol`` channel's hand-off: UBL files in the folder the company's Peppol access point reads.

Sending over Peppol takes an access point: a certified service with an AS4 certificate, a contract
and the network. This company hands its access point a file per document and lets the access point
look the receiver up and send it; see docs/documents-and-delivery.md for what an access point takes
and how to connect one. The bookkeeping around it (a ``deliveries`` row, exactly once, retries) is
``send.exactly_once``'s; this module only knows the folder.

A file appears in the folder whole or not at all: it is written under a hidden temporary name
(``.<name>.<attempt>.part``, which no access point takes since it does not end in ``.xml``), flushed
to disk, and renamed. The temporary file is written *before* the delivery is marked ``sending``, so
after a crash the folder tells what happened: the temporary file is still there (not handed off
yet), the file is there (handed off, not yet taken), or neither (the access point took it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from invoiceflow.core.policy import Policy
from invoiceflow.invoicing import render
from invoiceflow.invoicing.document import InvoiceDocument


def folder(policy: Policy) -> Path:
    """The access point's folder: the policy's ``delivery.peppol_outbox``, else ``<data>/outbox/peppol``."""
    return policy.delivery.peppol_folder()


def filename(doc: InvoiceDocument) -> str:
    """One file per document, named by its number (unique across invoices and credit notes), in
    lower-case ``.xml`` as file-polling access points expect."""
    return render.xml_filename(doc)


def message_id(doc: InvoiceDocument) -> str:
    """The ``deliveries`` row's id for this hand-off, the handle ``invoiceflow release-delivery`` takes."""
    return f"peppol:{filename(doc)}"


def _part(target: Path, attempt: int) -> Path:
    return target.with_name(f".{target.name}.{attempt}.part")


def stage(target: Path, data: bytes, attempt: int) -> None:
    """Write the file under its temporary name, on disk before anything is recorded; an OSError
    (folder missing and not creatable, not writable, disk full) means nothing was handed off."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part(target, attempt)
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publish(target: Path, attempt: int) -> None:
    """Hand the staged file off: one rename, which happens whole or not at all."""
    os.replace(_part(target, attempt), target)


def discard(target: Path, attempt: int) -> None:
    """Remove an attempt's staged file that will not be handed off (another run did it)."""
    _part(target, attempt).unlink(missing_ok=True)


def where(target: Path, attempt: int) -> Literal["staged", "published", "taken"]:
    """After an interruption between marking ``sending`` and recording ``sent``: how far it got."""
    if target.exists():
        return "published"
    if _part(target, attempt).exists():
        return "staged"
    return "taken"
