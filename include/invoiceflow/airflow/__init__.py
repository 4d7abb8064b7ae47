"""The seam to Airflow: the only package that imports it (connections, DAG defaults, task steps)."""
