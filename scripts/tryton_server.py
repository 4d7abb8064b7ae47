"""A real Tryton 8.2 for the accounting connector's tests and benchmark (issue 24).

Tryton runs in its own virtualenv (``.tryton/venv``): invoiceflow never imports it, it only talks
JSON-RPC to it. Building a company with a chart, fiscal years and taxes takes Tryton 15-20 s, so
that is done once into a template SQLite file, cached under ``.tryton/`` and keyed by a hash of this
script (change the script and the template is rebuilt). Each server starts on a fresh copy of the
template, on a free loopback port, in about a second and a half.

    python scripts/tryton_server.py build            # the venv and the template, once
    python scripts/tryton_server.py serve [--dir D]  # build if needed, then run a server until ^C

The tests use ``build()`` and ``Server`` from tests/support/tryton.py. The part below ``setup``
runs inside Tryton's venv (``python scripts/tryton_server.py setup-db ...``) to fill the template.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INVOICEFLOW_TRYTON_CACHE", ROOT / ".tryton"))
DATABASE = "invoiceflow"
LOGIN = "admin"
PASSWORD = "admin-tryton-test"  # noqa: S105 - a throw-away server on loopback, for tests only
# What Tryton 8.2 resolved to when this was written (TRYTON-NOTES.md), pinned so every build is the same.
PACKAGES = [
    "trytond==8.2.1",
    "trytond-account==8.2.1",
    "trytond-account-invoice==8.2.0",
    "trytond-account-statement==8.2.0",
    "trytond-analytic-account==8.2.0",
    "trytond-analytic-invoice==8.2.0",
    "trytond-account-product==8.2.0",
    "trytond-bank==8.2.0",
    "trytond-company==8.2.0",
    "trytond-country==8.2.0",
    "trytond-currency==8.2.0",
    "trytond-party==8.2.0",
    "trytond-product==8.2.0",
    "proteus==8.2.0",
    "python-sql==1.8.1",
    "relatorio==1.0.0",
    "genshi==0.7.12",
    "werkzeug==3.1.9",
    "lxml==6.2.0",
    "python-dateutil==2.9.0.post0",
    "python-stdnum==2.2",
    "polib==1.2.0",
    "pwdlib==0.4.2",
    "argon2-cffi==25.1.0",
    "defusedxml==0.7.1",
    "simpleeval==1.0.8",
]
MODULES = ["account_invoice", "account_statement", "analytic_invoice"]
# The template's fiscal years (calendar years, monthly periods): the tests' and the demo's dates.
YEARS = range(2024, 2029)
COUNTRIES = {
    "DE": "Germany",
    "AT": "Austria",
    "CH": "Switzerland",
    "FR": "France",
    "NL": "Netherlands",
    "BE": "Belgium",
    "IT": "Italy",
    "ES": "Spain",
    "GB": "United Kingdom",
    "IE": "Ireland",
    "US": "United States",
    "DK": "Denmark",
    "SE": "Sweden",
    "PL": "Poland",
}


class BuildError(RuntimeError):
    """The Tryton venv or template could not be built; ``offline`` when packages could not be fetched."""

    def __init__(self, message: str, *, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


def script_hash() -> str:
    """The template's key: what goes into it (packages, modules, years, countries, ``setup_db``), so
    that editing how a server starts does not rebuild the template."""
    text = Path(__file__).read_text()
    start = text.index("\nPACKAGES = [")
    setup = text.index("\ndef setup_db(")
    body = text[start : text.index("\nclass BuildError")] + text[setup : text.index("\ndef main(")]
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def venv_python() -> Path:
    return CACHE / "venv" / "bin" / "python"


def template_path() -> Path:
    return CACHE / f"template-{script_hash()}.sqlite"


def build(log=print) -> Path:
    """The template database, building the venv and the template first when they are missing.

    Under a file lock: pytest-xdist's workers all ask at once, one builds, the others wait and reuse."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(log)


