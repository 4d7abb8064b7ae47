"""Where things live. One setting users script against: ``INVOICEFLOW_DATA_DIR``.

Under the data directory:

- ``inbox/<feed>/``  source drop folders (fx_rates, clients, contracts, rate_cards, timesheets,
  milestones, expenses)
  and ``inbox/bank/`` for bank statements
- ``outbox/``        rendered PDFs (``outbox/pdf/``), the XML of the XML e-invoice formats
  (``outbox/xml/``), every e-mail as sent (``outbox/mail/``) and the files for the Peppol access
  point (``outbox/peppol/``, unless the policy's ``delivery.peppol_outbox`` names another folder)
- ``portal/``        the client portal folder, one sub-folder per client
- ``reports/``       reconciliation exception reports
- ``billing.db``     the embedded SQLite billing database, when no ``billing_db`` connection is set
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PACKAGE_ROOT = PROJECT_ROOT / "include"
SQL_DIR = PACKAGE_ROOT / "sql"
TEMPLATES_DIR = PACKAGE_ROOT / "templates"
CONFIG_DIR = PACKAGE_ROOT / "config"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

FEEDS = ("fx_rates", "clients", "contracts", "rate_cards", "timesheets", "milestones", "expenses")
"""Source feeds in load order: a feed only references feeds before it."""


def data_dir() -> Path:
    return Path(os.environ.get("INVOICEFLOW_DATA_DIR", PROJECT_ROOT / "data")).resolve()


def inbox(feed: str) -> Path:
    return data_dir() / "inbox" / feed


def outbox() -> Path:
    return data_dir() / "outbox"


def peppol_outbox() -> Path:
    return outbox() / "peppol"


def portal() -> Path:
    return data_dir() / "portal"


def reports() -> Path:
    return data_dir() / "reports"


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'billing.db'}"


def policy_path() -> Path:
    return Path(os.environ.get("INVOICEFLOW_POLICY", CONFIG_DIR / "policy.yaml"))
