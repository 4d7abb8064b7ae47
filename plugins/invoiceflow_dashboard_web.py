"""The billing dashboard's web layer: pages, the login check, and the facts only Airflow holds.

Served by the Airflow API server (see ``invoiceflow_dashboard.py``). The API server mounts a plugin's
app but does not protect it, so every route here asks Airflow's auth manager who the caller is
(the UI's session cookie or a bearer token, exactly as Airflow's own API does) and whether they may
read the dashboard (``GET``) or act on it (``PUT``, for disputes) as the custom view ``Billing``.
The simple auth manager grants custom views to any role, so for it a ``viewer`` may read but not act.

Pages are rendered server-side with Jinja2 (autoescaped) and inline SVG charts: no script, no font
and no style sheet comes from another host. Forms carry a token derived from the caller's own
session token, so another site cannot make a logged-in browser dispute an invoice.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine

from invoiceflow.core import db, settings
from invoiceflow.core.money import format_plain
from invoiceflow.core.run import Run
from invoiceflow.core.statuses import InvoiceStatus
from invoiceflow.reporting import dashboard
from invoiceflow.send import disputes

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod

log = logging.getLogger(__name__)

URL_PREFIX = "/invoiceflow"
RESOURCE = "Billing"
REPORT_NAME = re.compile(r"^exceptions-\d{4}-\d{2}-\d{2}\.(html|csv)$")
REVIEW_SUBJECT = re.compile(r"^(?:Escalated: )?Approve invoice draft (\d+):")
DAG_IDS = ("billing_cycle", "billing_events", "bank_reconciliation", "payment_reminders")


# Who is asking -----------------------------------------------------------------------------------


async def current_user(request: Request) -> Any:
    """The Airflow user behind the request, checked by Airflow's own code; 401/403 otherwise."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials.strip())
        if scheme.lower() == "bearer" and credentials.strip()
        else None
    )
    user = await get_user(request, None, bearer)
    if not _authorized(user, "GET"):
        raise HTTPException(status_code=403, detail="not allowed to see the billing dashboard")
    return user


def _authorized(user: Any, method: ResourceMethod) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = get_auth_manager()
    if not manager.is_authorized_custom_view(method=method, resource_name=RESOURCE, user=user):
        return False
    if method != "GET" and isinstance(manager, SimpleAuthManager):
        # it answers custom views by role "viewer" whatever the method: acting needs more than viewing.
        # isinstance, not the class name: a deployment's subclass inherits the same blind spot.
        return (getattr(user, "role", None) or "").lower() not in ("", "viewer")
    return True


def may_act(user: Any) -> bool:
    return _authorized(user, "PUT")


def _session_token(request: Request) -> str:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def csrf_token(request: Request) -> str:
    """A form token only the caller's own session can produce (double submit, bound to the session)."""
    return hmac.new(_session_token(request).encode(), b"invoiceflow-dashboard-form", hashlib.sha256).hexdigest()


def actor_of(user: Any) -> str:
    return f"user:{user.get_name()}"


UserDep = Annotated[Any, Depends(current_user)]


# What Airflow holds ------------------------------------------------------------------------------


@dataclass
class AirflowFacts:
    runs: list[dict[str, Any]]
    deadlines: dict[int, datetime]
    reconciliation: dict[str, Any] | None
    error: str | None = None


