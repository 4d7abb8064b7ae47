"""The deployment files agree with the code: docker-compose.yaml, the Dockerfile, .env.example.

No Docker engine runs on the development machines, so nothing here starts a container and these
tests do not show that the images build or the stack comes up. What they do show: the files are
read with PyYAML and compose's ``${VAR:-default}`` is resolved as compose resolves it on a fresh
checkout, and then the real consumers that run here take the result: Airflow parses the
connection variables and knows every ``AIRFLOW__SECTION__KEY``, the PostgreSQL init script runs
against the test server, the SMTP connection delivers to a real server on loopback, and the init
service's own script migrates both databases.

Each consistency check returns a list of problems; ``test_checks_catch_a_broken_compose_file``
breaks a copy of the compose file in one way per check and sees the check complain.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SQL = ROOT / "docker" / "postgres-init" / "10-billing-database.sh"

# What issue 9 asks the compose file to run, and the command each Airflow component runs with.
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
SUPPORT_SERVICES = ("postgres", "redis", "mailpit", "airflow-init")

Compose = dict[str, Any]


# Reading the files ------------------------------------------------------------------------------


def load_compose() -> Compose:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable substitution: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` (https://docs.docker.com/compose/how-tos/environment-variables/variable-interpolation/)."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is None:
            if op and op.endswith("?"):
                raise ValueError(f"{name} must be set: {arg}")
            return arg if op else ""
        return value

    return _VAR.sub(sub, value)


def airflow_services(compose: Compose) -> dict[str, dict]:
    """Services that run the invoiceflow image (they use the x-airflow-common anchor)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def environment(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def command_text(service: dict) -> str:
    cmd = service.get("command", "")
    return cmd if isinstance(cmd, str) else "\n".join(cmd)


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def code_connection_ids() -> set[str]:
    """Connection ids the code asks Airflow for, found in the DAGs, plugins and the package."""
    patterns = [
        re.compile(r"""\bconn_id\w*\s*(?::\s*str\s*)?=\s*["']([A-Za-z0-9_]+)["']"""),
        re.compile(r"""\b[A-Z_]*CONN_ID\s*(?::\s*str\s*)?=\s*["']([A-Za-z0-9_]+)["']"""),
        re.compile(r"""Connection\.(?:a?get|get_connection_from_secrets)\(\s*["']([A-Za-z0-9_]+)["']"""),
    ]
    ids: set[str] = set()
    for folder in ("dags", "plugins", "include"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            for pattern in patterns:
                ids.update(pattern.findall(source))
    return ids


def data_subdirs() -> set[str]:
    """The folders under INVOICEFLOW_DATA_DIR that settings.py hands out (relative paths)."""
    from invoiceflow.core import settings

    base = Path("/data-dir-probe")
    found = set()
    saved = os.environ.get("INVOICEFLOW_DATA_DIR")
    os.environ["INVOICEFLOW_DATA_DIR"] = str(base)
    try:
        for name, func in inspect.getmembers(settings, inspect.isfunction):
            if name.startswith("_") or name == "data_dir" or func.__module__ != settings.__name__:
                continue
            params = inspect.signature(func).parameters
            result = func("probe") if list(params) == ["feed"] else func() if not params else None
            if isinstance(result, Path) and result.is_relative_to(base):
                rel = result.relative_to(base)
                found.add(rel.parts[0])
    finally:
        if saved is None:
            os.environ.pop("INVOICEFLOW_DATA_DIR", None)
        else:
            os.environ["INVOICEFLOW_DATA_DIR"] = saved
    return found


# The checks: each returns what is wrong --------------------------------------------------------


def check_services(compose: Compose) -> list[str]:
    services = compose.get("services", {})
    problems = [f"service {name} is missing" for name in (*AIRFLOW_COMMANDS, *SUPPORT_SERVICES) if name not in services]
    for name, expected in AIRFLOW_COMMANDS.items():
        if name in services and command_text(services[name]).strip() != expected:
            problems.append(f"{name} runs {command_text(services[name])!r}, not {expected!r}")
    worker = services.get("airflow-worker", {})
    if "container_name" in worker or worker.get("ports"):
        problems.append("airflow-worker has a container_name or host ports: it cannot be scaled with --scale")
    return problems


def check_images(compose: Compose) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        image = interpolate(str(svc.get("image", "")))
        if "build" in svc:
            if not image or image.endswith(":latest") or ":" not in image:
                problems.append(f"{name}: the built image needs a versioned name, has {image!r}")
            continue
        repo, _, tag = image.rpartition(":")
        if not repo or "/" in tag or not re.search(r"\d", tag) or tag.startswith("latest"):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def check_executor(compose: Compose) -> list[str]:
    problems = []
    services = compose["services"]
    for name, svc in airflow_services(compose).items():
        env = environment(svc)
        executors = [e.strip() for e in str(env.get("AIRFLOW__CORE__EXECUTOR", "")).split(",")]
        if executors[0] != "CeleryExecutor":
            problems.append(f"{name}: executor is {env.get('AIRFLOW__CORE__EXECUTOR')!r}, not CeleryExecutor first")
        review = env.get("INVOICEFLOW_REVIEW_EXECUTOR")
        if review and review not in executors:
            problems.append(f"{name}: the review executor {review!r} is not in [core] executor {executors}")
        pool = env.get("INVOICEFLOW_SEND_POOL")
        init = " ".join(map(str, services.get("airflow-init", {}).get("command", [])))
        if pool and "airflow pools set" not in init:
            problems.append(f"{name}: the send pool {pool!r} is not made by airflow-init (airflow pools set)")
        broker = env.get("AIRFLOW__CELERY__BROKER_URL", "")
        m = re.match(r"redis://[^@]*@?([^:/]+)", broker)
        if not m or m.group(1) not in services or not services[m.group(1)]["image"].startswith("redis:"):
            problems.append(f"{name}: Celery broker {broker!r} is not the redis service")
        backend = env.get("AIRFLOW__CELERY__RESULT_BACKEND", "")
        m = re.match(r"db\+postgresql(?:\+\w+)?://[^@]*@([^:/]+)", backend)
        if not m or m.group(1) not in services or not services[m.group(1)]["image"].startswith("postgres:"):
            problems.append(f"{name}: Celery result backend {backend!r} is not the postgres service")
        meta = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
        m = re.match(r"postgresql\+(\w+)://[^@]*@([^:/]+)", meta)
        if not m or m.group(2) not in services:
            problems.append(f"{name}: metadata database {meta!r} is not the postgres service")
        elif {"psycopg2": "psycopg2-binary", "psycopg": "psycopg"}.get(m.group(1)) not in requirement_pins():
            problems.append(f"{name}: driver {m.group(1)} of the metadata database is not in requirements.txt")
    return problems


def check_shared_settings(compose: Compose) -> list[str]:
    """Every Airflow container must agree on secrets, databases and connections (a JWT secret that
    differs between api-server and worker fails every task)."""
    problems = []
    envs = {name: environment(svc) for name, svc in airflow_services(compose).items()}
    keys = set().union(*envs.values())
    for key in sorted(k for k in keys if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "INVOICEFLOW_"))):
        values = {name: env.get(key) for name, env in envs.items()}
        if len(set(values.values())) > 1:
            problems.append(f"{key} differs between Airflow services: {values}")
    return problems


