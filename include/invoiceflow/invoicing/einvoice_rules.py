"""E-invoices checked against their official rules: the XSD, CEN's EN 16931 rules and the CIUS.

A receiver checks an e-invoice in three layers, and so do we, offline:

| format | XSD | EN 16931 (CEN) | CIUS |
| --- | --- | --- | --- |
| facturx | Factur-X EN 16931 (a subset of CII D16B) | Factur-X EN 16931 Schematron | none |
| xrechnung-cii | the same | the same | XRechnung 3.0.2 for CII (KoSIT) |
| xrechnung-ubl | UBL 2.1 Invoice / CreditNote | CEN EN16931-UBL 1.3.16 | XRechnung 3.0.2 for UBL (KoSIT) |
| peppol-bis3 | UBL 2.1 Invoice / CreditNote | CEN EN16931-UBL 1.3.16 | Peppol BIS Billing 3.0.21 |

The XSD and the EN 16931 rules come from the installed factur-x package, the CIUS rules from
``rules/xslt`` (where each came from and under which licence: ``rules/SOURCES.md``). All rule sets
are Schematron compiled to XSLT 2.0, run by SaxonC-HE (``saxonche``), which needs no network and no
Java. For the CII syntax, the Factur-X Schematron stands in for CEN's own: it carries CEN's
business rules (BR-*, BR-CO-*, BR-S/AE/E/G/...-*, BR-DEC-*) and checks the CII structure against
the EN 16931 profile instead of CEN's CII-SR syntax warnings (docs/einvoicing.md says more).

The XRechnung checks take KoSIT's severity overrides for CEN rules (``KOSIT_LEVELS``), as KoSIT's
own validator configuration does; facturx and Peppol take every rule at its published flag.

The Schematron runner follows ``validate.py`` of the einvoice-rules bundle in the project's shared
folder (offline XRechnung / Peppol BIS checks with saxonche, 2026-12), which this module replaces:
the SVRL reading, the readable locations and the KoSIT overrides are its.

Compiling a rule set takes 0.3-2 s; a ``Validator`` does it once, and then checks a document in
milliseconds to a few tenths of a second.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from invoiceflow.invoicing.einvoice import FORMATS, embedded_xml, xsd, xsd_path

RULES = Path(__file__).with_name("rules") / "xslt"

CII = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
UBL_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
SVRL = "http://purl.oclc.org/dsdl/svrl"

BLOCKING = frozenset({"fatal", "error"})
"""The flags that make a document fail; warnings and information are printed, not counted."""


@dataclass(frozen=True)
class Layer:
    """One compiled Schematron of a format's checks, with where it comes from."""

    name: str
    path: Path


def _facturx_file(relative: str) -> Path:
    from importlib.resources import files

    return Path(str(files("facturx").joinpath("xsd_and_schematron", relative)))


def _schematrons(fmt: str) -> tuple[Layer, ...]:
    """The EN 16931 rules and the CIUS rules of a format, in the order they run."""
    cen_cii = Layer("EN 16931 (Factur-X Schematron for CII)", _facturx_file("facturx-en16931/FACTUR-X_EN16931.xslt"))
    cen_ubl = Layer("EN 16931 (CEN Schematron for UBL)", _facturx_file("ubl-2.1/EN16931-UBL-validation.xslt"))
    return {
        "facturx": (cen_cii,),
        "xrechnung-cii": (cen_cii, Layer("XRechnung CIUS (CII)", RULES / "XRechnung-CII-validation.xsl")),
        "xrechnung-ubl": (cen_ubl, Layer("XRechnung CIUS (UBL)", RULES / "XRechnung-UBL-validation.xsl")),
        "peppol-bis3": (cen_ubl, Layer("Peppol BIS Billing 3.0", RULES / "PEPPOL-EN16931-UBL.xsl")),
    }[fmt]


def _roots(fmt: str) -> frozenset[str]:
    if fmt in ("facturx", "xrechnung-cii"):
        return frozenset({f"{{{CII}}}CrossIndustryInvoice"})
    return frozenset({f"{{{UBL_INVOICE}}}Invoice", f"{{{UBL_CREDIT_NOTE}}}CreditNote"})


KOSIT_LEVELS = {
    "xrechnung-ubl": {"BR-CL-23": "warning", "BR-CL-21": "warning", "UBL-CR-646": "error"},
    "xrechnung-cii": {
        "BR-CL-23": "warning",
        "BR-CL-21": "warning",
        "CII-SR-452": "error",
        "CII-SR-453": "error",
        "CII-SR-454": "error",
    },
}
"""The flags KoSIT's XRechnung validator configuration (validator-configuration-xrechnung
v2026-01-31, scenarios.xml) gives some CEN rules in place of their published ones."""