def airflow_facts(user: Any) -> AirflowFacts:
    """The last runs of each invoiceflow DAG the user may see, and the deadlines of open reviews.

    Read from Airflow's metadata database: the API server may, tasks may not.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    runs: list[dict[str, Any]] = []
    deadlines: dict[int, datetime] = {}
    reconciliation = None
    with create_session() as session:
        for dag_id in DAG_IDS:
            if dag_id not in allowed:
                continue
            recent = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(5)
            ).all()
            runs.append(
                {
                    "dag_id": dag_id,
                    "last": _run(recent[0]) if recent else None,
                    "recent": [r.state for r in recent],
                }
            )
            if dag_id == "bank_reconciliation":
                done = [r for r in recent if r.end_date is not None]
                reconciliation = _run(done[0]) if done else None
        if "billing_cycle" in allowed or "billing_events" in allowed:
            waiting = session.execute(
                select(HITLDetail.subject, TaskInstance.trigger_timeout)
                .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
                .where(TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                .where(TaskInstance.dag_id.in_([d for d in ("billing_cycle", "billing_events") if d in allowed]))
            ).all()
            for subject, timeout in waiting:
                found = REVIEW_SUBJECT.match(subject or "")
                if found and timeout is not None:
                    deadlines[int(found.group(1))] = timeout
    return AirflowFacts(runs=runs, deadlines=deadlines, reconciliation=reconciliation)


def _run(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": run.state,
        "logical_date": run.logical_date,
        "start_date": run.start_date,
        "end_date": run.end_date,
        "link": f"/dags/{quote(run.dag_id)}/runs/{quote(run.run_id, safe='')}",
    }


def _facts_or_note(user: Any, provider: Callable[[Any], AirflowFacts]) -> AirflowFacts:
    try:
        return provider(user)
    except Exception as exc:  # the billing figures still show; the page says what is missing
        log.exception("dashboard: Airflow run data unavailable")
        return AirflowFacts(runs=[], deadlines={}, reconciliation=None, error=f"{type(exc).__name__}: {exc}")


# Presentation helpers ----------------------------------------------------------------------------


def money(minor: int | None, currency: str) -> str:
    """1234567 EUR -> "12,345.67": grouped for reading, exact (Decimal), never float."""
    if minor is None:
        return ""
    plain = format_plain(int(minor), currency)
    whole, _, cents = plain.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{grouped}.{cents}" if cents else f"{sign}{grouped}"


def bar_chart(values: dict[str, int], width: int = 520, height: int = 200) -> dict[str, Any]:
    """Geometry of a bar chart for inline SVG: one bar per key, scaled to the largest value."""
    top = max([*values.values(), 1])
    gap, left, bottom = 12, 8, 24
    bar = (width - left - gap * (len(values) + 1)) / max(len(values), 1)
    bars = []
    for n, (label, value) in enumerate(values.items()):
        h = (height - bottom - 16) * max(value, 0) / top
        x = left + gap + n * (bar + gap)
        bars.append({"label": label, "value": value, "x": round(x, 1), "y": round(height - bottom - h, 1),
                     "w": round(bar, 1), "h": round(h, 1)})  # fmt: skip
    return {"width": width, "height": height, "bars": bars, "baseline": height - bottom}


def line_chart(points: list[tuple[str, Any]], width: int = 520, height: int = 200) -> dict[str, Any]:
    """Geometry of a line chart for inline SVG; points without a value break the line."""
    values = [float(v) for _, v in points if v is not None]  # screen geometry only, never money
    top = max([*values, 1.0])
    left, bottom, step = 36, 24, (width - 48) / max(len(points) - 1, 1)
    dots, path, pen_down = [], [], False
    for n, (label, value) in enumerate(points):
        x = left + n * step
        if value is None:
            dots.append({"label": label, "x": round(x, 1), "y": None, "value": None})
            pen_down = False
            continue
        y = height - bottom - (height - bottom - 16) * float(value) / top
        path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        pen_down = True
        dots.append({"label": label, "x": round(x, 1), "y": round(y, 1), "value": value})
    return {"width": width, "height": height, "dots": dots, "path": " ".join(path), "baseline": height - bottom,
            "top": top}  # fmt: skip


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.TEMPLATES_DIR / "dashboard"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = money
    env.globals["prefix"] = URL_PREFIX
    return env


# The app -----------------------------------------------------------------------------------------


def _default_engine() -> Engine:
    from invoiceflow.airflow import runtime

    return runtime.billing_engine()


def _default_policy() -> Any:
    from invoiceflow.core.policy import policy

    return policy()


def create_app(
    engine: Callable[[], Engine] = _default_engine,
    facts: Callable[[Any], AirflowFacts] = airflow_facts,
    today: Callable[[], date] = lambda: datetime.now(UTC).date(),
) -> FastAPI:
    """The dashboard app; tests pass their own billing database and Airflow facts."""
    app = FastAPI(title="invoiceflow billing dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    templates = _templates()

    @app.exception_handler(HTTPException)
    async def _refused(request: Request, exc: HTTPException) -> Response:
        if "/api/" in request.url.path:  # a program asked: an answer it can read, never a login page
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 401 and request.method == "GET":
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303)
        page = templates.get_template("error.html.j2").render(status=exc.status_code, detail=exc.detail)
        return HTMLResponse(page, status_code=exc.status_code)

    def render(name: str, request: Request, user: Any, **context: Any) -> HTMLResponse:
        page = templates.get_template(name).render(
            user=user.get_name(), may_act=may_act(user), csrf=csrf_token(request), **context
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: UserDep) -> HTMLResponse:
        known = _facts_or_note(user, facts)
        day = today()
        with engine().connect() as conn:
            view = dashboard.overview(conn, _default_policy(), day, known.deadlines, known.reconciliation)
        return render(
            "overview.html.j2",
            request,
            user,
            view=view,
            airflow=known,
            aging_chart=bar_chart(view.aging.base),
            dso_chart=line_chart([(f"{m['month']:%b %y}", m["dso"]) for m in view.dso]),
            status_titles=STATUS_TITLES,
        )

    @app.get("/invoices/{invoice_id}", response_class=HTMLResponse)
    def invoice(invoice_id: int, request: Request, user: UserDep, error: str | None = None) -> HTMLResponse:
        with engine().connect() as conn:
            detail = dashboard.invoice_detail(conn, invoice_id, today())
        if detail is None:
            raise HTTPException(status_code=404, detail=f"invoice {invoice_id} does not exist")
        return render(
            "invoice.html.j2",
            request,
            user,
            d=detail,
            error=error,
            status_titles=STATUS_TITLES,
            source_names=SOURCE_NAMES,
        )

    @app.get("/invoices/{invoice_id}/pdf")
    def invoice_pdf(invoice_id: int, user: UserDep) -> FileResponse:
        with engine().connect() as conn:
            detail = dashboard.invoice_detail(conn, invoice_id, today())
        if detail is None or detail["pdf"] is None:
            raise HTTPException(status_code=404, detail=f"invoice {invoice_id} has no rendered PDF")
        name = f"{detail['invoice']['invoice_number'] or invoice_id}.pdf"
        return FileResponse(
            detail["pdf"], media_type="application/pdf", filename=name, content_disposition_type="inline"
        )

    @app.get("/invoices/{invoice_id}/preview")
    def invoice_preview(invoice_id: int, user: UserDep) -> Response:
        """A draft's PDF as its approvers see it, rendered on request (the review's link): only
        drafts, since an issued invoice has its one stored PDF (``/pdf``)."""
        from invoiceflow.invoicing import review

        with engine().connect() as conn:
            status = db.scalar(conn, "SELECT status FROM invoices WHERE invoice_id = :i", {"i": invoice_id})
        if status is None:
            raise HTTPException(status_code=404, detail=f"invoice {invoice_id} does not exist")
        if status not in (InvoiceStatus.DRAFT, InvoiceStatus.AWAITING_APPROVAL, InvoiceStatus.APPROVED):
            raise HTTPException(status_code=404, detail=f"invoice {invoice_id} is {status}: see its PDF, not a preview")
        pdf = review.preview_pdf(engine(), _default_policy(), invoice_id)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="draft-{invoice_id}.pdf"', "Cache-Control": "no-store"},
        )

    @app.get("/reports/{name}")
    def report(name: str, user: UserDep) -> FileResponse:
        path = settings.reports() / name
        if not REPORT_NAME.match(name) or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no report {name}")
        return FileResponse(path, media_type="text/html" if name.endswith(".html") else "text/csv")

    from invoiceflow_workbench import install

    install(app, engine=engine, today=today, render=render)  # the workbench's pages and its JSON API

    def person_run(user: Any) -> Run:
        """The run context of a person's action on the dashboard: the person is the actor."""
        from invoiceflow.airflow import runtime

        return runtime.run_for(engine(), actor=actor_of(user), run_id="dashboard", today=today())

    def _act(request: Request, user: Any, token: str, invoice_id: int, action: Callable[[], Any]) -> Response:
        if not may_act(user):
            raise HTTPException(status_code=403, detail="not allowed to change invoices from the dashboard")
        if not hmac.compare_digest(token, csrf_token(request)):
            raise HTTPException(status_code=403, detail="the form is stale or came from another site; reload it")
        try:
            action()
        except disputes.DisputeError as exc:
            return RedirectResponse(f"{URL_PREFIX}/invoices/{invoice_id}?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"{URL_PREFIX}/invoices/{invoice_id}", status_code=303)

    @app.post("/invoices/{invoice_id}/dispute")
    def dispute(
        invoice_id: int, request: Request, user: UserDep, reason: Annotated[str, Form()] = "", csrf: str = Form("")
    ) -> Response:
        return _act(
            request,
            user,
            csrf,
            invoice_id,
            lambda: disputes.dispute_invoice(person_run(user), invoice_id, reason),
        )

    @app.post("/invoices/{invoice_id}/resolve")
    def resolve(
        invoice_id: int, request: Request, user: UserDep, resolution: Annotated[str, Form()] = "", csrf: str = Form("")
    ) -> Response:
        return _act(
            request,
            user,
            csrf,
            invoice_id,
            lambda: disputes.resolve_invoice_dispute(person_run(user), invoice_id, resolution),
        )

    return app


STATUS_TITLES = {
    "draft": "Draft",
    "awaiting_approval": "Awaiting approval",
    "approved": "Approved, not issued",
    "issued": "Issued",
    "sent": "Sent",
    "partially_paid": "Partially paid",
    "overdue": "Overdue",
    "disputed": "Disputed",
    "paid": "Paid",
    "overpaid": "Overpaid",
    "credited": "Credited",
    "credit_note": "Credit notes",
}

SOURCE_NAMES = {
    "time_entry": ("time entry", "time entries"),
    "milestone": ("milestone", "milestones"),
    "retainer_period": ("retainer period", "retainer periods"),
    "expense": ("expense", "expenses"),
}
