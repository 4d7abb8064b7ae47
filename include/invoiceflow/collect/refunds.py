"""Refunds leave as a SEPA credit transfer file (pain.001.001.03, built and checked against its
schema by ``sepaxml``) for finance to upload to the bank.

A refund must reach the bank once. The export therefore records first and writes second: one
transaction assigns the requested refunds to a named file and marks them exported; then every
recorded file that is missing on disk is written from the database. A crash between the two
leaves a recorded file that the next run writes; it never puts a refund in two files. A refund
the file cannot carry (no IBAN, not in euro) stays requested and is named in the result."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from sepaxml import SepaTransfer

from invoiceflow.core import audit, db, settings
from invoiceflow.core.run import Run

log = logging.getLogger(__name__)


def export_refunds(run: Run, folder: Path | None = None) -> dict[str, Any]:
    """Assign the requested euro refunds with an IBAN to today's file, then write missing files."""
    folder = folder or settings.outbox() / "bank"
    with run.engine.begin() as conn:
        lock = " ORDER BY refund_id FOR UPDATE" if conn.dialect.name == "postgresql" else " ORDER BY refund_id"
        requested = db.rows(conn, "SELECT * FROM refunds WHERE status = 'requested'" + lock)
        ready = [r for r in requested if r["currency"] == "EUR" and r["payee_iban"]]
        held = [
            f"refund {r['refund_id']}: " + ("no IBAN for the payee" if not r["payee_iban"] else f"in {r['currency']}")
            for r in requested
            if r not in ready
        ]
        name = f"refunds-{run.today}-{ready[0]['refund_id']}-{ready[-1]['refund_id']}.xml" if ready else None
        for r in ready:
            db.execute(
                conn,
                "UPDATE refunds SET status = 'exported', exported_at = :now, export_file = :f WHERE refund_id = :r",
                {"now": db.now(), "f": name, "r": r["refund_id"]},
            )
        audit.record_many(
            conn,
            [audit.Event("refund", r["refund_id"], "exported", run.actor, f"in {name}") for r in ready],
        )
        files: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in db.rows(conn, "SELECT * FROM refunds WHERE status = 'exported' ORDER BY refund_id"):
            files[r["export_file"]].append(r)
    written = [str(_write(folder / f, rows, run)) for f, rows in files.items() if not (folder / f).exists()]
    for reason in held:
        log.warning("not exported: %s", reason)
    return {"file": str(folder / name) if name else None, "refunds": len(ready), "written": written, "held": held}


def _write(path: Path, refunds: list[dict[str, Any]], run: Run) -> Path:
    """The pain.001 file of ``refunds``, from the seller's euro account."""
    account = run.policy.seller.accounts["EUR"]
    sepa = SepaTransfer(
        {"name": run.policy.seller.name, "IBAN": account.iban, "BIC": account.bic, "batch": True, "currency": "EUR"},
        clean=True,
    )
    for r in refunds:
        sepa.add_payment(
            {
                "name": r["payee_name"],
                "IBAN": r["payee_iban"],
                "amount": int(r["amount"]),
                "execution_date": run.today,
                "description": f"Refund {r['refund_id']}: {r['reason']}"[:140],
                "endtoend_id": f"REFUND-{r['refund_id']}",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sepa.export(validate=True))
    log.info("%s: %d refunds", path, len(refunds))
    return path
