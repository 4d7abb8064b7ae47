"""Collecting: bank statements imported, lines matched to open invoices, payments posted or reversed."""
