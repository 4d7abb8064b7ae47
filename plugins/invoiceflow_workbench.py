"""The reconciliation workbench: pages for finance and a JSON API, both thin over the domain.

Every action calls one function of ``invoiceflow.collect.decisions`` and every list one query of
``invoiceflow.reporting.workbench``; nothing here decides anything. What this module adds is the
web's share of the rules:

- who: the Airflow user (``current_user``: session cookie or bearer token, checked by Airflow's
  auth manager). Reading needs the ``Billing`` view, acting needs edit rights on it (``may_act``),
  and the domain refuses a proposer who approves their own write-off (four eyes);
- idempotency: each page form carries a fresh random key, an API call may send ``Idempotency-Key``;
  both reach the domain as ``key``, prefixed with the person, so one person's retry never collides
  with another's request. A double click or a retried request acts once;
- races: line forms send the line's ``version`` back as ``seen``; a line someone else decided
  meanwhile answers "already decided by X at T" (HTTP 409) instead of acting twice;
- errors: the domain's exceptions become a message on the page or ``{"detail": ...}`` with 404,
  409, 403 or 422; never a 500 for a person's mistake.

Page actions need the session's form token (another site cannot post them); API actions need a
bearer token in the ``Authorization`` header, which a browser never sends on its own, so the API
needs no form token. ``create_app`` in ``invoiceflow_dashboard_web`` calls :func:`install`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from invoiceflow_dashboard_web import URL_PREFIX, UserDep, actor_of, csrf_token, may_act
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine

from invoiceflow.collect import decisions
from invoiceflow.collect.decisions import AlreadyDecided, DecisionError, FourEyes, Outcome, Target
from invoiceflow.core import db
from invoiceflow.core.errors import DataError, NotFoundError
from invoiceflow.core.money import to_minor
from invoiceflow.core.run import Run
from invoiceflow.reporting import workbench

API = "/api/v1"
PAGE = "/workbench"
Render = Callable[..., HTMLResponse]
F = Annotated[str, Form()]  # a page form's field: absent is "", and the domain says what is missing


# Shared between pages and API ---------------------------------------------------------------------


def status_of(exc: DataError) -> int:
    """The HTTP answer to a refused decision (subclasses first: AlreadyDecided is a DecisionError)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, AlreadyDecided):
        return 409
    if isinstance(exc, FourEyes):
        return 403
    return 422


def person_key(user: Any, key: str | None) -> str | None:
    """The idempotency key as the domain stores it: the person's own namespace."""
    key = (key or "").strip()
    return f"{actor_of(user)}:{key[:200]}" if key else None


def parse_amount(text: str | None, currency: str) -> int | None:
    """A person's amount ("1190", "1,190.00", "1.190,00") in minor units; blank: None ("all of it")."""
    s = (text or "").strip().replace(" ", "").replace("'", "")
    if not s:
        return None
    if "," in s and "." in s:
        s = s.replace(",", "") if s.rfind(".") > s.rfind(",") else s.replace(".", "").replace(",", ".")
    elif "," in s:
        s = s.replace(",", ".") if re.search(r",\d{1,2}$", s) else s.replace(",", "")
    return to_minor(s, currency)


def invoice_currency(conn: Connection, number: str) -> str:
    found = db.scalar(conn, "SELECT currency FROM invoices WHERE invoice_number = :n", {"n": number.strip()})
    if not found:
        raise NotFoundError(f"no issued invoice {number}")
    return str(found)


# JSON bodies ---------------------------------------------------------------------------------------


class InvoiceAmount(BaseModel):
    number: str = Field(description="invoice number, e.g. NWD-2026-000123")
    amount: int | None = Field(None, description="minor units; omitted: as much as is open and the line has")


class ApplyBody(BaseModel):
    invoices: list[InvoiceAmount] = Field(min_length=1)
    reason: str
    rest: str = Field("leave", description="leave | write_off | credit")
    learn_text: str | None = Field(None, description="a text pattern that identified the client")
    seen: str | None = Field(None, description="the line's version as listed: refused if it changed since")


