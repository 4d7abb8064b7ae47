"""Folders the tests read, computed once here so a test file can move without counting parents."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
ROOT = TESTS.parent  # the repository
FIXTURES = TESTS / "fixtures"  # real-shaped bank files and statements in every format
CORPUS = TESTS / "corpus"  # bad and hostile bank statements and source feeds
