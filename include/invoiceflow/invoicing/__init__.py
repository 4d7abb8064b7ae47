"""Invoicing: drafts approved, issued with gapless numbers, corrected by credit notes, and rendered
as documents (HTML, PDF/A-3, Factur-X).

Approval lives here rather than in billing because a reviewer is shown the invoice document.
"""
