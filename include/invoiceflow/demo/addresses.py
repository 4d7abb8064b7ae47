"""Where the demo company's clients are, and how their e-invoices reach them.

Postal addresses in each country's own form (streets as they are named there, postcodes that
belong to the city), German public bodies with their Leitweg-IDs, Flemish businesses on Peppol with
their enterprise numbers, and the purchase order numbers of enterprise clients. Every function
takes the generator to draw from: the company seeds one per client, so these details never shift
the rest of the demo data.
"""

from __future__ import annotations

import random

from stdnum.iso7064 import mod_97_10

# country: (streets, line 2 choices, cities as (city, subdivision, postcodes)); how a street line
# reads is in _street_line
PLACES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str, tuple[str, ...]], ...]]] = {
    "DE": (
        (
            "Hauptstraße",
            "Bahnhofstraße",
            "Friedrichstraße",
            "Hafenstraße",
            "Lindenallee",
            "Schillerstraße",
            "Goethestraße",
            "Kaiserstraße",
            "Industriestraße",
            "Gartenstraße",
            "Mühlenweg",
            "Königstraße",
        ),
        ("3. OG", "Haus B", "Aufgang C"),
        (
            ("Berlin", "", ("10115", "10117", "10178", "10243", "10405", "10551", "10785", "10969")),
            ("Hamburg", "", ("20095", "20097", "20354", "20457", "22083", "22765")),
            ("München", "", ("80331", "80335", "80469", "80636", "81369", "81671")),
            ("Köln", "", ("50667", "50670", "50672", "50823", "51063")),
            ("Frankfurt am Main", "", ("60311", "60313", "60325", "60486", "65929")),
            ("Stuttgart", "", ("70173", "70174", "70178", "70190", "70565")),
            ("Düsseldorf", "", ("40210", "40212", "40213", "40468", "40547")),
            ("Leipzig", "", ("04103", "04109", "04229", "04315")),
            ("Hannover", "", ("30159", "30161", "30169", "30539")),
            ("Nürnberg", "", ("90402", "90403", "90429", "90461")),
        ),
    ),
    "AT": (
        ("Hauptplatz", "Bahnhofstraße", "Kirchengasse", "Landstraße", "Herrengasse", "Wiener Straße", "Schulgasse"),
        ("Top 12", "2. Stock", "Stiege 3"),
        (
            ("Wien", "", ("1010", "1020", "1030", "1040", "1050", "1060", "1070", "1090", "1100", "1120")),
            ("Graz", "", ("8010", "8020", "8036")),
            ("Linz", "", ("4020", "4030", "4040")),
            ("Salzburg", "", ("5020", "5023")),
            ("Innsbruck", "", ("6020",)),
        ),
    ),
    "FR": (
        (
            "rue de la République",
            "avenue Jean Jaurès",
            "boulevard Voltaire",
            "rue Victor Hugo",
            "rue Nationale",
            "avenue de la Gare",
            "rue du Commerce",
            "rue Pasteur",
            "place de l'Hôtel de Ville",
        ),
        ("Bâtiment B", "3e étage", "Immeuble Le Ponant"),
        (
            ("Paris", "", ("75001", "75002", "75008", "75009", "75011", "75015", "75017")),
            ("Lyon", "", ("69001", "69002", "69003", "69006", "69007")),
            ("Marseille", "", ("13001", "13002", "13006", "13008")),
            ("Toulouse", "", ("31000", "31100", "31200", "31400")),
            ("Lille", "", ("59000", "59800")),
            ("Nantes", "", ("44000", "44100", "44200")),
            ("Bordeaux", "", ("33000", "33100", "33300")),
        ),
    ),
    "NL": (
        (
            "Kerkstraat",
            "Stationsplein",
            "Industrieweg",
            "Dorpsstraat",
            "Marktplein",
            "Nieuwstraat",
            "Julianalaan",
            "Wilhelminastraat",
            "Schoolstraat",
        ),
        ("2e verdieping", "Unit 4"),
        (
            ("Amsterdam", "", ("1011", "1012", "1015", "1016", "1017", "1043", "1082")),
            ("Rotterdam", "", ("3011", "3012", "3013", "3014", "3072")),
            ("Utrecht", "", ("3511", "3512", "3521", "3584")),
            ("Den Haag", "", ("2511", "2514", "2595")),
            ("Eindhoven", "", ("5611", "5612", "5617")),
        ),
    ),
    "BE": (
        (
            "Meir",
            "Kerkstraat",
            "Stationsstraat",
            "Veldstraat",
            "Grote Markt",
            "Nijverheidsstraat",
            "Koningin Astridlaan",
            "Brusselsesteenweg",
            "Kouter",
        ),
        ("bus 3", "bus 101"),
        (
            ("Antwerpen", "", ("2000", "2018", "2060")),
            ("Gent", "", ("9000", "9050")),
            ("Brussel", "", ("1000", "1040", "1050")),
            ("Leuven", "", ("3000", "3010")),
            ("Mechelen", "", ("2800",)),
            ("Brugge", "", ("8000",)),
        ),
    ),
    "GB": (
        (
            "High Street",
            "Station Road",
            "King Street",
            "Church Street",
            "Victoria Road",
            "Queen Street",
            "Market Street",
            "Mill Lane",
            "Park Road",
        ),
        ("Floor 3", "Unit 5", "Suite 2"),
        (  # outward codes: the inward half is drawn
            ("London", "", ("EC2A", "EC1V", "SE1", "W1D", "E14", "N1", "WC2N")),
            ("Manchester", "", ("M1", "M2", "M3", "M4")),
            ("Birmingham", "", ("B1", "B2", "B3", "B4")),
            ("Leeds", "", ("LS1", "LS2", "LS11")),
            ("Bristol", "", ("BS1", "BS2")),
            ("Edinburgh", "", ("EH1", "EH2", "EH3")),
            ("Glasgow", "", ("G1", "G2")),
        ),
    ),
    "US": (
        (
            "Main Street",
            "Market Street",
            "Broadway",
            "Park Avenue",
            "Pine Street",
            "Congress Avenue",
            "Oak Street",
            "Washington Street",
        ),
        ("Suite 400", "Floor 12", "Suite 1250"),
        (
            ("New York", "NY", ("10001", "10016", "10017", "10022", "10036")),
            ("San Francisco", "CA", ("94103", "94105", "94107", "94111")),
            ("Chicago", "IL", ("60601", "60602", "60606", "60611")),
            ("Austin", "TX", ("78701", "78702", "78704")),
            ("Seattle", "WA", ("98101", "98104", "98109")),
            ("Boston", "MA", ("02108", "02110", "02116")),
        ),
    ),
    "CH": (
        (
            "Bahnhofstrasse",
            "Seestrasse",
            "Hauptstrasse",
            "Industriestrasse",
            "Poststrasse",
            "Dorfstrasse",
            "Kirchgasse",
            "Zürcherstrasse",
        ),
        ("2. OG", "Postfach"),
        (
            ("Zürich", "ZH", ("8001", "8002", "8004", "8005", "8008", "8048")),
            ("Basel", "BS", ("4051", "4052", "4053", "4056")),
            ("Bern", "BE", ("3008", "3011", "3012", "3013")),
            ("Luzern", "LU", ("6003", "6004", "6005")),
            ("St. Gallen", "SG", ("9000", "9008")),
            ("Winterthur", "ZH", ("8400", "8404")),
        ),
    ),
}