def check_connections(compose: Compose, needed: set[str]) -> list[str]:
    problems = []
    for name, svc in airflow_services(compose).items():
        defined = {key[len("AIRFLOW_CONN_") :].lower() for key in environment(svc) if key.startswith("AIRFLOW_CONN_")}
        problems += [
            f"{name}: no AIRFLOW_CONN_{conn.upper()} for connection {conn!r}" for conn in sorted(needed - defined)
        ]
    return problems


def check_healthchecks(compose: Compose) -> list[str]:
    problems = []
    services = compose["services"]
    for name, svc in services.items():
        one_shot = name == "airflow-init"
        if not one_shot and not (svc.get("healthcheck") or {}).get("test") and not svc.get("profiles"):
            problems.append(f"{name} has no health check")
        for dep, cond in (svc.get("depends_on") or {}).items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif condition == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no health check")
            elif condition is None:
                problems.append(f"{name} starts after {dep} without waiting for it to be ready")
    return problems


def check_volumes(compose: Compose, subdirs: set[str]) -> list[str]:
    problems = []
    for name, svc in airflow_services(compose).items():
        data_dir = environment(svc).get("INVOICEFLOW_DATA_DIR")
        if not data_dir:
            problems.append(f"{name}: INVOICEFLOW_DATA_DIR is not set")
            continue
        targets = {interpolate(str(v)).split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str)}
        for sub in sorted(subdirs):
            if f"{data_dir}/{sub}" not in targets:
                problems.append(f"{name}: {data_dir}/{sub} is not on a volume (data would stay in the container)")
    return problems


