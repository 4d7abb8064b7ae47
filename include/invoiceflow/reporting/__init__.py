"""Reporting: the exception report and digest, the billing summary, and the dashboard's figures."""
