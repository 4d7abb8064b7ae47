"""The billing dashboard as an Airflow plugin: a FastAPI app served by the Airflow API server under
``/invoiceflow`` and a "Billing" entry in the Airflow UI's navigation that shows it.

Thin on purpose: the pages live in ``invoiceflow_dashboard_web`` (web layer, login check, the facts
Airflow holds) and the figures in ``invoiceflow.dashboard`` (plain Python over the billing database).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from invoiceflow_dashboard_web import URL_PREFIX, create_app


class InvoiceflowDashboardPlugin(AirflowPlugin):
    name = "invoiceflow_dashboard"
    # Class-level lists shared by every instance: ClassVar says so (ruff's RUF012 asks for it), but
    # AirflowPlugin annotates them without ClassVar, and mypy rejects the mismatch in a subclass.
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [  # type: ignore[misc]
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Billing dashboard"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [  # type: ignore[misc]
        {
            "name": "Billing",
            "href": f"{URL_PREFIX}/",
            "url_route": "billing",  # shown inside the Airflow UI at /plugin/billing
            "destination": "nav",
            "nav_top_level": True,  # a button of its own in the navigation bar, not under Plugins
        }
    ]
