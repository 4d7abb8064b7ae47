"""A throw-away PostgreSQL cluster that a test may stop and start at will.

The fault tests take the billing database away in the middle of a posting. They must never do that
to the shared server on 127.0.0.1:5432 (other tests use it), so this helper runs ``initdb`` into a
temporary folder and ``pg_ctl`` on a free loopback port, and removes it all afterwards. As root the
binaries run as the ``postgres`` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.smtp_server import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise RuntimeError("PostgreSQL binaries are not installed under /usr/lib/postgresql/*/bin")
    return Path(found[-1])


class PgCluster:
    """``with PgCluster() as pg:``; ``pg.url`` is a SQLAlchemy URL, ``pg.stop()`` / ``pg.start()``."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="invoiceflow-faults-pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            opts,
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash: open transactions are lost, as on a power cut."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def __enter__(self) -> PgCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped by the test
            self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)