def check_init(compose: Compose) -> list[str]:
    init = compose["services"].get("airflow-init", {})
    script = command_text(init)
    problems = [
        f"airflow-init does not run `{cmd}`"
        for cmd in ("airflow db migrate", "invoiceflow db upgrade")
        if cmd not in script
    ]
    for name, svc in airflow_services(compose).items():
        if name in ("airflow-init", "airflow-cli"):
            continue
        cond = (svc.get("depends_on") or {}).get("airflow-init", {})
        if not isinstance(cond, dict) or cond.get("condition") != "service_completed_successfully":
            problems.append(f"{name} may start before airflow-init has migrated the databases")
    return problems


# The tests --------------------------------------------------------------------------------------


def test_the_services_of_the_issue_exist_and_workers_scale():
    assert check_services(load_compose()) == []


def test_images_are_pinned():
    assert check_images(load_compose()) == []


def test_executor_is_celery_with_redis_broker_and_postgres_results():
    compose = load_compose()
    assert check_executor(compose) == []
    assert "apache-airflow-providers-celery" in requirement_pins(), "the Celery provider must be in the lock"


def test_every_airflow_container_shares_secrets_databases_and_connections():
    assert check_shared_settings(load_compose()) == []


def test_health_checks_exist_and_start_order_waits_for_them():
    assert check_healthchecks(load_compose()) == []


def test_environment_defines_every_connection_the_code_uses():
    needed = code_connection_ids()
    assert {"billing_db", "smtp_default"} <= needed, f"the scan of the code found only {needed}"
    assert check_connections(load_compose(), needed) == []


def test_volumes_map_every_data_folder_of_the_settings():
    subdirs = data_subdirs()
    assert {"inbox", "outbox", "portal", "reports"} <= subdirs, subdirs
    assert check_volumes(load_compose(), subdirs) == []


def test_init_service_runs_both_migrations_before_anything_starts():
    assert check_init(load_compose()) == []


def check_airflow_options(compose: Compose) -> list[str]:
    """A typo in AIRFLOW__SECTION__KEY is ignored silently by Airflow: check against its schema."""
    from airflow.configuration import conf

    schema = conf.configuration_description
    unknown = set()
    for name, svc in airflow_services(compose).items():
        for key in environment(svc):
            if key.startswith("AIRFLOW__"):
                _, section, option = key.split("__", 2)
                if option.lower() not in schema.get(section.lower(), {}).get("options", {}):
                    unknown.add(f"{name}: {key} is not an Airflow option")
    return sorted(unknown)


def test_every_airflow_setting_is_an_option_airflow_knows():
    assert check_airflow_options(load_compose()) == []


