# Source this file (`source scripts/airflow-env.sh`) and a plain `airflow ...` command in this shell
# uses the project's Airflow: its home .airflow/ (whose airflow.cfg names this repository's dags/
# and plugins/, with no examples; `make airflow-config` writes it), the venv's airflow, and the
# project's data folder.
_invoiceflow_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export AIRFLOW_HOME="$_invoiceflow_root/.airflow"
export INVOICEFLOW_DATA_DIR="${INVOICEFLOW_DATA_DIR:-$_invoiceflow_root/data}"
export GX_ANALYTICS_ENABLED=false
export PATH="$_invoiceflow_root/.venv/bin:$PATH"
unset _invoiceflow_root
