"""Sending: invoices and reminders delivered exactly once by e-mail, portal and the Peppol access point's
folder; disputes pause dunning."""
