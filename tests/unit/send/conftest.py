"""The sample month issued with chosen e-invoice formats and delivery channels per client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.billing_fixtures import ISSUE_DAY, OCTOBER
from support.sample_data import write_feeds

from invoiceflow.airflow import runtime
from invoiceflow.billing import pricing
from invoiceflow.core import db
from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import sources
from invoiceflow.invoicing import approval, issuing

CLIENTS = (
    "client_id,name,email,country,currency,vat_id,client_type,payment_terms_days,delivery,language,"
    "address_line1,postcode,city,buyer_reference,einvoice_format,electronic_address,einvoice_embed_pdf\n"
    "C1,Kessler Logistik GmbH,accounts@kessler.example,DE,EUR,DE123456789,enterprise,30,{c1_delivery},de,"
    "Hafenstraße 12,20457,Hamburg,991-12345-73,{c1_format},0088:4001234000008,{embed_pdf}\n"
    "C2,Brightwater Analytics Ltd,ap@brightwater.example,GB,GBP,GB123456789,smb,14,both,en,"
    "1 Canal Street,M1 3HE,Manchester,,,,\n"
    "C3,Ville de Lyon,factures@lyon.example,FR,EUR,FR44732829320,public,45,{c3_delivery},fr,"
    "1 Place de la Comédie,69001,Lyon,,{c3_format},0009:21690123100011,{embed_pdf}\n"
)
"""The sample clients (support/sample_data.py) with the columns of the e-invoice formats: C1
Kessler (German, T&M K1 and the capped K4) with a Leitweg-ID as buyer reference and a GLN as
electronic address; C3 Ville de Lyon (French public body, retainer K3) with its SIRET as Peppol
participant id."""


@pytest.fixture
def issue_in_formats(engine, data_dir: Path) -> Callable[..., dict[str, dict]]:
    """Price October, approve everything, issue on 1 November with the clients' formats and
    channels as given; the invoices by contract id (K1, K4: C1; K2: C2; K3: C3)."""

    def issue(
        *,
        c1_format: str = "facturx",
        c1_delivery: str = "email",
        c3_format: str = "facturx",
        c3_delivery: str = "portal",
        embed_pdf: str = "true",
    ) -> dict[str, dict]:
        policy = load_policy()
        # the feed's suite learns delivery 'peppol' on the einv-data branch; the database takes it already
        feed_delivery = {"c1_delivery": c1_delivery, "c3_delivery": c3_delivery}
        clients = CLIENTS.format(
            c1_format=c1_format,
            c3_format=c3_format,
            embed_pdf=embed_pdf,
            **{key: "email" if value == "peppol" else value for key, value in feed_delivery.items()},
        )
        write_feeds(data_dir / "inbox", clients=clients)
        sources.load_inbox(runtime.run_for(engine, actor="test", policy=policy))
        with engine.begin() as conn:
            for client, delivery in (("C1", c1_delivery), ("C3", c3_delivery)):
                db.execute(conn, "UPDATE clients SET delivery = :d WHERE client_id = :c", {"d": delivery, "c": client})
        batch = pricing.price_period(runtime.run_for(engine, actor="test", run_id="run-1", policy=policy), OCTOBER)
        routed = approval.route(runtime.run_for(engine, actor="test", policy=policy), batch["batch_id"])
        for invoice_id in routed["review"]:
            issuing.decide(runtime.run_for(engine, actor="user:finance"), invoice_id, True, None)
        issuing.issue(
            runtime.run_for(engine, actor="test", today=ISSUE_DAY, policy=policy), routed["auto"] + routed["review"]
        )
        with engine.connect() as conn:
            invoices = {r["contract_id"]: r for r in db.rows(conn, "SELECT * FROM invoices")}
        assert {k: inv["einvoice_format"] for k, inv in invoices.items()} == {
            "K1": c1_format,
            "K4": c1_format,
            "K2": "facturx",
            "K3": c3_format,
        }, "every invoice issued, in its client's format"
        return invoices

    return issue