GB_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the inward code never uses C, I, K, M, O or V
NL_POSTCODE_LETTERS = "ABCDEGHJKLMNPRSTVWXZ"  # Dutch postcodes leave out F, I, O, Q, U and Y
_NL_UNUSED = {"SA", "SD", "SS"}  # ... and these pairs

GERMAN_PUBLIC_BODIES = (
    # name, street, postcode, city, Grobadressierung of the Leitweg-ID (the body's official key)
    ("Stadt Köln, Amt für Informationsverarbeitung", "Willy-Brandt-Platz 2", "50679", "Köln", "05315000"),
    ("Landeshauptstadt München, IT-Referat", "Agnes-Pockels-Bogen 21", "80992", "München", "09162000"),
    ("Freie und Hansestadt Hamburg, Finanzbehörde", "Gänsemarkt 36", "20354", "Hamburg", "02"),
    ("Bezirksamt Mitte von Berlin", "Müllerstraße 146", "13353", "Berlin", "11000000"),
    ("Stadt Leipzig, Amt für Digitalisierung", "Martin-Luther-Ring 4", "04109", "Leipzig", "14713000"),
    ("Landratsamt Breisgau-Hochschwarzwald", "Stadtstraße 2", "79104", "Freiburg im Breisgau", "08315"),
    ("Bundesamt für Logistik und Mobilität", "Werderstraße 34", "50672", "Köln", "991"),
    ("Landeshauptstadt Stuttgart, Haupt- und Personalamt", "Marktplatz 1", "70173", "Stuttgart", "08111000"),
)