def _build(log) -> Path:
    _ensure_venv(log)
    template = template_path()
    if template.exists():
        return template
    for old in CACHE.glob("template-*.sqlite"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="tryton-template-", dir=CACHE))
    try:
        started = time.monotonic()
        (work / f"{DATABASE}.sqlite").touch()
        conf = _write_conf(work, port=0)
        pw = work / "admin.pass"
        pw.write_text(PASSWORD)
        env = {**os.environ, "TRYTONPASSFILE": str(pw)}
        admin = CACHE / "venv" / "bin" / "trytond-admin"
        cmd = [str(admin), "-c", str(conf), "-d", DATABASE, "--all", "--email", "admin@example.com"]
        _run([*cmd, "-u", *MODULES, "--activate-dependencies"], env, "trytond-admin")
        _run([str(venv_python()), __file__, "setup-db", str(conf)], env, "setup-db")
        (work / f"{DATABASE}.sqlite").replace(template)
        log(f"Tryton template built in {time.monotonic() - started:.0f} s: {template}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template


def _ensure_venv(log) -> None:
    marker = CACHE / "venv" / f".installed-{hashlib.sha256(' '.join(PACKAGES).encode()).hexdigest()[:12]}"
    if marker.exists():
        return
    shutil.rmtree(CACHE / "venv", ignore_errors=True)
    log("building Tryton's venv in .tryton/venv")
    python = shutil.which("python3.11") or sys.executable
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if Path(uv).exists():
        _run([uv, "venv", "-q", "--python", python, str(CACHE / "venv")], None, "uv venv")
        install = [uv, "pip", "install", "-q", "--python", str(venv_python()), *PACKAGES]
    else:
        _run([python, "-m", "venv", str(CACHE / "venv")], None, "venv")
        install = [str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES]
    done = subprocess.run(install, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if done.returncode != 0:
        text = done.stdout + done.stderr
        offline = any(
            word in text.lower()
            for word in ("failed to fetch", "connection", "network", "dns", "resolve host", "timed out")
        )
        raise BuildError(f"installing Tryton failed:\n{text[-3000:]}", offline=offline)
    marker.touch()


def _run(cmd: list[str], env: dict[str, str] | None, what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - fixed argv
    if done.returncode != 0:
        raise BuildError(f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")


def _write_conf(folder: Path, port: int) -> Path:
    conf = folder / "trytond.conf"
    conf.write_text(
        f"[database]\nuri = sqlite://\npath = {folder}\n[web]\nlisten = 127.0.0.1:{port}\n[session]\ntimeout = 3600\n"
    )
    return conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A Tryton server on a fresh copy of the template; ``stop()`` ends it and removes its folder."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    database: str = DATABASE
    login: str = LOGIN
    password: str = PASSWORD

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint."""
        return f"http://{self.host}:{self.port}/{self.database}/rpc/"

    @classmethod
    def start(cls, template: Path, folder: Path | None = None, port: int | None = None) -> Server:
        folder = folder or Path(tempfile.mkdtemp(prefix="tryton-server-"))
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed into the copy (notes)
            (folder / f"{DATABASE}.sqlite{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, folder / f"{DATABASE}.sqlite")
        port = port or free_port()
        _write_conf(folder, port)
        server = cls(folder, port)
        try:
            server._launch()
        except BaseException:
            server.remove()
            raise
        return server

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        body = json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode()
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BuildError(f"trytond exited: {(self.folder / 'trytond.log').read_text()[-3000:]}")
            try:
                req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # noqa: S310
                with urllib.request.urlopen(req, timeout=2):  # noqa: S310 - our own loopback server
                    return
            except urllib.error.HTTPError:
                return  # it answers (the database route wants a session: 401)
            except OSError:
                time.sleep(0.1)
        raise BuildError(f"trytond did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def reset(self, template: Path | None = None) -> None:
        """Start again on a fresh copy of the template: each test gets books of its own in about two
        seconds. (A second database on the same server would be quicker, but Tryton 8.2 does not
        always load a database that appears after it started: its first login finds an empty pool.)"""
        self.stop()
        for suffix in ("", "-wal", "-shm"):
            (self.folder / f"{self.database}.sqlite{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template or template_path(), self.folder / f"{self.database}.sqlite")
        self._launch()

    def restart(self) -> None:
        """Start the server again on the same database (the tests stop it mid-push)."""
        self.stop()
        self._launch()

    def _launch(self) -> None:
        log = (self.folder / "trytond.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(CACHE / "venv" / "bin" / "trytond"), "-c", str(self.folder / "trytond.conf"), "-d", self.database],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- inside Tryton's venv: fill the template --------------------------------------------------


def setup_db(conf: str) -> None:
    """The company, chart, fiscal years, taxes, journals and countries every connector test needs."""
    from proteus import Model, config
    from trytond.modules.account.tests.tools import create_chart, get_accounts
    from trytond.modules.company.tests.tools import create_company, get_company

    config.set_trytond(DATABASE, config_file=conf)
    Currency = Model.get("currency.currency")
    Rate = Model.get("currency.currency.rate")
    currencies = {}
    for code, name, symbol, rate in (
        ("EUR", "Euro", "€", "1"),
        ("GBP", "Pound Sterling", "£", "0.86"),
        ("USD", "US Dollar", "$", "1.08"),
        ("CHF", "Swiss Franc", "CHF", "0.95"),
    ):
        currency = Currency(name=name, code=code, symbol=symbol, rounding=Decimal("0.01"), digits=2)
        currency.save()
        currencies[code] = currency
        if rate:  # a fallback rate; the connector pushes the rate recorded on each invoice
            Rate(currency=currency, date=date(YEARS[0], 1, 1), rate=Decimal(rate)).save()
    Country = Model.get("country.country")
    for code, name in COUNTRIES.items():
        Country(name=name, code=code).save()
    Party = Model.get("party.party")
    company_party = Party(name="Northwind Digital GmbH")
    address = company_party.addresses[0]
    address.street = "Hafenstraße 1"
    address.postal_code = "20457"
    address.city = "Hamburg"
    address.country = Country.find([("code", "=", "DE")])[0]
    company_party.save()
    create_company(company_party, currencies["EUR"])
    company = get_company()
    create_chart(company)
    accounts = get_accounts(company)

    FiscalYear = Model.get("account.fiscalyear")
    Sequence = Model.get("ir.sequence.strict")
    SequenceType = Model.get("ir.sequence.type")
    (move_type,) = SequenceType.find([("name", "=", "Account Move")], limit=1)
    (invoice_type,) = SequenceType.find([("name", "=", "Invoice")], limit=1)
    for year in YEARS:
        fiscalyear = FiscalYear(name=str(year), start_date=date(year, 1, 1), end_date=date(year, 12, 31))
        fiscalyear.company = company
        fiscalyear.move_sequence = Sequence(name=f"Moves {year}", sequence_type=move_type, company=company)
        fiscalyear.move_sequence.save()
        invoices = Sequence(name=f"Invoices {year}", sequence_type=invoice_type, company=company, prefix=f"TRY-{year}-")
        invoices.save()
        credit_notes = Sequence(
            name=f"Credit notes {year}", sequence_type=invoice_type, company=company, prefix=f"TRY-CN-{year}-"
        )
        credit_notes.save()
        (seq,) = fiscalyear.invoice_sequences
        seq.out_invoice_sequence = invoices
        seq.in_invoice_sequence = invoices
        seq.out_credit_note_sequence = credit_notes
        seq.in_credit_note_sequence = credit_notes
        fiscalyear.save()
        fiscalyear.click("create_period")

    Tax = Model.get("account.tax")
    Account = Model.get("account.account")
    (vat_payable,) = Account.find([("code", "=", "2.2.3"), ("company", "=", company.id)])
    for name, rate in (("VAT 19%", "0.19"), ("VAT 7%", "0.07"), ("VAT 0%", "0")):
        tax = Tax(name=name, description=name, type="percentage", rate=Decimal(rate))
        tax.invoice_account = vat_payable
        tax.credit_note_account = vat_payable
        tax.save()

    Journal = Model.get("account.journal")
    Account = Model.get("account.account")
    bank_journal = Journal(name="Bank", code="BANK", type="cash")
    bank_journal.save()
    Journal(name="Write-off", code="WO", type="write-off").save()
    statement_journal = Journal(name="Bank statements", code="STMT", type="statement")
    statement_journal.save()
    StatementJournal = Model.get("account.statement.journal")
    StatementJournal(
        name="Bank",
        journal=statement_journal,
        account=accounts["cash"],
        validation="balance",
        currency=currencies["EUR"],
    ).save()
    # accounts the mapping names by code: revenue per service kind, fees, FX, write-offs, unapplied cash
    revenue, expense = accounts["revenue"], accounts["expense"]
    for code, name, kind in (
        ("4400", "Revenue consulting", revenue),
        ("4410", "Revenue projects", revenue),
        ("4420", "Revenue retainers", revenue),
        ("4430", "Revenue expenses recharged", revenue),
        ("4840", "FX gains", revenue),
        ("6855", "Bank fees", expense),
        ("6880", "FX losses", expense),
        ("6930", "Bad debts written off", expense),
    ):
        Account(name=name, code=code, type=kind.type, parent=kind.parent, company=company).save()
    # the company's settings a foreign-currency invoice needs (Tryton refuses to post one without the
    # currency exchange accounts: the mapping's fx_gain and fx_loss), and tax rounding per document,
    # as invoiceflow computes (Tryton's default, set here so the template says so)
    Configuration = Model.get("account.configuration")
    configuration = Configuration(1)
    (configuration.currency_exchange_credit_account,) = Account.find([("code", "=", "4840")])
    (configuration.currency_exchange_debit_account,) = Account.find([("code", "=", "6880")])
    configuration.tax_rounding = "document"
    configuration.save()
    # analytic roots the mapping names per dimension; the connector adds an account per project or client
    Analytic = Model.get("analytic_account.account")
    for name in ("Projects", "Clients"):
        Analytic(name=name, code=name.upper(), type="root", state="opened", company=company).save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="the venv and the template database, once")
    serve = sub.add_parser("serve", help="run a server on a fresh copy until interrupted")
    serve.add_argument("--dir", type=Path)
    serve.add_argument("--port", type=int)
    setup = sub.add_parser("setup-db")
    setup.add_argument("conf")
    args = parser.parse_args()
    if args.command == "setup-db":
        setup_db(args.conf)
        return 0
    template = build()
    if args.command == "serve":
        server = Server.start(template, args.dir, args.port)
        print(json.dumps({"url": server.url, "database": DATABASE, "login": LOGIN, "password": PASSWORD}))
        try:
            server.process.wait()
        except KeyboardInterrupt:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
