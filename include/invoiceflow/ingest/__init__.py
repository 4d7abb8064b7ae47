"""Ingest: source feeds (files, SQL, business events) validated, quarantined or loaded exactly once."""
