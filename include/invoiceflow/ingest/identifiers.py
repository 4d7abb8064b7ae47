"""Where an e-invoice goes: the electronic address with its EAS scheme, and the Leitweg-ID.

An electronic address (EN 16931 BT-49, a Peppol participant id) is written ``scheme:identifier``,
the scheme a code of the Electronic Address Scheme list (CEF EAS). Where a scheme's identifier has
a fixed form or check digits (a Belgian enterprise number, a GLN, a VAT id, a Leitweg-ID), the
feed checks it the way the Peppol rules do (PEPPOL-COMMON-R040 to R057), so that a typo is
quarantined with its row instead of being refused by the client's access point weeks later.

The code lists are copied from the official rule sets in ``invoicing/rules/xslt/``:
``EAS_SCHEMES`` from XRechnung 3.0.2 (``CEF-EAS-CODES``, which is what BT-49 is checked against)
together with the newer codes Peppol BIS 3.0.21 already routes, ``PEPPOL_SCHEMES`` from Peppol BIS
3.0.21 (``eaid``): the schemes an access point can route to, without ``EM`` (e-mail).
"""

from __future__ import annotations

import re
from collections.abc import Callable

PEPPOL_SCHEMES = frozenset(  # the codes as the rule sets list them, to compare by eye
    """
    0002 0007 0009 0060 0088 0096 0097 0106 0130 0135 0142 0151 0183 0184 0188 0190 0191 0192 0195 0196 0198
    0199 0200 0201 0204 0208 0209 0210 0211 0216 0218 0221 0225 0230 0235 0240 0242 0244 0245 0246 0248
    9910 9913 9914 9915 9918 9919 9920 9922 9923 9924 9925 9926 9927 9928 9929 9930 9931 9932 9933 9934
    9935 9936 9937 9938 9939 9940 9941 9942 9943 9944 9945 9946 9947 9948 9949 9950 9951 9952 9953 9957 9959
    """.split()  # noqa: SIM905
)
EAS_SCHEMES = PEPPOL_SCHEMES | frozenset(
    "0037 0147 0154 0158 0170 0177 0193 0194 0202 0203 0205 0212 0213 0215 0217 0219 0220 AN AQ AS AU EM".split()  # noqa: SIM905
)

LEITWEG_ID = re.compile(r"([0-9]{2,12})(?:-([A-Za-z0-9]{1,30}))?-([0-9]{2})")
"""KoSIT's form: Grobadressierung (2 to 12 digits), optionally Feinadressierung (up to 30 letters
or digits), and 2 check digits, separated by hyphens."""

EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z]{2,}")  # as the clients suite checks ``email``

VAT_SCHEMES = {
    "9910": "HU",
    "9914": "AT",
    "9920": "ES",
    "9922": "AD",
    "9923": "AL",
    "9924": "BA",
    "9925": "BE",
    "9926": "BG",
    "9927": "CH",
    "9928": "CY",
    "9929": "CZ",
    "9930": "DE",
    "9931": "EE",
    "9932": "GB",
    "9933": "EL",  # Greece's VAT prefix
    "9934": "HR",
    "9935": "IE",
    "9936": "LI",
    "9937": "LT",
    "9938": "LU",
    "9939": "LV",
    "9940": "MC",
    "9941": "ME",
    "9942": "MK",
    "9943": "MT",
    "9944": "NL",
    "9945": "PL",
    "9946": "PT",
    "9947": "RO",
    "9948": "RS",
    "9949": "SI",
    "9950": "SK",
    "9951": "SM",
    "9952": "TR",
    "9953": "VA",
    "9957": "FR",
}
"""The EAS schemes whose identifier is a VAT id, and the VAT id's country prefix."""


def is_leitweg_id(value: str) -> bool:
    """A Leitweg-ID in KoSIT's form whose check digits are right.

    The check digits are ISO 7064 MOD 97-10 over the ID without its hyphens, letters counted as in
    an IBAN (A = 10 ... Z = 35): the whole number, check digits included, leaves 1 when divided by
    97. ``04011000-12345-03`` and ``90000000-03083-72`` (XRechnung's test suite) pass.
    """
    from stdnum.iso7064 import mod_97_10

    match = LEITWEG_ID.fullmatch(value)
    return match is not None and mod_97_10.is_valid("".join(part or "" for part in match.groups()))


