"""The Tryton adapter's invoice side: customers as parties, issued invoices and credit notes as
Tryton's own customer invoices (found by ``reference`` first, batched, posted in date order), with
their analytic accounts, and the issued tax written where Tryton rounds it otherwise.

Tryton numbers invoices itself when it posts them (``number`` is read-only); invoiceflow's number
travels in ``reference`` and Tryton's is recorded in invoiceflow. Tryton rounds taxes half to even
and per tax and sign of the base; where that differs from the issued tax by at most a minor unit
per line carrying it, the issued amount is written on Tryton's largest tax line before posting,
and any larger difference stops the document (docs/accounting-sync.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from invoiceflow.accounting.sync_target import Pushed
from invoiceflow.accounting.tryton_client import TrytonError, TrytonLookups, chunks, dec


class TrytonInvoices(TrytonLookups):
    """Parties, invoices and credit notes into Tryton (``TrytonBooks`` is this and ``TrytonMoves``)."""

    def analytic(self, dimension: str, code: str, name: str) -> tuple[int, int] | None:
        """The analytic root of a dimension and its account for ``code`` (created, opened, when
        missing); None when the mapping names no root for the dimension."""
        root_code = self.mapping.analytic.get(dimension)
        if not root_code:
            return None
        root = self._id("analytic_account.account", "code", root_code, "analytic root")
        key = ("analytic_account.account", f"{root_code}/{code}")
        if key not in self._ids:
            found = self.client.model(
                "analytic_account.account", "search", [("root", "=", root), ("code", "=", code)], 0, 1, None
            )
            if found:
                self._ids[key] = found[0]
            else:
                company = self.client.context.get("company")
                self._ids[key] = self.client.model(
                    "analytic_account.account",
                    "create",
                    [{"name": name, "code": code, "type": "normal", "state": "opened", "root": root,
                      "parent": root, "company": company}],
                )[0]  # fmt: skip
        return root, self._ids[key]

    def _prepare_analytic(self, documents: Sequence[Any]) -> None:
        """Find, and create in one call per dimension, the analytic accounts a batch needs (two
        calls per batch instead of two per new project or client)."""
        wanted: dict[str, dict[str, str]] = {"project": {}, "client": {}}
        for d in documents:
            wanted["client"][d.client_id] = f"Client {d.client_id}"
            for ln in d.lines:
                wanted["project"][ln.project_code] = f"Project {ln.project_code}"
        for dimension, codes in wanted.items():
            root_code = self.mapping.analytic.get(dimension)
            if not root_code or not codes:
                continue
            root = self._id("analytic_account.account", "code", root_code, "analytic root")
            todo = [c for c in codes if ("analytic_account.account", f"{root_code}/{c}") not in self._ids]
            if not todo:
                continue
            for row in self.client.search_read(
                "analytic_account.account", [("root", "=", root), ("code", "in", todo)], ["id", "code"]
            ):
                self._ids[("analytic_account.account", f"{root_code}/{row['code']}")] = row["id"]
            new = [c for c in todo if ("analytic_account.account", f"{root_code}/{c}") not in self._ids]
            if new:
                company = self.client.context.get("company")
                created = self.client.model(
                    "analytic_account.account",
                    "create",
                    [{"name": codes[c], "code": c, "type": "normal", "state": "opened", "root": root,
                      "parent": root, "company": company} for c in new],
                )  # fmt: skip
                for code, ident in zip(new, created, strict=True):
                    self._ids[("analytic_account.account", f"{root_code}/{code}")] = ident

    def _analytic_entries(self, d: Any, ln: Any) -> list[dict[str, int]]:
        entries = []
        for dimension, code, name in (
            ("project", ln.project_code, f"Project {ln.project_code}"),
            ("client", d.client_id, f"Client {d.client_id}"),
        ):
            found = self.analytic(dimension, code, name)
            if found:
                entries.append({"root": found[0], "account": found[1]})
        return entries

    # -- find ------------------------------------------------------------------------------------

    def _invoices(self, numbers: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for part in chunks(list(numbers), 200):
            for row in self.client.search_read(
                "account.invoice",
                [("type", "=", "out"), ("reference", "in", list(part))],
                ["id", "reference", "number", "state", "total_amount"],
                [["id", "ASC"]],
            ):
                # the reference is not unique in Tryton: the first one we find is the one we made
                found.setdefault(row["reference"], row)
        return found

    def find_documents(self, numbers: Sequence[str]) -> dict[str, Any]:
        return {
            ref: Pushed(str(row["id"]), row["number"])
            for ref, row in self._invoices(numbers).items()
            if row["state"] in ("posted", "paid")
        }

    # -- push ------------------------------------------------------------------------------------

    def push_customers(self, customers: Sequence[Any]) -> dict[str, Any]:
        codes = [c.client_id for c in customers]
        existing = {
            r["code"]: r["id"]
            for part in chunks(codes, 200)
            for r in self.client.search_read("party.party", [("code", "in", list(part))], ["id", "code"])
        }
        new = [c for c in customers if c.client_id not in existing]
        if new:
            created = self.client.model("party.party", "create", [self._party(c) for c in new])
            existing.update({c.client_id: pid for c, pid in zip(new, created, strict=True)})
        return {c.client_id: Pushed(str(existing[c.client_id]), c.client_id) for c in customers}

    def _party(self, c: Any) -> dict[str, Any]:
        address = {
            "street": "\n".join(x for x in (c.address_line1, c.address_line2) if x) or None,
            "postal_code": c.postcode,
            "city": c.city,
            "country": self.country(c.country),
        }
        values: dict[str, Any] = {
            "name": c.name,
            "code": c.client_id,
            "addresses": [["create", [address]]],
            "contact_mechanisms": [["create", [{"type": "email", "value": c.email}]]],
        }
        if c.vat_id:
            # Tryton checks an "eu_vat" identifier's check digits; one that fails them still travels,
            # untyped, so the books carry what the client told us
            from stdnum.eu import vat

            kind = "eu_vat" if vat.is_valid(c.vat_id) else None
            values["identifiers"] = [["create", [{"type": kind, "code": c.vat_id}]]]
        return values

    def push_documents(self, documents: Sequence[Any], parties: Mapping[str, str]) -> dict[str, Any]:
        """Find by reference, create what is missing in one call, check Tryton's totals against ours
        (a draft that disagrees is deleted, never posted), post the drafts in one call."""
        existing = self._invoices([d.number for d in documents])
        new = [d for d in documents if d.number not in existing]
        for d in new:
            self._rate(d)
        if new:
            self._prepare_analytic(new)
            addresses = self._addresses([parties[d.client_id] for d in new])
            values = [self._invoice(d, int(parties[d.client_id]), addresses) for d in new]
            created = self.client.model("account.invoice", "create", values)
            for d, invoice_id in zip(new, created, strict=True):
                existing[d.number] = {"id": invoice_id, "reference": d.number, "state": "draft"}
        drafts = [existing[d.number]["id"] for d in documents if existing[d.number]["state"] == "draft"]
        if drafts:
            self._check_totals(documents, existing, drafts)
            self._post_invoices(drafts)
        posted = {
            r["id"]: r
            for r in self.client.search_read(
                "account.invoice",
                [("id", "in", [existing[d.number]["id"] for d in documents])],
                ["id", "number", "state"],
            )
        }
        result = {}
        for d in documents:
            row = posted[existing[d.number]["id"]]
            if row["state"] not in ("posted", "paid"):
                raise TrytonError(f"{d.number}: Tryton left invoice {row['id']} {row['state']}")
            result[d.number] = Pushed(str(row["id"]), row["number"])
        for d in documents:
            if d.kind == "credit_note" and d.credited_number:
                self._credit(int(result[d.number].external_id), d.credited_number)
        return result

    def _credit(self, note_id: int, credited_number: str) -> None:
        """A credit note pays the invoice it corrects, as Tryton's own *Credit* does: its receivable
        line becomes a payment line of the invoice (reconciled when nothing is left to pay)."""
        invoice = self._invoices([credited_number]).get(credited_number)
        if invoice is None or invoice["state"] != "posted":
            return
        (note,) = self.client.search_read("account.invoice", [("id", "=", note_id)], ["lines_to_pay"])
        (inv,) = self.client.search_read("account.invoice", [("id", "=", invoice["id"])], ["payment_lines"])
        new = [line for line in note["lines_to_pay"] if line not in inv["payment_lines"]]
        if new:
            self.client.model("account.invoice", "write", [invoice["id"]], {"payment_lines": [["add", new]]})
        self._reconcile_if_paid(invoice["id"])

    def _rate(self, d: Any) -> None:
        """The rate invoiceflow priced a foreign-currency document at, for its day, unless Tryton
        has one for that day: the receivable then comes into both books at the same value."""
        if d.currency == self.company_currency() or d.base_currency != self.company_currency():
            return
        currency = self.currency(d.currency)
        if not self.client.model(
            "currency.currency.rate", "search", [("currency", "=", currency), ("date", "=", d.issue_date)], 0, 1, None
        ):
            self.client.model("currency.currency.rate", "create", [{"currency": currency, "date": d.issue_date,
                                                                    "rate": d.fx_rate}])  # fmt: skip

    def _addresses(self, party_ids: Sequence[str]) -> dict[int, int]:
        rows = self.client.search_read(
            "party.party", [("id", "in", sorted({int(p) for p in party_ids}))], ["id", "addresses"]
        )
        return {r["id"]: r["addresses"][0] for r in rows if r["addresses"]}

    def _invoice(self, d: Any, party: int, addresses: Mapping[int, int]) -> dict[str, Any]:
        if party not in addresses:
            raise TrytonError(f"{d.number}: customer {d.client_id} has no address in Tryton")
        journal = self.mapping.journals.get("sales")
        if journal is None:
            raise TrytonError("the mapping names no Tryton journal for sales")
        return {
            "type": "out",
            "party": party,
            "invoice_address": addresses[party],
            "currency": self.currency(d.currency),
            "journal": self.journal(journal),
            "account": self.account(self.mapping.accounts["receivables"])["id"],
            "invoice_date": d.issue_date,
            "reference": d.number,
            "description": f"invoiceflow {d.kind.replace('_', ' ')} {d.number}"
            + (f" (credits {d.credited_number})" if d.credited_number else ""),
            "lines": [
                [
                    "create",
                    [
                        {
                            "type": "line",
                            "currency": self.currency(d.currency),
                            "account": self.account(ln.account)["id"],
                            "description": f"{ln.description} [{ln.project_code}]",
                            "quantity": float(ln.quantity),
                            "unit_price": ln.unit_price,
                            "taxes": [["add", [self.tax(ln.tax)]]],
                            "analytic_accounts": [["create", self._analytic_entries(d, ln)]],
                        }
                        for ln in d.lines
                    ],
                ]
            ],
        }

    def _check_totals(self, documents: Sequence[Any], existing: Mapping[str, Any], drafts: Sequence[int]) -> None:
        """Tryton's draft must say what invoiceflow issued, to the cent: the issued invoice is the
        legal truth. Tryton rounds differently (half to even, and per tax *and sign of the base*,
        so a discount line is a tax line of its own), which can put its tax a cent or so off ours:
        that rounding difference is written on Tryton's tax line (see ``_issued_tax_amounts``). Any
        other difference deletes the draft: never posted."""
        wanted = {existing[d.number]["id"]: d for d in documents if existing[d.number]["id"] in drafts}
        for invoice_id, d in wanted.items():
            if self._totals(invoice_id) == (d.net, d.tax):
                continue
            self._issued_tax_amounts(invoice_id, d)
            theirs = self._totals(invoice_id)
            if theirs != (d.net, d.tax):
                self.client.model("account.invoice", "delete", [invoice_id])
                raise TrytonError(
                    f"{d.number}: Tryton computes net {theirs[0]} and tax {theirs[1]} (minor units), invoiceflow "
                    f"issued {d.net} and {d.tax}: the draft was deleted, check the tax mapping"
                )

    def _totals(self, invoice_id: int) -> tuple[int, int]:
        (row,) = self.client.search_read("account.invoice", [("id", "=", invoice_id)], ["untaxed_amount", "tax_amount"])
        return int(dec(row["untaxed_amount"]) * 100), int(dec(row["tax_amount"]) * 100)

    def _issued_tax_amounts(self, invoice_id: int, d: Any) -> None:
        """Per Tryton tax: when Tryton's bases add up to ours and its amounts differ from the issued
        tax by at most one minor unit per invoice line carrying that tax (a rounding difference),
        the difference goes on Tryton's largest tax line for it. Tryton keeps an edited tax line as
        long as its base is unchanged, so the posted invoice says what the client received.
        Anything larger is left alone, and ``_check_totals`` refuses the draft."""
        base: dict[int, int] = defaultdict(int)
        amount: dict[int, int] = defaultdict(int)
        for t in d.taxes:
            base[self.tax(t.tax)] += t.base
            amount[self.tax(t.tax)] += t.amount
        lines = Counter(self.tax(ln.tax) for ln in d.lines)
        theirs: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for line in self.client.search_read(
            "account.invoice.tax", [("invoice", "=", invoice_id)], ["id", "tax", "base", "amount"]
        ):
            theirs[line["tax"]].append(line)
        for tax, rows in theirs.items():
            if tax not in amount or sum(int(dec(r["base"]) * 100) for r in rows) != base[tax]:
                continue
            diff = amount[tax] - sum(int(dec(r["amount"]) * 100) for r in rows)
            if diff == 0 or abs(diff) > lines[tax]:
                continue
            row = max(rows, key=lambda r: abs(dec(r["amount"])))
            issued = int(dec(row["amount"]) * 100) + diff
            self.client.model("account.invoice.tax", "write", [row["id"]], {"amount": Decimal(issued) / 100})

    def _post_invoices(self, drafts: Sequence[int]) -> None:
        """Post the drafts. Tryton refuses a foreign-currency invoice whose conversion leaves a
        rounding difference when the company has no currency exchange accounts to book it on (it
        asks only then, so most such invoices post without them): that refusal becomes an error
        naming the setting and the mapping's accounts for it. The draft stays, and the next run
        posts it once the setting is made."""
        try:
            self.client.model("account.invoice", "post", list(drafts))
        except TrytonError as exc:
            if "currency exchange" not in str(exc):
                raise
            raise TrytonError(
                "the company in Tryton has no currency exchange accounts, which Tryton needs to post a "
                "foreign-currency invoice whose conversion leaves a rounding difference: set its Currency "
                f"Exchange Credit Account (the mapping's fx_gain, {self.mapping.accounts.get('fx_gain', '?')!r}) "
                f"and Currency Exchange Debit Account (fx_loss, {self.mapping.accounts.get('fx_loss', '?')!r}) "
                f"in Tryton's account configuration (Financial > Configuration > Configuration). {exc}"
            ) from exc
