"""Electronic addresses and Leitweg-IDs, checked against identifiers whose validity does not come
from this code: the Leitweg-IDs of XRechnung's test suite, check digits worked out by hand in the
comments, and the seller's own electronic address in the policy."""

from __future__ import annotations

import re

import pytest
from stdnum.iso7064 import mod_97_10
from support.paths import ROOT

from invoiceflow.core.policy import load_policy
from invoiceflow.ingest import identifiers

RULES = ROOT / "include" / "invoiceflow" / "invoicing" / "rules" / "xslt"  # the official rule sets, as shipped


@pytest.mark.parametrize(
    "value",
    [
        "04011000-12345-03",  # in XRechnung's test suite (../shared/einvoice-rules/examples)
        "90000000-03083-72",  # in XRechnung's test suite, also as the 0204 electronic address
        "04011000-1234512345-06",  # a Feinadressierung of ten digits
        "991-33333TEST-33",  # letters count as in an IBAN (T = 29, E = 14, S = 28)
        "991-33333test-33",  # the same letters in lower case
        "02-92",  # a Grobadressierung of two digits (a Land) without Feinadressierung
    ],
)
def test_valid_leitweg_ids_pass(value):
    assert identifiers.is_leitweg_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "04011000-12345-04",  # one check digit off
        "04011000-12345-30",  # the check digits swapped
        "04011000-12354-03",  # two digits of the Feinadressierung swapped
        "0401100012345-03",  # the hyphen between Grob- and Feinadressierung left out
        "040110001234503",  # no hyphens at all
        "1-12345-36",  # a Grobadressierung of one digit
        "1234567890123-12345-32",  # ... and of thirteen
        "04011000-" + "A" * 31 + "-16",  # a Feinadressierung of 31 characters
        "04011000-12_45-03",  # a character that is neither letter nor digit
        "04011000-12345-3",  # one check digit
        "04011000-12345-03\n",  # a trailing line break
        "",
    ],
)
def test_malformed_or_miscalculated_leitweg_ids_fail(value):
    assert not identifiers.is_leitweg_id(value)


def test_the_check_digits_are_mod_97_10_over_the_id_without_hyphens():
    # worked by hand: 04011000 12345 00 leaves 95 when divided by 97, and 98 - 95 = 03
    assert int("040110001234500") % 97 == 95
    assert mod_97_10.calc_check_digits("0401100012345") == "03"
    # a Feinadressierung of 30 characters, the longest there is, round-trips
    fine = "AB" * 15
    assert identifiers.is_leitweg_id(f"991-{fine}-{mod_97_10.calc_check_digits('991' + fine)}")


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("0208:0403019261", True),  # a Belgian enterprise number: 04030192 mod 97 = 36, 97 - 36 = 61
        ("0208:0403019262", False),
        ("0208:BE0403019261", False),  # Peppol wants the ten digits, no country prefix
        ("0208:403019261", False),  # nine digits
        ("0088:4000001000005", True),  # a GLN with its GS1 check digit
        ("0088:4000001000006", False),
        ("0088:400000100000", False),  # twelve digits
        ("0192:974760673", True),  # a Norwegian organisation number (modulo 11)
        ("0192:974760674", False),
        ("0007:5560360793", True),  # a Swedish organisation number with its Luhn digit
        ("0007:5560360794", False),
        ("0106:12345678", True),  # a Dutch KvK number: eight digits, no check digit
        ("0106:1234567", False),
        ("0184:DK12345678", True),
        ("0204:04011000-12345-03", True),
        ("0204:04011000-12345-04", False),
        ("9930:DE811907980", True),  # a German VAT id, with its prefix
        ("9930:811907980", True),  # ... or without
        ("9930:DE811907981", False),
        ("9930:ATU13585627", False),  # a valid Austrian VAT id under the German scheme
        ("9914:ATU13585627", True),
        ("9925:BE0403019261", True),
        ("9933:EL094014201", True),  # Greece: EL, not GR
        ("9932:GB980780684", True),
        ("9932:GB980780685", False),
        ("9927:CHE116281710MWST", True),  # no check here: the scheme's form is all
        ("0060:123456789", True),  # DUNS: no check digit defined
        ("EM:ap@client.example", True),
        ("EM:no-at-sign", False),
    ],
)
def test_identifiers_are_checked_as_their_scheme_defines(address, valid):
    scheme, identifier = identifiers.split_address(address) or ("", "")
    assert scheme, address
    assert identifiers.identifier_fits_scheme(scheme, identifier) is valid


@pytest.mark.parametrize(
    "address", ["0403019261", "9999:0403019261", "em:ap@client.example", "0208:", ":0403019261", "0208:0403 019261"]
)
def test_an_address_without_a_scheme_of_the_eas_list_is_refused(address):
    assert identifiers.split_address(address) is None


def test_peppol_routes_only_its_own_schemes():
    assert identifiers.peppol_routable("0208:0403019261")
    assert not identifiers.peppol_routable("0208:0403019262")  # a typo does not route either
    assert not identifiers.peppol_routable("EM:ap@client.example")  # e-mail is EAS, not Peppol
    assert not identifiers.peppol_routable("0037:01120389")  # a Finnish scheme that Peppol does not carry
    assert identifiers.split_address("0037:01120389") is not None


def test_the_sellers_own_address_in_the_policy_passes():
    scheme, identifier = identifiers.split_address(load_policy().seller.electronic_address) or ("", "")
    assert identifiers.identifier_fits_scheme(scheme, identifier) and scheme in identifiers.PEPPOL_SCHEMES


def test_the_code_lists_are_the_official_rule_sets():
    peppol = re.search(r'name="eaid"\s*select="tokenize\(\'([^\']*)\'', (RULES / "PEPPOL-EN16931-UBL.xsl").read_text())
    xrechnung = re.search(
        r'name="CEF-EAS-CODES"\s*select="\'([^\']*)\'', (RULES / "XRechnung-UBL-validation.xsl").read_text()
    )
    assert peppol and xrechnung
    assert set(peppol.group(1).split()) == identifiers.PEPPOL_SCHEMES
    assert set(peppol.group(1).split()) | set(xrechnung.group(1).split()) == identifiers.EAS_SCHEMES
