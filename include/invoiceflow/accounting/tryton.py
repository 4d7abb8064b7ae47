"""The live Tryton adapter: invoiceflow's documents and payments into a Tryton company's books, and
what people booked there by hand back out, over Tryton's JSON-RPC.

Plain HTTP (the standard library), no Tryton import: Tryton runs wherever the company runs it and
invoiceflow only needs its URL, a database and a login (``TrytonConnection``, resolved by the
Airflow seam from the ``accounting_default`` connection, or by the CLI from the environment).

What Tryton decides and invoiceflow must respect (../shared/TRYTON-NOTES.md, checked on 8.2):

- Every RPC call is its own transaction. A document is created, then posted, in two calls: a run
  that dies in between leaves a draft, which the next run finds by ``reference`` (invoiceflow's
  number) and posts. Nothing is created without looking first.
- Tryton numbers invoices itself when it posts them (``number`` is read-only); invoiceflow's number
  travels in ``reference`` and Tryton's is recorded in invoiceflow. Posting an invoice dated before
  the last numbered one fails: documents go in date order.
- A warning (a date in the future, say) comes back as ``UserWarning``; it is accepted by writing a
  ``res.user.warning`` for its key and calling again, as a person clicking *Yes* would.
- Reconciling lines is not an RPC method: it goes through the *Reconcile Lines* wizard, as in the
  client.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from invoiceflow.core.errors import DataError, InfrastructureError

log = logging.getLogger(__name__)

TARGET = "tryton"
BATCH = 20
"""Invoices per create call: one round trip for twenty (375 ms per invoice instead of 950, notes)."""


def mapping_section(policy: Any = None, path: Any = None) -> dict[str, dict[str, str]]:
    """The ``tryton:`` section of the mapping file (include/config/accounting.yaml), checked with the
    rest of the file: accounts by invoiceflow role, revenue accounts, taxes by tax code, journals,
    analytic roots. The shipped codes fit the chart Tryton's ``account_template_root_en`` creates
    plus the accounts scripts/tryton_server.py adds; a company maps its own chart there."""
    from invoiceflow.accounting.mapping import MappingError, load_mapping
    from invoiceflow.core.policy import load_policy

    found = load_mapping(policy or load_policy(), path)
    if found.tryton is None:
        raise MappingError("the mapping file has no tryton: section; the Tryton connector needs one")
    return found.tryton.model_dump()


@dataclass(frozen=True)
class TrytonConnection:
    """Where the books are: the Airflow connection's host, port, schema (the database), login and
    password, as a plain record."""

    host: str
    database: str
    login: str
    password: str = field(repr=False)
    port: int = 8000
    scheme: str = "http"
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise DataError(f"the accounting connection's scheme must be http or https, not {self.scheme!r}")

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{self.database}/rpc/"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrytonConnection:
        """The CLI's fallback outside Airflow: ``INVOICEFLOW_TRYTON_URL`` (``http://host:port/database``),
        ``INVOICEFLOW_TRYTON_LOGIN`` and ``INVOICEFLOW_TRYTON_PASSWORD``."""
        env = os.environ if environ is None else environ
        raw = env.get("INVOICEFLOW_TRYTON_URL")
        if not raw:
            raise DataError(
                "no accounting connection: set the Airflow connection accounting_default, or "
                "INVOICEFLOW_TRYTON_URL=http://host:port/database with INVOICEFLOW_TRYTON_LOGIN and _PASSWORD"
            )
        from urllib.parse import urlsplit

        parts = urlsplit(raw)
        database = parts.path.strip("/").split("/")[0]
        if not (parts.hostname and database):
            raise DataError(f"INVOICEFLOW_TRYTON_URL={raw!r}: expected http://host:port/database")
        return cls(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8000),
            scheme=parts.scheme or "http",
            database=database,
            login=env.get("INVOICEFLOW_TRYTON_LOGIN", "admin"),
            password=env.get("INVOICEFLOW_TRYTON_PASSWORD", ""),
        )


class TrytonError(DataError):
    """Tryton refused a call (a UserError: a closed period, a wrong account): a person must act."""


class TrytonUnavailable(InfrastructureError):
    """Tryton could not be reached or answered with a server error: a later run may succeed."""


def dec(value: Any) -> Decimal:
    """A Decimal as Tryton's JSON sends it (``{"__class__": "Decimal", "decimal": "1.00"}``)."""
    if isinstance(value, dict):
        return Decimal(value["decimal"])
    return Decimal(str(value or 0))


def day(value: Any) -> date | None:
    if isinstance(value, dict):
        return date(value["year"], value["month"], value["day"])
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