PROFILE_RULES = {"xrechnung-cii": {"FX-SCH-A-000556": "information"}}
"""Factur-X profile rules that are no EN 16931 rule, where the Factur-X Schematron checks another
CII format: FX-SCH-A-000556 allows only Factur-X's own specification identifier (BT-24
``urn:cen.eu:en16931:2017``), where XRechnung has its own, which its CIUS checks (BR-DE-21)."""

_PREFIXES = {
    UBL_INVOICE: "ubl",
    UBL_CREDIT_NOTE: "cn",
    CII: "rsm",
    "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2": "cbc",
    "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2": "cac",
    "urn:oasis:names:specification:ubl:schema:xsd:CommonExtensionComponents-2": "ext",
    "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100": "ram",
    "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100": "udt",
    "urn:un:unece:uncefact:data:standard:QualifiedDataType:100": "qdt",
}
_QNAME = re.compile(r"Q\{([^}]*)\}")  # SchXslt's locations
_ISO = re.compile(r"\*:([\w.-]+)\[namespace-uri\(\)='([^']*)'\]")  # the ISO skeleton's (CEN, Factur-X)
_RULE_IN_TEXT = re.compile(r"^\[([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\]")


def readable_location(location: str) -> str:
    """An XPath the way a person writes it: ``/ubl:Invoice[1]/cac:Delivery[1]``."""

    def sub(m: re.Match[str]) -> str:
        prefix = _PREFIXES.get(m.group(1))
        return "" if m.group(1) == "" else f"{prefix}:" if prefix else m.group(0)

    def sub_iso(m: re.Match[str]) -> str:
        prefix = _PREFIXES.get(m.group(2))
        return f"{prefix}:{m.group(1)}" if prefix else m.group(0)

    return _ISO.sub(sub_iso, _QNAME.sub(sub, location or ""))


@dataclass(frozen=True)
class Finding:
    """One failed rule: its id (BR-DE-15, PEPPOL-EN16931-R010, BR-CO-10, XSD), flag, text and place."""

    rule: str
    flag: str  # fatal, error, warning, information
    text: str
    location: str
    layer: str

    @property
    def blocking(self) -> bool:
        return self.flag in BLOCKING


@dataclass(frozen=True)
class Report:
    """What the rules said about one document; ``problem`` when it could not be checked at all."""

    name: str
    format: str
    findings: tuple[Finding, ...] = ()
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and not any(f.blocking for f in self.findings)

    @property
    def failed(self) -> tuple[Finding, ...]:
        """The findings that make the document fail."""
        return tuple(f for f in self.findings if f.blocking)

    def rules(self) -> set[str]:
        """The ids of the blocking findings, for tests and summaries."""
        return {f.rule for f in self.failed}

    def text(self, *, errors_only: bool = False) -> str:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.flag] = counts.get(f.flag, 0) + 1
        verdict = "ERROR" if self.problem else "PASS" if self.ok else "FAIL"
        summary = ", ".join(f"{n} {flag}" for flag, n in sorted(counts.items())) or "no findings"
        out = [f"== {self.name} [{self.format}] {verdict}: {summary}"]
        if self.problem:
            out.append(f"  [not checked] {self.problem}")
        for f in self.failed if errors_only else self.findings:
            out.append(f"  [{f.flag}] {f.rule}: {f.text}")
            out.append(f"      at {f.location} ({f.layer})")
        return "\n".join(out)


_processor: Any = None


def _saxon() -> Any:
    """One SaxonC processor per process: it is the costly part, and safe to share."""
    global _processor
    if _processor is None:
        from saxonche import PySaxonProcessor

        _processor = PySaxonProcessor(license=False)
    return _processor


