"""What the tests share and are not tests themselves: sample data and factories, builders of an
issued month, loopback servers (SMTP, a faulty SMTP, airflow standalone, a private PostgreSQL
cluster), DAG-run helpers, and scripts the tests start in a fresh process (memory_probe.py).

Imported as ``support.<module>``: tests/conftest.py puts tests/ on ``sys.path`` (pytest's default
``prepend`` import mode); a script outside pytest inserts tests/ itself."""
