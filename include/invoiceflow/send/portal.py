"""The client portal: each client's invoices as files in its own folder, local or object storage."""

from __future__ import annotations

import hashlib

from invoiceflow.core.storage import StoragePath


def _safe_part(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"unsafe {what} for a file name: {value!r}")
    return value


def copy_to_portal(pdf: bytes, *, client_id: str, filename: str, portal_root: StoragePath) -> StoragePath:
    """Publish a PDF in the client's portal folder; ids from data never escape the portal root.

    ``portal_root`` is a folder of ``Run.storage`` (a local path or object storage): the file is
    written under a temporary name and renamed, so a client never sees half a PDF; writing it again
    is a no-op.
    """
    folder = portal_root / _safe_part(client_id, "client id")
    target = folder / _safe_part(filename, "file name")  # no separators, no "..": it stays in folder
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() == pdf:
        return target
    tmp = folder / f".tmp-{hashlib.sha256(pdf).hexdigest()[:16]}-{filename}"
    tmp.write_bytes(pdf)
    tmp.rename(target)
    return target