BREAKAGES: list[tuple[str, Callable[[Compose], None], Callable[[Compose], list[str]]]] = [
    ("no triggerer", lambda c: c["services"].pop("airflow-triggerer"), check_services),
    ("worker with a fixed name", lambda c: c["services"]["airflow-worker"].update(container_name="w"), check_services),
    ("unpinned redis", lambda c: c["services"]["redis"].update(image="redis:latest"), check_images),
    (
        "local executor",
        lambda c: c["services"]["airflow-worker"]["environment"].update(AIRFLOW__CORE__EXECUTOR="LocalExecutor"),
        check_executor,
    ),
    (
        "reviews on an executor not listed",
        lambda c: c["services"]["airflow-scheduler"]["environment"].update(AIRFLOW__CORE__EXECUTOR="CeleryExecutor"),
        check_executor,
    ),
    (
        "send pool nobody makes",
        lambda c: c["services"]["airflow-init"].update(command=["-c", "airflow db migrate && invoiceflow db upgrade"]),
        check_executor,
    ),
    (
        "broker elsewhere",
        lambda c: c["services"]["airflow-scheduler"]["environment"].update(
            AIRFLOW__CELERY__BROKER_URL="redis://x:6379/0"
        ),
        check_executor,
    ),
    (
        "one JWT secret differs",
        lambda c: c["services"]["airflow-worker"]["environment"].update(AIRFLOW__API_AUTH__JWT_SECRET="other"),
        check_shared_settings,
    ),
    (
        "a misspelt option",
        lambda c: c["services"]["airflow-worker"]["environment"].update(AIRFLOW__CELERY__WORKER_CONCURENCY="8"),
        check_airflow_options,
    ),
    ("no health check", lambda c: c["services"]["airflow-scheduler"].pop("healthcheck"), check_healthchecks),
    (
        "no billing_db",
        lambda c: [svc.get("environment", {}).pop("AIRFLOW_CONN_BILLING_DB", None) for svc in c["services"].values()],
        lambda c: check_connections(c, {"billing_db"}),
    ),
    (
        "reports not on a volume",
        lambda c: [
            svc.update(volumes=[v for v in svc.get("volumes", []) if "/reports" not in v])
            for svc in c["services"].values()
        ],
        lambda c: check_volumes(c, {"reports"}),
    ),
    (
        "init skips the billing migrations",
        lambda c: c["services"]["airflow-init"].update(command=["-c", "airflow db migrate"]),
        check_init,
    ),
]