class NotReceivableBody(BaseModel):
    category: str = Field(description="a key of the policy's reconciliation.non_receivable_accounts")
    reason: str
    learn: bool = False
    seen: str | None = None


class RefundBody(BaseModel):
    reason: str
    amount: int | None = Field(None, description="minor units; omitted: all that is unapplied")


class CreditApplyBody(BaseModel):
    client_id: str
    invoice_number: str
    reason: str
    amount: int | None = Field(None, description="minor units; omitted: as much as the credit and the invoice allow")


class CreditRefundBody(BaseModel):
    client_id: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reason: str
    amount: int | None = Field(None, description="minor units; omitted: all of the client's credit")


class WriteOffBody(BaseModel):
    invoice_number: str
    reason: str
    amount: int | None = Field(None, description="minor units; omitted: all that is open")
    kind: str | None = Field(None, description="short_payment | bank_fee | cash_discount | bad_debt | other")


class NoteBody(BaseModel):
    note: str


class ReasonBody(BaseModel):
    reason: str


class UndoBody(BaseModel):
    reason: str
    payment_id: int | None = None
    write_off_id: int | None = None
    classification_id: int | None = None
    refund_id: int | None = None
    credit_application_id: int | None = None
    booked_id: int | None = None  # refused: a payment pulled from the books is reversed there


class RuleBody(BaseModel):
    note: str
    client_id: str | None = Field(None, description="who pays (a payer rule); or category")
    category: str | None = Field(None, description="not a receivable (a line rule); or client_id")
    payer_iban: str | None = None
    payer_name: str | None = None
    text: str | None = None
    direction: str = Field("any", description="credit | debit | any")


# The app ------------------------------------------------------------------------------------------


def install(app: FastAPI, *, engine: Callable[[], Engine], today: Callable[[], date], render: Render) -> None:
    """Add the workbench pages and the JSON API (with its OpenAPI document) to the dashboard app."""

    def person_run(user: Any) -> Run:
        """The run context of a person's decision: the person is the actor."""
        from invoiceflow.airflow import runtime

        return runtime.run_for(engine(), actor=actor_of(user), run_id="workbench", today=today())

    @contextmanager
    def reading() -> Iterator[Connection]:
        with engine().connect() as conn:
            yield conn

    app.include_router(_pages(person_run, reading, render))
    app.include_router(_api(person_run, reading), prefix=API)

    def document() -> dict[str, Any]:
        routes = [r for r in app.routes if getattr(r, "path", "").startswith(API)]
        return get_openapi(
            title="invoiceflow workbench API",
            version="1",
            description="Finance's decisions on bank lines, write-offs, exceptions and rules (docs/workbench.md).",
            routes=routes,
            servers=[{"url": URL_PREFIX}],
        )

    @app.get(f"{API}/openapi.json", include_in_schema=False)
    def openapi(user: UserDep) -> dict[str, Any]:
        """The API's OpenAPI document, for the same readers as the API (not public)."""
        return document()

    @app.get(f"{API}/docs", include_in_schema=False, response_class=HTMLResponse)
    def api_page(request: Request, user: UserDep) -> HTMLResponse:
        """The API's reference, rendered here from its OpenAPI document: a Swagger page would load
        scripts from another host, which the dashboard never does."""
        doc = document()
        schemas = doc.get("components", {}).get("schemas", {})
        endpoints = []
        for path, methods in doc["paths"].items():
            for method, op in methods.items():
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                fields = schemas.get(body.get("$ref", "").rsplit("/", 1)[-1], {}) if body else {}
                params = [p["name"] for p in op.get("parameters", []) if p.get("in") in ("query", "header")]
                endpoints.append(
                    {
                        "method": method.upper(),
                        "path": URL_PREFIX + path,
                        "summary": op.get("description") or op.get("summary", ""),
                        "fields": [
                            (
                                name,
                                spec.get("type") or "object",
                                name in fields.get("required", ()),
                                spec.get("description", ""),
                            )
                            for name, spec in fields.get("properties", {}).items()
                        ],
                        "params": params,
                    }
                )
        return render("api.html.j2", request, user, endpoints=endpoints, title=doc["info"]["title"])