def address(rng: random.Random, country: str) -> dict[str, str]:
    """A postal address in ``country`` as the clients feed has it."""
    streets, second_lines, cities = PLACES[country]
    city, subdivision, postcodes = rng.choice(cities)
    postcode = rng.choice(postcodes)
    if country == "GB":
        postcode += f" {rng.randrange(10)}{rng.choice(GB_INWARD_LETTERS)}{rng.choice(GB_INWARD_LETTERS)}"
    elif country == "NL":
        letters = rng.choice(
            [a + b for a in NL_POSTCODE_LETTERS for b in NL_POSTCODE_LETTERS if a + b not in _NL_UNUSED]
        )
        postcode += f" {letters}"
    return {
        "address_line1": _street_line(rng, country, rng.choice(streets)),
        "address_line2": rng.choice(second_lines) if rng.random() < 0.2 else "",
        "postcode": postcode,
        "city": city,
        "country_subdivision": subdivision,
    }


def _street_line(rng: random.Random, country: str, street: str) -> str:
    """House numbers after the street, except in France, Britain and the US, where they come first."""
    if country == "US":
        return f"{rng.randrange(100, 2400)} {street}"
    if country in ("FR", "GB"):
        return f"{rng.randrange(1, 120)} {street}"
    return f"{street} {rng.randrange(1, 150)}"


def leitweg_id(coarse: str, fine: str) -> str:
    """``coarse-fine-check`` with the check digits of ISO 7064 MOD 97-10 over ``coarse`` + ``fine``."""
    return f"{coarse}-{fine}-{mod_97_10.calc_check_digits(coarse + fine)}"


def german_public_body(rng: random.Random, k: int) -> dict[str, str]:
    """The k-th German public body of the demo: its name, address and Leitweg-ID."""
    name, street, postcode, city, coarse = GERMAN_PUBLIC_BODIES[k % len(GERMAN_PUBLIC_BODIES)]
    fine = rng.choice((f"{rng.randrange(10000, 100000)}", f"RE{rng.randrange(100, 1000)}", ""))
    reference = leitweg_id(coarse, fine) if fine else f"{coarse}-{mod_97_10.calc_check_digits(coarse)}"
    return {
        "name": name,
        "address_line1": street,
        "address_line2": "",
        "postcode": postcode,
        "city": city,
        "country_subdivision": "",
        "buyer_reference": reference,
    }


def belgian_enterprise_number(rng: random.Random) -> str:
    """Ten digits, the last two 97 minus the first eight modulo 97 (what Peppol checks for 0208)."""
    base = f"0{rng.randrange(2_000_000, 10_000_000):07d}"
    return f"{base}{97 - int(base) % 97:02d}"


def purchase_order(rng: random.Random) -> str:
    """A purchase order number as an ERP system numbers them (45... in SAP)."""
    return f"45{rng.randrange(10**7, 10**8)}"