@pytest.mark.parametrize(("breakage", "break_it", "check"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_checks_catch_a_broken_compose_file(breakage, break_it, check):
    """Each check fails on a compose file broken in the way it guards against."""
    broken = copy.deepcopy(load_compose())
    # Anchored mappings are shared objects after parsing: give each service its own copy first.
    for svc in broken["services"].values():
        for key in ("environment", "volumes", "depends_on"):
            if key in svc:
                svc[key] = copy.deepcopy(svc[key])
    assert check(copy.deepcopy(broken)) == [], f"{breakage}: the check fails on the real file already"
    break_it(broken)
    assert check(broken), f"{breakage}: the check did not notice"


# The Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_airflow_and_python_versions_of_the_lock():
    (base,) = [args for word, args in dockerfile_instructions() if word == "FROM"]
    m = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", base)
    assert m, f"FROM {base}: expected the official apache/airflow:X.Y.Z-pythonA.B image"
    airflow_version, python_version = m.groups()
    assert airflow_version == requirement_pins()["apache-airflow"]
    assert airflow_version == importlib.metadata.version("apache-airflow"), "the image and the tested Airflow differ"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"apache-airflow=={airflow_version}" in pyproject["project"]["dependencies"]
    from packaging.specifiers import SpecifierSet

    assert f"{python_version}.0" in SpecifierSet(pyproject["project"]["requires-python"])
    assert python_version == f"{sys.version_info.major}.{sys.version_info.minor}", (
        "the image and the tests' Python differ"
    )


def test_dockerfile_adds_weasyprint_libraries_the_lock_and_the_project():
    steps = dockerfile_instructions()
    runs = " ".join(args for word, args in steps if word == "RUN")
    for package in ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0", "poppler-utils", "fonts-dejavu-core"):
        assert re.search(rf"apt-get install [^&]*\b{re.escape(package)}\b", runs), f"{package} is not installed"
    assert re.search(r"pip install [^&]*-r \S*requirements\.txt", runs)
    assert re.search(r'"apache-airflow==\$\{AIRFLOW_VERSION\}"', runs), "pip may move Airflow itself"
    assert re.search(r"pip install [^&]*--no-deps -e /opt/invoiceflow\b", runs)
    assert [args for word, args in steps if word == "USER"][-1] == "airflow", "the image must not run as root"
    # Everything the package finds next to itself (settings.py) is copied, and the build context has it.
    copied = {src for word, args in steps if word == "COPY" for src in args.split()[:-1] if not src.startswith("--")}
    assert {"include", "expectations", "dags", "plugins", "pyproject.toml", "requirements.txt"} <= copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f".dockerignore leaves {src} out of the build context"
    # The compose file looks for the DAGs and plugins where the image puts them.
    env = dict(kv.split("=", 1) for word, args in steps if word == "ENV" for kv in args.split())
    compose_env = environment(load_compose()["services"]["airflow-scheduler"])
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "INVOICEFLOW_DATA_DIR"):
        assert env[key] == compose_env[key], key


# Real consumers of the settings ------------------------------------------------------------------


def _compose_env(service: str, **overrides: str) -> dict[str, str]:
    return environment(load_compose()["services"][service], overrides)


@pytest.fixture
def billing_database(pg_server: str) -> Iterator[dict[str, str]]:
    """The billing database made by the compose file's PostgreSQL init script, on the test server,
    with a unique name and role (and a password that needs quoting)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = make_url(pg_server)
    suffix = uuid.uuid4().hex[:10]
    names = {
        "BILLING_DB_USER": f"billing_{suffix}",
        "BILLING_DB_PASSWORD": "it's a s3cret",
        "BILLING_DB_NAME": f"billing_{suffix}",
    }
    postgres_env = _compose_env("postgres", **names)
    assert {k: postgres_env[k] for k in names} == names, "the postgres service does not pass the billing settings"
    env = {
        **os.environ,
        **postgres_env,
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": admin.database or "postgres",
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
    }
    for _ in range(2):  # the second run shows it is idempotent
        done = subprocess.run(["bash", str(INIT_SQL)], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield {**names, "BILLING_DB_HOST": admin.host or "127.0.0.1", "BILLING_DB_PORT": str(admin.port or 5432)}
    finally:
        from invoiceflow.core import db

        db.engine.cache_clear()
        eng = create_engine(pg_server, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{names["BILLING_DB_NAME"]}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{names["BILLING_DB_USER"]}"'))
        eng.dispose()


def test_billing_connection_reaches_the_database_the_init_script_made(billing_database, monkeypatch):
    """AIRFLOW_CONN_BILLING_DB as the workers get it, parsed by Airflow, then `invoiceflow db upgrade`
    as the init service runs it: the billing role owns its database and can migrate it."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from invoiceflow import cli
    from invoiceflow.airflow import runtime
    from invoiceflow.core import db

    env = _compose_env("airflow-worker", **billing_database)
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", env["AIRFLOW_CONN_BILLING_DB"])
    url = make_url(runtime.billing_url())
    assert url.drivername == "postgresql+psycopg"
    assert url.username == billing_database["BILLING_DB_USER"]
    assert url.password == billing_database["BILLING_DB_PASSWORD"]
    assert url.database == billing_database["BILLING_DB_NAME"]
    assert cli.main(["db", "upgrade"]) == 0
    with db.engine(url.render_as_string(hide_password=False)).connect() as conn:
        applied = {row[0] for row in conn.execute(text("SELECT version FROM schema_migrations"))}
        owner = conn.execute(text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"))
        assert owner.scalar() == billing_database["BILLING_DB_USER"]
    assert applied == {version for version, _ in db.migrations()}


def test_default_billing_connection_points_at_the_postgres_service(monkeypatch):
    from sqlalchemy.engine import make_url

    from invoiceflow.airflow import runtime

    compose = load_compose()
    postgres = environment(compose["services"]["postgres"])
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", _compose_env("airflow-worker")["AIRFLOW_CONN_BILLING_DB"])
    url = make_url(runtime.billing_url())
    assert url.host == "postgres" and url.port == 5432
    assert (url.username, url.password, url.database) == (
        postgres["BILLING_DB_USER"],
        postgres["BILLING_DB_PASSWORD"],
        postgres["BILLING_DB_NAME"],
    )
    assert "/docker-entrypoint-initdb.d" in " ".join(compose["services"]["postgres"]["volumes"])


def test_smtp_connection_goes_to_the_mail_catcher_and_delivers(monkeypatch):
    """smtp_default as compose writes it: the mail catcher by default; pointed at a real SMTP server
    on loopback through the same variables an operator sets, the hook delivers through it."""
    from email.message import EmailMessage

    from airflow.sdk import Connection
    from support.smtp_server import SmtpServer

    from invoiceflow.airflow.runtime import AirflowMail
    from invoiceflow.core import mail

    compose = load_compose()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", _compose_env("airflow-worker")["AIRFLOW_CONN_SMTP_DEFAULT"])
    conn = Connection.get("smtp_default")
    assert conn.host == "mailpit" and str(conn.port) in {str(p) for p in compose["services"]["mailpit"]["expose"]}
    assert conn.extra_dejson["disable_ssl"] is True and conn.extra_dejson["disable_tls"] is True

    with SmtpServer() as server:
        env = _compose_env("airflow-worker", SMTP_HOST="127.0.0.1", SMTP_PORT=str(server.port))
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", env["AIRFLOW_CONN_SMTP_DEFAULT"])
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "billing@invoiceflow.invalid", "ap@client.example", "compose"
        msg["Message-ID"] = "<compose-test@invoiceflow.invalid>"
        msg.set_content("hello")
        mail.send_smtp(msg, AirflowMail())
        (got,) = server.messages
    assert got.recipients == ["ap@client.example"] and got.message["Subject"] == "compose"


def test_env_example_names_only_variables_the_compose_file_uses():
    """A setting in .env.example that compose never reads would be a setting that does nothing."""
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    example = (ROOT / ".env.example").read_text().splitlines()
    names = {m.group(1) for line in example if (m := re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line))}
    passthrough = {n for n in names if n.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}  # env_file hands these on
    assert names - passthrough <= used, sorted(names - passthrough - used)
    assert {"FERNET_KEY", "JWT_SECRET", "API_SECRET_KEY", "BILLING_DB_PASSWORD", "SMTP_HOST"} <= names


@pytest.mark.slow
def test_init_service_script_migrates_both_databases(billing_database, pg_server, tmp_path):
    """The airflow-init command itself, run by bash outside a container: the data folders,
    `airflow db migrate` on a PostgreSQL metadata database and `invoiceflow db upgrade` on the
    billing database the init script made. Only the image's /entrypoint wrapper is left out."""
    from sqlalchemy import create_engine, text
    from sqlalchemy import inspect as sa_inspect
    from sqlalchemy.engine import make_url

    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    meta_db = f"airflow_meta_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{meta_db}"'))
    meta_url = make_url(pg_server).set(drivername="postgresql+psycopg2", database=meta_db)
    try:
        compose = load_compose()
        init = compose["services"]["airflow-init"]
        assert init["entrypoint"] == "/bin/bash" and init["command"][0] == "-c"
        script = interpolate(init["command"][1], {"AIRFLOW_UID": str(os.getuid())}).replace("/entrypoint ", "")
        env = {
            **os.environ,
            **_compose_env("airflow-init", **billing_database),
            # Outside the compose network: the metadata database on the test server, a private home.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url.render_as_string(hide_password=False),
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            "INVOICEFLOW_DATA_DIR": str(tmp_path / "data"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        env.pop("AIRFLOW__CORE__DAGS_FOLDER")  # the image's /opt/invoiceflow is not here
        env.pop("AIRFLOW__CORE__PLUGINS_FOLDER")
        assert shutil.which("airflow", path=env["PATH"]) and shutil.which("invoiceflow", path=env["PATH"])
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "schema is current" not in done.stdout, "the billing database was already migrated: test is void"
        assert "applied 0001" in done.stdout

        from invoiceflow.core import settings

        for feed in (*settings.FEEDS, "bank"):
            assert (tmp_path / "data" / "inbox" / feed).is_dir(), feed
        for sub in ("outbox", "portal", "reports"):
            assert (tmp_path / "data" / sub).is_dir(), sub
        assert "dag_run" in sa_inspect(create_engine(meta_url)).get_table_names()
        with create_engine(meta_url).connect() as conn:  # the pool of render and deliver, sized
            pools = dict(conn.execute(text("SELECT pool, slots FROM slot_pool")).all())
        assert pools.get(env["INVOICEFLOW_SEND_POOL"]) == 8, pools

        # Run again, as after an upgrade: both migrations are no-ops.
        again = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, check=False, timeout=600
        )
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "schema is current" in again.stdout
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{meta_db}" WITH (FORCE)'))
        admin.dispose()


# Backups ----------------------------------------------------------------------------------------

BACKUP = ROOT / "docker" / "billing-backup.sh"


def _backup(pg_server: str, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    from sqlalchemy.engine import make_url

    admin = make_url(pg_server)
    env = {
        **os.environ,
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGUSER": admin.username or "postgres",
        "PGDATABASE": database,
    }
    return subprocess.run(["bash", str(BACKUP), *args], env=env, capture_output=True, text=True, check=False)


def test_backup_service_dumps_the_billing_database_as_the_superuser():
    services = load_compose()["services"]
    backup, postgres = environment(services["billing-backup"]), environment(services["postgres"])
    assert backup["PGHOST"] == "postgres" and backup["PGUSER"] == postgres["POSTGRES_USER"]
    assert backup["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert backup["PGDATABASE"] == postgres["BILLING_DB_NAME"]
    assert services["billing-backup"]["image"] == services["postgres"]["image"], "pg_dump must match the server"


def test_backup_and_restore_drill_on_a_migrated_billing_database(billing_database, pg_server, tmp_path, monkeypatch):
    """dump, then restore-drill into a scratch database: the drill reports what the copy holds and
    leaves nothing behind; a damaged or empty dump fails the drill."""
    from sqlalchemy import create_engine, text

    from invoiceflow import cli
    from invoiceflow.core import db

    name = billing_database["BILLING_DB_NAME"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_BILLING_DB", _compose_env("airflow-worker", **billing_database)["AIRFLOW_CONN_BILLING_DB"]
    )
    assert cli.main(["db", "upgrade"]) == 0

    done = _backup(pg_server, name, "dump", str(tmp_path / "backups"))
    assert done.returncode == 0, done.stderr
    (dump,) = (tmp_path / "backups").glob(f"{name}-*.dump")
    assert not list((tmp_path / "backups").glob("*.partial"))

    drill = _backup(pg_server, name, "restore-drill", str(dump))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    report = dict(line.split(" ", 1) for line in drill.stdout.splitlines() if line and not line.startswith("restore"))
    assert int(report["migrations"]) == len(db.migrations())
    assert int(report["guard_triggers"]) > 0
    assert drill.stdout.rstrip().endswith("OK")
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        left = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :n"), {"n": f"{name}_restore%"})
        assert left.all() == [], "the drill left its scratch database behind"

    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    assert _backup(pg_server, name, "restore-drill", str(damaged)).returncode != 0

    # A dump of a database that was never migrated is not a backup of the billing data.
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}_empty"'))
    try:
        empty = _backup(pg_server, f"{name}_empty", "dump", str(tmp_path / "empty"))
        assert empty.returncode == 0, empty.stderr
        (empty_dump,) = (tmp_path / "empty").glob("*.dump")
        failed = _backup(pg_server, f"{name}_empty", "restore-drill", str(empty_dump))
        assert failed.returncode != 0 and "schema_migrations" in failed.stderr
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}_empty" WITH (FORCE)'))
        admin.dispose()