class Validator:
    """One format's XSD and Schematron rules, compiled once; ``check`` may be called many times."""

    def __init__(self, fmt: str, *, kosit_levels: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown e-invoice format {fmt!r}; one of {', '.join(FORMATS)}")
        self.format = fmt
        self.levels = {**PROFILE_RULES.get(fmt, {}), **(KOSIT_LEVELS.get(fmt, {}) if kosit_levels else {})}
        self.roots = _roots(fmt)
        xslt = _saxon().new_xslt30_processor()
        self._layers = []
        for layer in _schematrons(fmt):
            if not layer.path.is_file():
                raise FileNotFoundError(f"rule set {layer.name} is missing: {layer.path}")
            self._layers.append((layer, xslt.compile_stylesheet(stylesheet_file=str(layer.path))))

    def check(self, xml: bytes, name: str = "<xml>") -> Report:
        """Every finding of the XSD and the Schematron layers; XSD errors are fatal."""
        from lxml import etree

        try:
            root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            return Report(name, self.format, problem=f"not readable as XML: {exc}")
        if root.tag not in self.roots:
            return Report(
                name,
                self.format,
                problem=f"root element {root.tag} is not one of {self.format} ({' or '.join(sorted(self.roots))})",
            )
        schema = xsd(root.tag)
        findings = []
        if not schema.validate(root):
            findings += [
                Finding("XSD", "fatal", e.message, f"line {e.line}", xsd_path(root.tag).name) for e in schema.error_log
            ]
        node = _saxon().parse_xml(xml_text=xml.decode("utf-8"))
        for layer, executable in self._layers:
            svrl = executable.transform_to_string(xdm_node=node)
            report = etree.fromstring(svrl.encode("utf-8")) if svrl else None
            if report is None or report.find(f".//{{{SVRL}}}fired-rule") is None:
                # a rule set that matched nothing checked nothing: never a pass
                return Report(name, self.format, tuple(findings), problem=f"no rule of {layer.name} applied")
            findings += self._svrl_findings(report, layer.name)
        return Report(name, self.format, tuple(findings))

    def _svrl_findings(self, report: Any, layer: str) -> list[Finding]:
        """The failed assertions and successful reports of one SVRL report, with our flags."""
        found = []
        for el in report.iter(f"{{{SVRL}}}failed-assert", f"{{{SVRL}}}successful-report"):
            text_el = el.find(f"{{{SVRL}}}text")
            text = " ".join("".join(text_el.itertext()).split()) if text_el is not None else ""
            rule = el.get("id") or ""
            named = _RULE_IN_TEXT.match(text)
            if named and not rule.startswith(named.group(1)):
                rule = named.group(1)  # Factur-X ids its rules FX-SCH-A-nnnnnn and names CEN's in the text
            flag = self.levels.get(rule) or (el.get("flag") or "").strip() or "error"
            found.append(Finding(rule, flag, text, readable_location(el.get("location") or ""), layer))
        return found


@functools.cache
def validator(fmt: str) -> Validator:
    """The format's rules, compiled once per process (a render task checks every document it stores)."""
    return Validator(fmt)


def check_rendered(fmt: str, pdf: bytes, xml: bytes | None, name: str) -> Report:
    """Check what a client receives: the XML of the XML formats, or the XML inside a Factur-X PDF."""
    return validator(fmt).check(xml if xml is not None else embedded_xml(pdf), name)


def guess_format(xml: bytes) -> str:
    """The format of an e-invoice from its root element and its specification identifier (BT-24)."""
    from lxml import etree

    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    if root.tag == f"{{{CII}}}CrossIndustryInvoice":
        spec = root.findtext(
            f"{{{CII}}}ExchangedDocumentContext/"
            "{urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100}"
            "GuidelineSpecifiedDocumentContextParameter/"
            "{urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100}ID"
        )
        return "xrechnung-cii" if "xrechnung" in (spec or "") else "facturx"
    if root.tag in (f"{{{UBL_INVOICE}}}Invoice", f"{{{UBL_CREDIT_NOTE}}}CreditNote"):
        spec = root.findtext("{urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2}CustomizationID")
        if "xrechnung" in (spec or ""):
            return "xrechnung-ubl"
        if "peppol" in (spec or ""):
            return "peppol-bis3"
        raise ValueError(f"a UBL document of specification {spec!r}: name its format")
    raise ValueError(f"root element {root.tag} is no e-invoice (CII or UBL 2.1)")


def document_xml(content: bytes) -> bytes:
    """The XML to check: the file itself, or the Factur-X XML a PDF carries."""
    if content.lstrip()[:5] != b"%PDF-":
        return content
    try:
        return embedded_xml(content)
    except ValueError:
        raise
    except Exception as exc:  # pypdf's errors for a damaged file are no ValueError
        raise ValueError(f"not a readable PDF: {exc}") from exc


def validate_files(paths: list[Path], fmt: str | None = None, out: TextIO | None = None) -> int:
    """``invoiceflow einvoice validate``: every finding of every file, and the worst outcome.

    0 when no fatal or error rule failed, 1 when one did, 2 when a file could not be checked (not
    readable, not an e-invoice, a PDF without XML, a root element of another syntax).
    """
    from lxml import etree

    out = out or sys.stdout
    validators: dict[str, Validator] = {}
    worst = 0
    for path in paths:
        try:
            xml = document_xml(path.read_bytes())
            file_format = fmt or guess_format(xml)
        except (OSError, ValueError, etree.XMLSyntaxError) as exc:
            print(f"== {path} ERROR: {exc}", file=out)
            worst = 2
            continue
        if file_format not in validators:
            validators[file_format] = Validator(file_format)
        report = validators[file_format].check(xml, str(path))
        print(report.text(), file=out)
        worst = max(worst, 2 if report.problem else 0 if report.ok else 1)
    return worst
