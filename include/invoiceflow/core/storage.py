"""Folders named by URL: the client portal and the bank statement drop folder.

Both are local folders by default and may be object storage (``s3://bucket/portal`` with a
connection). The domain only needs a path-like object that can list, read, write, rename and
make folders; the Airflow seam supplies ``ObjectStoragePath`` for any URL, and ``LOCAL_FILES``
serves plain paths and ``file://`` URLs where no Airflow is around (the CLI on a laptop).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from invoiceflow.core.errors import InfrastructureError


class StoragePath(Protocol):
    """The part of ``pathlib.Path`` (and Airflow's ``ObjectStoragePath``) the domain uses."""

    @property
    def name(self) -> str: ...

    def __truediv__(self, other: str) -> StoragePath: ...

    def iterdir(self) -> Iterator[StoragePath]: ...

    def is_file(self) -> bool: ...

    def exists(self) -> bool: ...

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None: ...

    def read_bytes(self) -> bytes: ...

    def write_bytes(self, data: bytes) -> int: ...

    def rename(self, target: Any) -> Any: ...  # Path and ObjectStoragePath each take their own kind


class Storage(Protocol):
    """Opens a folder by URL (``file:///srv/portal``, ``s3://bucket/portal``) or local path."""

    def open(self, url: str, conn_id: str | None = None) -> StoragePath: ...


class _LocalFiles:
    """Local paths and ``file://`` URLs only."""

    def open(self, url: str, conn_id: str | None = None) -> StoragePath:
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path) if parsed.scheme else url)
        raise InfrastructureError(
            f"{url}: object storage ({parsed.scheme}://) is reached through Airflow's connections; "
            "run this from a DAG task or with Airflow installed and configured"
        )


LOCAL_FILES: Storage = _LocalFiles()