# Pages --------------------------------------------------------------------------------------------


def _pages(person_run: Callable[[Any], Run], reading: Callable[[], Any], render: Render) -> APIRouter:
    router = APIRouter(prefix=PAGE, include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    def page(
        request: Request, user: UserDep, q: str = "", done: str | None = None, error: str | None = None
    ) -> HTMLResponse:
        from invoiceflow.core.policy import policy

        with reading() as conn:
            lines = workbench.open_lines(conn, hold_days=policy().reconciliation.hold_reminders_days)
            found = workbench.search_invoices(conn, q) if q.strip() else None
            write_offs = workbench.pending_write_offs(conn)
            shown = {str(ln["id"]) for ln in lines}  # an open line's exception is decided with the line above
            exceptions = [
                e
                for e in workbench.open_exceptions(conn)
                if not (e["subject_type"] == "bank_transaction" and e["subject_id"] in shown)
            ]
            recent = workbench.recent_decisions(conn)
            rules = workbench.rules(conn)
        return render(
            "workbench.html.j2",
            request,
            user,
            lines=lines,
            q=q,
            found=found,
            write_offs=write_offs,
            exceptions=exceptions,
            recent=recent,
            rules=rules,
            categories=sorted(policy().reconciliation.non_receivable_accounts),
            me=actor_of(user),
            done=done,
            error=error,
            fresh_key=lambda: secrets.token_urlsafe(16),
        )

    def act(request: Request, user: Any, csrf: str, anchor: str, action: Callable[[], Outcome]) -> Response:
        """Check the person may act and the form is theirs, act, and go back with the outcome."""
        if not may_act(user):
            raise HTTPException(status_code=403, detail="not allowed to take decisions on the workbench")
        if not hmac.compare_digest(csrf, csrf_token(request)):
            raise HTTPException(status_code=403, detail="the form is stale or came from another site; reload it")
        try:
            outcome = action()
        except DataError as exc:
            return RedirectResponse(f"{URL_PREFIX}{PAGE}?error={quote(str(exc))}#{anchor}", status_code=303)
        again = " (a repeated request: nothing was done twice)" if outcome.repeated else ""
        message = outcome.message + again
        return RedirectResponse(f"{URL_PREFIX}{PAGE}?done={quote(message)}#{anchor}", status_code=303)

    @router.post("/lines/{txn_id}/apply")
    def apply(
        txn_id: int,
        request: Request,
        user: UserDep,
        csrf: F = "",
        key: F = "",
        seen: F = "",
        currency: F = "EUR",
        reason: F = "",
        rest: F = "leave",
        learn_text: F = "",
        invoice: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults per request
        amount: Annotated[list[str], Form()] = [],  # noqa: B006
    ) -> Response:
        def action() -> Outcome:
            amounts = [*amount, *[""] * len(invoice)]
            targets = [
                Target(number.strip(), parse_amount(amounts[n], currency))
                for n, number in enumerate(invoice)
                if number.strip()
            ]
            return decisions.apply(
                person_run(user),
                txn_id,
                targets,
                reason=reason,
                rest=rest,
                learn_text=learn_text.strip() or None,
                key=person_key(user, key),
                seen=seen,
            )

        return act(request, user, csrf, f"line-{txn_id}", action)

    @router.post("/lines/{txn_id}/not-receivable")
    def not_receivable(
        txn_id: int,
        request: Request,
        user: UserDep,
        csrf: F = "",
        key: F = "",
        seen: F = "",
        category: F = "",
        reason: F = "",
        learn: F = "",
    ) -> Response:
        return act(
            request,
            user,
            csrf,
            f"line-{txn_id}",
            lambda: decisions.not_receivable(
                person_run(user),
                txn_id,
                category,
                reason=reason,
                learn=bool(learn),
                key=person_key(user, key),
                seen=seen,
            ),
        )

    @router.post("/lines/{txn_id}/refund")
    def refund(
        txn_id: int,
        request: Request,
        user: UserDep,
        csrf: F = "",
        key: F = "",
        currency: F = "EUR",
        amount: F = "",
        reason: F = "",
    ) -> Response:
        return act(
            request,
            user,
            csrf,
            f"line-{txn_id}",
            lambda: decisions.refund(
                person_run(user),
                reason=reason,
                txn_id=txn_id,
                amount=parse_amount(amount, currency),
                key=person_key(user, key),
            ),
        )

    @router.post("/write-offs")
    def propose_write_off(
        request: Request, user: UserDep, csrf: F = "", key: F = "", invoice: F = "", amount: F = "", kind: F = "",
        reason: F = "",
    ) -> Response:  # fmt: skip
        def action() -> Outcome:
            with reading() as conn:
                currency = invoice_currency(conn, invoice)
            return decisions.write_off(
                person_run(user),
                invoice.strip(),
                parse_amount(amount, currency),
                reason=reason,
                kind=kind or None,
                key=person_key(user, key),
            )

        return act(request, user, csrf, "write-offs", action)

    @router.post("/write-offs/{write_off_id}/{verdict}")
    def decide_write_off(
        write_off_id: int, verdict: str, request: Request, user: UserDep, csrf: F = "", key: F = "", note: F = ""
    ) -> Response:
        if verdict not in ("approve", "reject"):
            raise HTTPException(status_code=404, detail=f"no action {verdict} on a write-off")
        decide = decisions.approve_write_off if verdict == "approve" else decisions.reject_write_off
        return act(
            request,
            user,
            csrf,
            "write-offs",
            lambda: decide(person_run(user), write_off_id, note=note, key=person_key(user, key)),
        )

    @router.post("/undo")
    def undo(
        request: Request, user: UserDep, csrf: F = "", key: F = "", kind: F = "", ident: F = "", reason: F = ""
    ) -> Response:
        def action() -> Outcome:
            if (
                kind not in ("payment", "write_off", "classification", "refund", "credit_application")
                or not ident.isdigit()
            ):
                raise DecisionError("undo a payment, a write-off, a classification, a refund or a credit by its number")
            which = {f"{kind}_id": int(ident)}
            return decisions.undo(person_run(user), reason=reason, key=person_key(user, key), **which)

        return act(request, user, csrf, "decisions", action)

    @router.post("/{what}/{ident}/resolve")
    def resolve(
        what: str, ident: int, request: Request, user: UserDep, csrf: F = "", key: F = "", note: F = ""
    ) -> Response:
        if what not in ("exceptions", "quarantine"):
            raise HTTPException(status_code=404, detail=f"nothing to resolve under {what}")
        which = {"exception_id" if what == "exceptions" else "quarantine_id": ident}
        return act(
            request,
            user,
            csrf,
            "exceptions",
            lambda: decisions.resolve(person_run(user), note=note, key=person_key(user, key), **which),
        )

    @router.post("/rules")
    def add_rule(
        request: Request,
        user: UserDep,
        csrf: F = "",
        key: F = "",
        client_id: F = "",
        category: F = "",
        payer_iban: F = "",
        payer_name: F = "",
        text: F = "",
        direction: F = "any",
        note: F = "",
    ) -> Response:
        return act(
            request,
            user,
            csrf,
            "rules",
            lambda: decisions.add_rule(
                person_run(user),
                note=note,
                client_id=client_id.strip() or None,
                category=category or None,
                payer_iban=payer_iban.strip() or None,
                payer_name=payer_name.strip() or None,
                text=text.strip() or None,
                direction=direction,
                key=person_key(user, key),
            ),
        )

    @router.post("/rules/{rule_id}/disable")
    def disable_rule(
        rule_id: int, request: Request, user: UserDep, csrf: F = "", key: F = "", reason: F = ""
    ) -> Response:
        return act(
            request,
            user,
            csrf,
            "rules",
            lambda: decisions.disable_rule(person_run(user), rule_id, reason=reason, key=person_key(user, key)),
        )

    return router


# JSON API -----------------------------------------------------------------------------------------


async def acting_user(request: Request, user: UserDep) -> Any:
    """A person who may take decisions, calling with a bearer token (never the browser's cookie alone)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise HTTPException(status_code=403, detail="API actions need a bearer token (Authorization: Bearer ...)")
    if not may_act(user):
        raise HTTPException(status_code=403, detail="not allowed to take decisions on the workbench")
    return user


ActorDep = Annotated[Any, Depends(acting_user)]
KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", description="a retried request acts once")]


def _api(person_run: Callable[[Any], Run], reading: Callable[[], Any]) -> APIRouter:
    router = APIRouter(tags=["workbench"])

    def decide(action: Callable[[], Outcome]) -> dict[str, Any]:
        try:
            return action().as_dict()
        except DataError as exc:
            raise HTTPException(status_code=status_of(exc), detail=str(exc)) from exc

    @router.get("/bank-lines")
    def bank_lines(user: UserDep, open: bool = True) -> list[dict[str, Any]]:
        """Bank lines oldest first with what is unapplied, the open exception and ranked suggestions."""
        with reading() as conn:
            return workbench.open_lines(conn, only_open=open)

    @router.get("/bank-lines/{txn_id}")
    def bank_line(txn_id: int, user: UserDep) -> dict[str, Any]:
        """One bank line, decided or not (its ``version`` is what ``seen`` sends back)."""
        with reading() as conn:
            found = workbench.open_lines(conn, txn_id=txn_id)
        if not found:
            raise HTTPException(status_code=404, detail=f"bank line {txn_id} does not exist")
        return found[0]

    @router.get("/invoices")
    def invoices(user: UserDep, q: str = "") -> list[dict[str, Any]]:
        """Open invoices by number, client id or name, or open amount."""
        with reading() as conn:
            return workbench.search_invoices(conn, q)

    @router.get("/write-offs")
    def write_offs(user: UserDep) -> list[dict[str, Any]]:
        """Write-offs waiting for a second person."""
        with reading() as conn:
            return workbench.pending_write_offs(conn)

    @router.get("/exceptions")
    def exceptions(user: UserDep) -> list[dict[str, Any]]:
        """Open exceptions and quarantined source rows (``kind``: exception | quarantine)."""
        with reading() as conn:
            return workbench.open_exceptions(conn)

    @router.get("/decisions")
    def recent(user: UserDep) -> list[dict[str, Any]]:
        """What can be undone, newest first."""
        with reading() as conn:
            return workbench.recent_decisions(conn)

    @router.get("/rules")
    def rules(user: UserDep) -> list[dict[str, Any]]:
        """Every matching rule, with who made it, when, and how often it fired."""
        with reading() as conn:
            return workbench.rules(conn)

    @router.post("/bank-lines/{txn_id}/apply")
    def apply(txn_id: int, body: ApplyBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Apply a credit to one or more open invoices (a split when several)."""
        targets = [Target(i.number, i.amount) for i in body.invoices]
        return decide(
            lambda: decisions.apply(
                person_run(user), txn_id, targets, reason=body.reason, rest=body.rest, learn_text=body.learn_text,
                key=person_key(user, key), seen=body.seen,
            )
        )  # fmt: skip

    @router.post("/bank-lines/{txn_id}/not-receivable")
    def not_receivable(txn_id: int, body: NotReceivableBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Book a line that is no client's payment to its category's account."""
        return decide(
            lambda: decisions.not_receivable(
                person_run(user), txn_id, body.category, reason=body.reason, learn=body.learn,
                key=person_key(user, key), seen=body.seen,
            )
        )  # fmt: skip

    @router.post("/bank-lines/{txn_id}/refund")
    def refund(txn_id: int, body: RefundBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Promise the unapplied rest of a line back to the payer."""
        return decide(
            lambda: decisions.refund(
                person_run(user), reason=body.reason, txn_id=txn_id, amount=body.amount, key=person_key(user, key)
            )
        )

    @router.post("/credits/apply")
    def apply_credit(body: CreditApplyBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Settle an open invoice with the client's credit (overpayments left on its account)."""
        return decide(
            lambda: decisions.apply_credit(
                person_run(user), body.client_id, body.invoice_number, body.amount, reason=body.reason,
                key=person_key(user, key),
            )
        )  # fmt: skip

    @router.post("/refunds")
    def refund_credit(body: CreditRefundBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Promise a client's credit (overpayments left on its account) back to the client."""
        return decide(
            lambda: decisions.refund(
                person_run(user), reason=body.reason, client_id=body.client_id, currency=body.currency,
                amount=body.amount, key=person_key(user, key),
            )
        )  # fmt: skip

    @router.post("/write-offs")
    def write_off(body: WriteOffBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Write off what is open on an invoice; above the policy's limit only proposed."""
        return decide(
            lambda: decisions.write_off(
                person_run(user), body.invoice_number, body.amount, reason=body.reason, kind=body.kind,
                key=person_key(user, key),
            )
        )  # fmt: skip

    @router.post("/write-offs/{write_off_id}/approve")
    def approve(write_off_id: int, body: NoteBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """A second person approves a proposed write-off (the proposer gets 403)."""
        return decide(
            lambda: decisions.approve_write_off(
                person_run(user), write_off_id, note=body.note, key=person_key(user, key)
            )
        )

    @router.post("/write-offs/{write_off_id}/reject")
    def reject(write_off_id: int, body: NoteBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Turn a proposed write-off down, or withdraw one's own."""
        return decide(
            lambda: decisions.reject_write_off(
                person_run(user), write_off_id, note=body.note, key=person_key(user, key)
            )
        )

    @router.post("/undo")
    def undo(body: UndoBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Undo one payment, write-off, classification, refund or credit application (name exactly one);
        a payment booked in the accounting system (``booked_id``) is refused, naming where to reverse it."""
        ids = body.model_dump(exclude={"reason"})
        return decide(lambda: decisions.undo(person_run(user), reason=body.reason, key=person_key(user, key), **ids))

    @router.post("/exceptions/{exception_id}/resolve")
    def resolve_exception(exception_id: int, body: NoteBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Close an exception with a note (a bank line's only once the line is decided)."""
        return decide(
            lambda: decisions.resolve(
                person_run(user), note=body.note, exception_id=exception_id, key=person_key(user, key)
            )
        )

    @router.post("/quarantine/{quarantine_id}/resolve")
    def resolve_quarantine(quarantine_id: int, body: NoteBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Close a quarantined source row with a note; the row stays."""
        return decide(
            lambda: decisions.resolve(
                person_run(user), note=body.note, quarantine_id=quarantine_id, key=person_key(user, key)
            )
        )

    @router.post("/rules")
    def add_rule(body: RuleBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """A rule by hand: payer IBAN/name/text -> client, or text -> not a receivable."""
        return decide(lambda: decisions.add_rule(person_run(user), key=person_key(user, key), **body.model_dump()))

    @router.post("/rules/{rule_id}/disable")
    def disable_rule(rule_id: int, body: ReasonBody, user: ActorDep, key: KeyHeader = None) -> dict[str, Any]:
        """Stop a rule from the next night on; it stays listed."""
        return decide(
            lambda: decisions.disable_rule(person_run(user), rule_id, reason=body.reason, key=person_key(user, key))
        )

    return router