def split_address(value: str) -> tuple[str, str] | None:
    """``(scheme, identifier)`` of ``scheme:identifier`` with a scheme of the EAS list, else None."""
    scheme, colon, identifier = value.partition(":")
    if not colon or scheme not in EAS_SCHEMES or not identifier or re.search(r"\s", identifier):
        return None
    return scheme, identifier


def identifier_fits_scheme(scheme: str, identifier: str) -> bool:
    """The identifier has the form and check digits its scheme defines (True where it defines none)."""
    if scheme in VAT_SCHEMES:
        return _vat_id(VAT_SCHEMES[scheme], identifier)
    check = _SCHEME_CHECKS.get(scheme)
    return check is None or check(identifier)


def peppol_routable(value: str) -> bool:
    """An address a Peppol access point can deliver to: a valid one whose scheme Peppol routes."""
    parts = split_address(value)
    return parts is not None and parts[0] in PEPPOL_SCHEMES and identifier_fits_scheme(*parts)


def _vat_id(prefix: str, identifier: str) -> bool:
    """A VAT id of that country, with or without its prefix; check digits where python-stdnum has them."""
    from stdnum.eu import vat
    from stdnum.gb import vat as gb_vat

    number = identifier.upper()
    number = number if number.startswith(prefix) else prefix + number
    if prefix.lower() in vat.MEMBER_STATES or prefix == "EL":
        return bool(vat.is_valid(number)) and vat.compact(number).startswith(prefix)
    if prefix == "GB":
        return bool(gb_vat.is_valid(number))
    return True  # no check digits known here: the form scheme:identifier is all that is checked


def _digits(n: int) -> Callable[[str], bool]:
    return lambda identifier: re.fullmatch(f"[0-9]{{{n}}}", identifier) is not None


def _belgian_enterprise_number(identifier: str) -> bool:
    """PEPPOL-COMMON-R043: ten digits, the last two 97 minus the first eight modulo 97."""
    from stdnum.be import vat

    return _digits(10)(identifier) and bool(vat.is_valid(identifier))


def _gln(identifier: str) -> bool:
    """PEPPOL-COMMON-R040: a GS1 Global Location Number, 13 digits with the GS1 check digit."""
    from stdnum import ean

    return _digits(13)(identifier) and bool(ean.is_valid(identifier))


def _norwegian_organisation(identifier: str) -> bool:
    """PEPPOL-COMMON-R041: nine digits with a modulo 11 check digit."""
    from stdnum.no import orgnr

    return _digits(9)(identifier) and bool(orgnr.is_valid(identifier))


def _swedish_organisation(identifier: str) -> bool:
    """PEPPOL-COMMON-R049: ten digits with a Luhn check digit."""
    from stdnum.se import orgnr

    return _digits(10)(identifier) and bool(orgnr.is_valid(identifier))


def _australian_business_number(identifier: str) -> bool:
    """PEPPOL-COMMON-R050: eleven digits with the ABN's modulo 89 check."""
    from stdnum.au import abn

    return _digits(11)(identifier) and bool(abn.is_valid(identifier))


_SCHEME_CHECKS: dict[str, Callable[[str], bool]] = {
    "0007": _swedish_organisation,
    "0088": _gln,
    "0096": _digits(10),  # PEPPOL-COMMON-R052, Danish P number
    "0106": _digits(8),  # PEPPOL-COMMON-R054, Dutch Chamber of Commerce (KvK)
    "0151": _australian_business_number,
    "0184": lambda i: re.fullmatch(r"(DK)?[0-9]{8}", i) is not None,  # PEPPOL-COMMON-R042, Danish CVR
    "0190": _digits(20),  # PEPPOL-COMMON-R055, Dutch government organisation (OIN)
    "0192": _norwegian_organisation,
    "0198": lambda i: re.fullmatch(r"DK[0-9]{8}", i) is not None,  # PEPPOL-COMMON-R053, Danish SE number
    "0204": is_leitweg_id,
    "0208": _belgian_enterprise_number,
    "0217": _digits(12),  # PEPPOL-COMMON-R057, Dutch KvK establishment
    "EM": lambda i: EMAIL.fullmatch(i) is not None,
}
"""Form and check digits per scheme, as the Peppol rules (and KoSIT for the Leitweg-ID) check them."""
