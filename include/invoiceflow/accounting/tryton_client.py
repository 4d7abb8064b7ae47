"""Tryton's JSON-RPC, for the adapter (``accounting.tryton``): the connection record, the session
(login, ``Authorization: Session``, the user's preferences as the context, a new login when it
expired, warnings accepted as a person clicking *Yes* would, wizards), Tryton's JSON values, and
the adapter's look-ups (accounts, taxes, journals, periods ...), cached for a run.

Plain HTTP (the standard library), no Tryton import.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from invoiceflow.core.errors import DataError, InfrastructureError

log = logging.getLogger("invoiceflow.accounting.tryton")  # one logger for the whole adapter

BATCH = 20
"""Invoices per create call: one round trip for twenty (375 ms per invoice instead of 950, notes)."""


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


class TrytonLookups:
    """What the invoice side and the money side of the adapter share: the client, the mapping, the
    ids Tryton gives accounts, taxes, journals, currencies, countries and periods, looked up once
    per run, and reconciling a paid invoice."""

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

    def _reconcile_if_paid(self, invoice_id: int) -> None:
        """Reconcile an invoice's receivable with what paid it once nothing is left to pay (Tryton:
        *paid*): after a payment settles it, and after a credit note pays the invoice it corrects."""
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
