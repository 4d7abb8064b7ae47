"""The Tryton adapter's money side: payments, write-offs, refunds, returns and undos as posted moves
that settle the invoices they pay (payment lines, the *Reconcile Lines* wizard when paid; a return
or an undo takes them off again), and what people booked on receivables pulled back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from invoiceflow.accounting.sync_target import Pulled, Pushed
from invoiceflow.accounting.tryton_client import TrytonError, TrytonLookups, day, dec


class TrytonMoves(TrytonLookups):
    """Moves and settling in Tryton, and the pull (``TrytonBooks`` is this and ``TrytonInvoices``)."""

    def _moves(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for key in keys:
            rows = self.client.search_read(
                "account.move", [("description", "like", f"[{key}] %")], ["id", "number", "state"], [["id", "ASC"]]
            )
            if rows:
                found[key] = rows[0]
        return found

    def find_entries(self, keys: Sequence[str]) -> dict[str, Any]:
        return {k: Pushed(str(r["id"]), r["number"]) for k, r in self._moves(keys).items() if r["state"] == "posted"}

    # -- push ------------------------------------------------------------------------------------

    def push_entry(self, entry: Any, parties: Mapping[str, str], documents: Mapping[str, str]) -> Any:
        """A posted move in the mapped journal, found by its key in the description first; then its
        receivable lines settle the invoices they name (payment lines, reconciled when paid)."""
        existing = self._moves([entry.key]).get(entry.key)
        if existing is None:
            move_id = self.client.model("account.move", "create", [self._move(entry, parties)])[0]
            state = "draft"
        else:
            move_id, state = existing["id"], existing["state"]
        if state == "draft":
            self.client.model("account.move", "post", [move_id])
        self._settle(entry, move_id, documents)
        (row,) = self.client.search_read("account.move", [("id", "=", move_id)], ["number"])
        return Pushed(str(move_id), row["number"])

    def _move(self, entry: Any, parties: Mapping[str, str]) -> dict[str, Any]:
        foreign = entry.currency != self.company_currency()
        lines = []
        for ln in entry.lines:
            if not (ln.debit or ln.credit or ln.amount):
                continue
            account = self.account(ln.account)
            line: dict[str, Any] = {
                "account": account["id"],
                "debit": Decimal(ln.debit) / 100,
                "credit": Decimal(ln.credit) / 100,
                "description": f"{ln.memo} {ln.invoice_number or ''}".strip(),
            }
            if account["party_required"]:
                if not ln.client_id:
                    raise TrytonError(f"{entry.key}: account {ln.account} needs a party, the line names no client")
                line["party"] = int(parties[ln.client_id])
            if foreign:
                line["second_currency"] = self.currency(entry.currency)
                line["amount_second_currency"] = Decimal(ln.amount) / 100
            lines.append(line)
        return {
            "journal": self.journal(entry.journal),
            "period": self.period(entry.day),
            "date": entry.day,
            "description": f"[{entry.key}] {entry.description}",
            "lines": [["create", lines]],
        }

    def _receivable_lines(self, move_id: int) -> list[dict[str, Any]]:
        return self.client.search_read(
            "account.move.line",
            [("move", "=", move_id), ("account.type.receivable", "=", True)],
            ["id", "debit", "credit", "description", "reconciliation"],
        )

    def _settle(self, entry: Any, move_id: int, documents: Mapping[str, str]) -> None:
        lines = self._receivable_lines(move_id)
        if entry.reverses:
            self._unsettle(entry.reverses, lines)
            return
        for ln in lines:
            number = next((n for n in documents if ln["description"].endswith(n)), None)
            if number is None or dec(ln["credit"]) <= 0:
                continue
            invoice_id = int(documents[number])
            (inv,) = self.client.search_read(
                "account.invoice", [("id", "=", invoice_id)], ["payment_lines", "state", "lines_to_pay"]
            )
            if ln["id"] not in inv["payment_lines"] and inv["state"] == "posted":
                self.client.model("account.invoice", "write", [invoice_id], {"payment_lines": [["add", [ln["id"]]]]})
            self._reconcile_if_paid(invoice_id)

    def _unsettle(self, reversed_key: str, new_lines: Sequence[Mapping[str, Any]]) -> None:
        """A return or an undo: the reversed move's receivable lines leave the invoices they paid
        (unreconciled first), and are reconciled with the reversal's own lines instead."""
        original = self._moves([reversed_key]).get(reversed_key)
        if original is None:
            return
        old = self._receivable_lines(original["id"])
        reconciled = [ln["id"] for ln in old if ln["reconciliation"]]
        if reconciled:
            self.client.wizard("account.move.unreconcile_lines", {}, "account.move.line", reconciled)
        for ln in old:
            for inv in self.client.search_read("account.invoice", [("payment_lines", "=", ln["id"])], ["id"]):
                self.client.model("account.invoice", "write", [inv["id"]], {"payment_lines": [["remove", [ln["id"]]]]})
        both = [ln["id"] for ln in old] + [ln["id"] for ln in new_lines]
        if sum(dec(ln["debit"]) - dec(ln["credit"]) for ln in [*old, *new_lines]) == 0 and len(both) > 1:
            self.client.wizard("account.move.reconcile_lines", {}, "account.move.line", both)

    # -- pull ------------------------------------------------------------------------------------

    def pull(self, since: int, ours: Mapping[str, str]) -> list[Any]:
        """Posted credits on receivable accounts after line ``since`` that invoiceflow did not push:
        a payment (cash or statement journal), a write-off (write-off journal) or a credit note (a
        Tryton invoice that is not ours). The invoice a line settles is the one whose payment lines
        hold it, or the one it is reconciled with."""
        rows = self.client.search_read(
            "account.move.line",
            [("id", ">", since), ("account.type.receivable", "=", True), ("credit", ">", 0),
             ("move.state", "=", "posted")],
            ["id", "date", "credit", "amount_second_currency", "second_currency.code", "party.code", "move",
             "move.number", "move.origin", "move.description", "move.journal.type", "move.journal.code",
             "reconciliation", "invoice_payment"],
            [["id", "ASC"]],
        )  # fmt: skip
        ours_moves = {int(x) for x, kind in ours.items() if kind == "entry"}
        ours_invoices = {int(x) for x, kind in ours.items() if kind in ("invoice", "credit_note")}
        found = []
        for r in rows:
            move = r["move."] or {}
            origin = move.get("origin") or ""
            if r["move"] in ours_moves:
                continue
            origin_invoice = int(origin.split(",")[1]) if origin.startswith("account.invoice,") else None
            journal = move.get("journal.") or {}
            if journal.get("type") == "revenue" or journal.get("code") == self.mapping.journals.get("sales"):
                if origin_invoice is not None and origin_invoice in ours_invoices:
                    continue  # one of our credit notes
                kind = "credit_note"
            else:  # the pay wizard's moves have the invoice as origin too: still a payment
                kind = "write_off" if journal.get("type") == "write-off" else "payment"
            currency = (r.get("second_currency.") or {}).get("code") or self.company_currency()
            amount = abs(dec(r["amount_second_currency"])) if r.get("second_currency.") else dec(r["credit"])
            found.append(
                Pulled(
                    external_id=str(r["id"]),
                    kind=kind,
                    client_id=(r.get("party.") or {}).get("code"),
                    invoice_number=self._settles(r),
                    amount=int(amount * 100),
                    currency=currency,
                    booked_on=day(r["date"]) or date.today(),
                    detail=f"Tryton move {move.get('number') or r['move']} line {r['id']} "
                    f"({journal.get('code', '?')} journal, {move.get('description') or 'no description'})",
                    sequence=int(r["id"]),
                )
            )
        return found

    def _settles(self, line: Mapping[str, Any]) -> str | None:
        invoice_id = line.get("invoice_payment")
        if invoice_id is None and line.get("reconciliation"):
            others = self.client.search_read(
                "account.move.line",
                [("reconciliation", "=", line["reconciliation"]), ("debit", ">", 0)],
                ["move.origin"],
            )
            for other in others:
                origin = (other.get("move.") or {}).get("origin") or ""
                if origin.startswith("account.invoice,"):
                    invoice_id = int(origin.split(",")[1])
                    break
        if invoice_id is None:
            return None
        rows = self.client.search_read("account.invoice", [("id", "=", invoice_id)], ["reference", "type"])
        return rows[0]["reference"] if rows and rows[0]["type"] == "out" else None
