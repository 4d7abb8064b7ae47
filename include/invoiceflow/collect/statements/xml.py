"""Safe XML for bank files: no entities, no DTDs, bounded size."""

from __future__ import annotations

import re
from datetime import date

import defusedxml.ElementTree
from defusedxml import DefusedXmlException
from lxml import etree

from invoiceflow.collect.statements.records import MAX_BYTES, StatementError
from invoiceflow.core.money import MoneyError, to_minor


class Reader:
    """XPath-ish helpers bound to one file's namespace, with errors that say where."""

    def __init__(self, ns: str, source: str) -> None:
        self.ns, self.source = {"c": ns}, source
        self._compiled: dict[str, etree.XPath] = {}

    def all(self, node: etree._Element, path: str) -> list[etree._Element]:
        xpath = self._compiled.get(path)
        if xpath is None:
            xpath = self._compiled[path] = etree.XPath(path, namespaces=self.ns)
        return xpath(node)

    def text(self, node: etree._Element, path: str) -> str | None:
        found = self.all(node, path)
        return found[0].text.strip() if found and found[0].text and found[0].text.strip() else None

    def need(self, node: etree._Element, path: str, where: str) -> str:
        value = self.text(node, path)
        if value is None:
            raise StatementError(self.source, where, f"{path.replace('c:', '')} is missing")
        return value

    def day(self, node: etree._Element, path: str, where: str) -> date | None:
        value = self.text(node, f"{path}/c:Dt") or self.text(node, f"{path}/c:DtTm")
        if value is None:
            return None
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise StatementError(self.source, where, f"{path.replace('c:', '')}: not a date: {value!r}") from None

    def amount(self, node: etree._Element, path: str, currency: str, where: str) -> int:
        amt = self.all(node, path)[0]
        if (amt.get("Ccy") or currency) != currency:
            raise StatementError(self.source, where, f"amount in {amt.get('Ccy')}, account is in {currency}")
        try:
            value = to_minor((amt.text or "").strip(), currency)
        except MoneyError as exc:
            raise StatementError(self.source, where, f"bad amount {amt.text!r}: {exc}") from None
        if value < 0:
            raise StatementError(self.source, where, f"negative amount {amt.text!r} (the sign is CdtDbtInd)")
        return value


def parse_xml(data: bytes, source: str) -> etree._Element:
    if not data.strip():
        raise StatementError(source, "file", "the file is empty")
    if len(data) > MAX_BYTES:
        raise StatementError(source, "file", f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    data = as_utf8(data, source)
    guard_xml(data, source)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StatementError(source, f"line {exc.lineno}", f"not well-formed XML: {exc.msg}") from None
    except LookupError as exc:
        raise StatementError(source, "prolog", f"unknown encoding: {exc}") from None


def as_utf8(data: bytes, source: str) -> bytes:
    """A UTF-16 file (its byte-order mark says so; some banks write CAMT that way) as UTF-8, its
    declaration saying so: the guard below reads the prolog as bytes, so it must see UTF-8."""
    if data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        return data
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError:
        raise StatementError(source, "file", "starts as UTF-16 but is not valid UTF-16 text") from None
    text = re.sub(r"^(<\?xml[^>]*?encoding=[\"'])[^\"']*", r"\g<1>UTF-8", text.lstrip("\ufeff"), count=1)
    return text.encode("utf-8")


_ROOT_START = re.compile(rb"<[A-Za-z_]")


def guard_xml(data: bytes, source: str) -> None:
    """Refuse DTDs and entity declarations (XXE, billion laughs) before any XML parser builds a tree.

    A DTD can only stand in the prolog, before the root element: ``defusedxml`` reads that prolog
    (with an empty root in place of the document) and refuses any DTD or entity in it. lxml then
    parses the document with entities, DTD loading and network access switched off.
    """
    root = _ROOT_START.search(data)
    prolog = data[: root.start()] if root else data
    if re.search(rb"<!(DOCTYPE|ENTITY)", prolog, re.IGNORECASE):
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files")
    try:
        defusedxml.ElementTree.fromstring(prolog + b"<root/>", forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException:
        raise StatementError(source, "prolog", "DTD/entity declarations are not allowed in bank files") from None
    except LookupError as exc:  # <?xml encoding="TF-8"?>
        raise StatementError(source, "prolog", f"unknown encoding: {exc}") from None
    except defusedxml.ElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else "?"
        raise StatementError(source, f"line {line}", f"not well-formed XML: {exc}") from None