class TrytonClient:
    """A JSON-RPC session: logs in with ``common.db.login``, sends ``Authorization: Session``, calls
    with the user's preferences as the context, logs in again when the session expired."""

    def __init__(self, conn: TrytonConnection) -> None:
        self.conn = conn
        self._auth: str | None = None
        self.context: dict[str, Any] = {}
        self.calls = 0

    def _post(self, method: str, params: Sequence[Any]) -> Any:
        body = json.dumps({"id": self.calls, "method": method, "params": _encode(list(params))}).encode()
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = f"Session {self._auth}"
        request = urllib.request.Request(self.conn.url, body, headers)  # noqa: S310 - http(s) only, checked
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.conn.timeout) as resp:  # noqa: S310 - as above
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise _SessionExpired(method) from exc
            raise TrytonUnavailable(f"Tryton at {self.conn.url} answered {exc.code} to {method}") from exc
        except (OSError, ValueError) as exc:
            raise TrytonUnavailable(f"Tryton at {self.conn.url} cannot be reached ({method}): {exc}") from exc
        error = answer.get("error")
        if error:
            raise _error(method, error)
        return answer.get("result")

    def login(self) -> None:
        self._auth = None
        try:
            result = self._post("common.db.login", [self.conn.login, {"password": self.conn.password}, "en"])
        except _SessionExpired as exc:  # Tryton answers a wrong login or password with 401
            raise TrytonError(
                f"Tryton login as {self.conn.login} on {self.conn.database} failed: wrong login or password"
            ) from exc
        except TrytonError as exc:
            raise TrytonError(f"Tryton login as {self.conn.login} on {self.conn.database} failed: {exc}") from exc
        if not result:
            raise TrytonError(f"Tryton login as {self.conn.login} on {self.conn.database} failed: wrong password?")
        uid, token = result[0], result[1]
        self._auth = base64.b64encode(f"{self.conn.login}:{uid}:{token}".encode()).decode()
        self.context = self._post("model.res.user.get_preferences", [True, {}])

    def call(self, method: str, *params: Any, context: bool = True) -> Any:
        """One RPC call; a warning is accepted once (as a person clicking *Yes*) and the call repeated."""
        if self._auth is None:
            self.login()
        args = [*params, self.context] if context else list(params)
        for _attempt in range(5):
            try:
                return self._post(method, args)
            except _SessionExpired:
                self.login()
                args = [*params, self.context] if context else list(params)
            except _Warning as warning:
                log.info("Tryton warns on %s (%s): %s; accepted", method, warning.key, warning.message)
                self._post(
                    "model.res.user.warning.create",
                    [[{"user": self.context.get("user") or self._uid(), "name": warning.key, "always": False}],
                     self.context],
                )  # fmt: skip
        raise TrytonError(f"{method}: Tryton kept refusing (warnings or session) after 5 attempts")

    def _uid(self) -> int:
        assert self._auth
        return int(base64.b64decode(self._auth).decode().split(":")[1])

    def model(self, model: str, method: str, *args: Any) -> Any:
        return self.call(f"model.{model}.{method}", *args)

    def search_read(
        self, model: str, domain: list[Any], fields: Sequence[str], order: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        return self.model(model, "search_read", domain, 0, None, order, list(fields))

    def wizard(self, name: str, data: Mapping[str, Any], active_model: str, active_ids: Sequence[int]) -> Any:
        """Run a wizard to its end from its start state, as the client does (reconcile, unreconcile)."""
        session, start, _end = self.call(f"wizard.{name}.create")
        context = {**self.context, "active_model": active_model, "active_ids": list(active_ids),
                   "active_id": active_ids[0]}  # fmt: skip
        try:
            return self._post(f"wizard.{name}.execute", [session, dict(data), start, context])
        finally:
            self._post(f"wizard.{name}.delete", [session, self.context])


class _SessionExpired(Exception):
    pass


class _Warning(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _error(method: str, error: Any) -> Exception:
    if isinstance(error, list) and error and error[0] == "UserWarning":
        key, message = error[1][0], error[1][1]
        return _Warning(key, message)
    if isinstance(error, list) and error and error[0] in ("UserError", "AccessError", "ConcurrencyException"):
        detail = error[1][0] if isinstance(error[1], list) and error[1] else error[1]
        return TrytonError(f"Tryton refused {method}: {detail}")
    if isinstance(error, list) and error and str(error[0]).startswith("403"):
        return _SessionExpired(method)
    return TrytonUnavailable(f"Tryton failed on {method}: {str(error)[:500]}")


def chunks(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def timed(label: str, started: float) -> None:
    log.debug("%s in %.0f ms", label, (time.monotonic() - started) * 1000)


class TrytonBooks:
    """The ``accounting.sync.Target`` for a Tryton company: invoices as Tryton's own customer
    invoices (posted, numbered by Tryton), money as posted moves that settle them, and what people
    booked on receivables pulled back."""

    name = TARGET
    batch_size = BATCH

    def __init__(self, client: TrytonClient, mapping: Any) -> None:
        self.client = client
        self.mapping = mapping  # accounting.sync.Mapping_
        self._accounts: dict[str, dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._periods: dict[date, int] = {}
        self._company_currency: str | None = None

    # -- look-ups, cached for the run ------------------------------------------------------------

    def _id(self, model: str, field_name: str, value: str, what: str) -> int:
        key = (model, value)
        if key not in self._ids:
            found = self.client.model(model, "search", [(field_name, "=", value)], 0, 1, None)
            if not found:
                raise TrytonError(f"Tryton has no {what} {value!r} (check the tryton section of the mapping)")
            self._ids[key] = found[0]
        return self._ids[key]

    def account(self, code: str) -> dict[str, Any]:
        if code not in self._accounts:
            found = self.client.search_read(
                "account.account", [("code", "=", code), ("closed", "!=", True)], ["id", "party_required"]
            )
            if not found:
                raise TrytonError(f"Tryton has no open account {code!r} (check the tryton section of the mapping)")
            self._accounts[code] = found[0]
        return self._accounts[code]

    def tax(self, name: str) -> int:
        return self._id("account.tax", "name", name, "tax")

    def journal(self, code: str) -> int:
        return self._id("account.journal", "code", code, "journal")

    def currency(self, code: str) -> int:
        return self._id("currency.currency", "code", code, "currency")

    def country(self, code: str) -> int | None:
        try:
            return self._id("country.country", "code", code, "country")
        except TrytonError:
            return None  # an address without its country is better than no customer

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

    def company_currency(self) -> str:
        if self._company_currency is None:
            company = (
                self.client.context.get("company")
                or self.client.call("model.res.user.get_preferences", True)["company"]
            )
            (row,) = self.client.search_read("company.company", [("id", "=", company)], ["currency.code"])
            self._company_currency = row["currency."]["code"]
        return self._company_currency

    def period(self, when: date) -> int:
        if when not in self._periods:
            found = self.client.model(
                "account.period",
                "search",
                [("start_date", "<=", when), ("end_date", ">=", when), ("type", "=", "standard"),
                 ("state", "=", "open")],
                0, 1, None,
            )  # fmt: skip
            if not found:
                raise TrytonError(f"Tryton has no open period for {when} (create the fiscal year and its periods)")
            self._periods[when] = found[0]
        return self._periods[when]

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
        from invoiceflow.accounting.sync_target import Pushed

        return {
            ref: Pushed(str(row["id"]), row["number"])
            for ref, row in self._invoices(numbers).items()
            if row["state"] in ("posted", "paid")
        }

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
        from invoiceflow.accounting.sync_target import Pushed

        return {k: Pushed(str(r["id"]), r["number"]) for k, r in self._moves(keys).items() if r["state"] == "posted"}

    # -- push ------------------------------------------------------------------------------------

    def push_customers(self, customers: Sequence[Any]) -> dict[str, Any]:
        from invoiceflow.accounting.sync_target import Pushed

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
        from invoiceflow.accounting.sync_target import Pushed

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

    def push_entry(self, entry: Any, parties: Mapping[str, str], documents: Mapping[str, str]) -> Any:
        """A posted move in the mapped journal, found by its key in the description first; then its
        receivable lines settle the invoices they name (payment lines, reconciled when paid)."""
        from invoiceflow.accounting.sync_target import Pushed

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

    def _reconcile_if_paid(self, invoice_id: int) -> None:
        (inv,) = self.client.search_read(
            "account.invoice", [("id", "=", invoice_id)], ["state", "amount_to_pay", "lines_to_pay", "payment_lines"]
        )
        if inv["state"] != "posted" or dec(inv["amount_to_pay"]) != 0:
            return
        ids = [*inv["lines_to_pay"], *inv["payment_lines"]]
        open_ = [r["id"] for r in self.client.search_read(
            "account.move.line", [("id", "in", ids), ("reconciliation", "=", None)], ["id"])]  # fmt: skip
        if open_:
            self.client.wizard("account.move.reconcile_lines", {}, "account.move.line", open_)

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
        from invoiceflow.accounting.sync_target import Pulled

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
