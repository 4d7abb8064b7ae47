"""invoiceflow: the invoice lifecycle of a B2B services company, run by Apache Airflow.

The package is plain Python so that it can be tested without a scheduler; the DAGs in
``dags/`` only wire its functions together.
"""

__version__ = "0.1.0"
