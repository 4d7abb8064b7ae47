# The invoiceflow image: the official Airflow image with what invoiceflow adds.
#
#   docker build -t invoiceflow-airflow:0.1.0 .     (docker compose build does the same)
#
# The Airflow version and the Python version are the ones the lock was compiled for:
# apache-airflow in requirements.txt and requires-python in pyproject.toml
# (tests/integration/test_deployment.py keeps the three in step).
FROM apache/airflow:3.3.2-python3.11

# WeasyPrint renders invoices with Pango and HarfBuzz from the system, with the fonts the
# templates name (DejaVu Sans, Liberation Sans); poppler-utils (pdftotext, pdfinfo) lets operators
# and checks read a rendered PDF back inside the container. Debian package names (the image is
# Debian bookworm).
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 \
        libpangoft2-1.0-0 \
        libharfbuzz-subset0 \
        shared-mime-info \
        fonts-dejavu-core \
        fonts-liberation2 \
        poppler-utils \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER airflow

# The pinned lock first (its layer is cached until requirements.txt changes). Naming
# apache-airflow with the image's own version keeps pip from moving Airflow itself.
COPY --chown=airflow:0 requirements.txt /opt/invoiceflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/invoiceflow/requirements.txt

# The project, installed editable as in development: settings.py finds include/sql, templates,
# config and expectations next to the package, and DAGs, workers and the CLI import it the same way.
COPY --chown=airflow:0 pyproject.toml README.md /opt/invoiceflow/
COPY --chown=airflow:0 include /opt/invoiceflow/include
COPY --chown=airflow:0 expectations /opt/invoiceflow/expectations
COPY --chown=airflow:0 dags /opt/invoiceflow/dags
COPY --chown=airflow:0 plugins /opt/invoiceflow/plugins
RUN pip install --no-cache-dir --no-deps -e /opt/invoiceflow

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/invoiceflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/invoiceflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false \
    INVOICEFLOW_DATA_DIR=/opt/airflow/data \
    GX_ANALYTICS_ENABLED=false
