"""Sending: invoices and reminders delivered exactly once by e-mail and portal; disputes pause dunning."""
