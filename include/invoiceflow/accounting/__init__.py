"""Accounting: the double-entry journal, its exports, and the accounting system's payment status."""
