"""Billing: loaded records priced into draft invoices (rates, milestones, retainers, caps, taxes, FX)."""
