"""What every stage stands on: money, FX, the database, the audit trail, the policy, settings.

Nothing here imports a stage or Airflow; every other package may import from here.
"""
