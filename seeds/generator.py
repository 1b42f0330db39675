"""Synthetic CDP data: HubSpot-style CRM exports, Segment event logs and their ground truth.

`generate()` writes, under `out` (the landing layout of docs/architecture.md):

    crm/contacts.csv  crm/companies.csv  crm/deals.csv  crm/tickets.csv
    events/events-YYYY-MM.jsonl          one Segment message per line, by UTC month
    truth.csv                            person_id,identifier_type,identifier_value

People are generated one at a time and written as they are made (every file is opened once),
so memory stays bounded for any number of customers. Runs of more than PART_PEOPLE people
are cut into parts of consecutive people, made in parallel by worker processes; each part
writes its own event files (events-YYYY-MM-partNNN.jsonl) and the parent joins the parts'
CRM and truth rows in part order. Randomness comes from `random.Random(seed)` (and, for part
k > 0, `Random(f"{seed}/{k}")`): the same seed, customer count and `end` give byte-identical
files, whatever the number of workers.

Identifiers live only in: contacts `Record ID`, `Email`, `Phone Number`; messages `userId`,
`anonymousId`, `previousId`, `traits.email`, `traits.phone`. truth.csv has one row per
(identifier, person) for every identifier in a well-formed row, normalized (email trimmed
and lowercased, phone E.164, ids as emitted); junk values shared by many people
(`JUNK_EMAILS`, `JUNK_PHONES`, `JUNK_ANONYMOUS_IDS`) have one row with an empty person_id.
Malformed rows (`bad_rows`) carry fresh identifiers of nobody and are not in truth.csv.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from random import Random

import orjson

WINDOW_DAYS = 120

# A run is cut into parts of at most this many people (by person number), each generated
# with its own random stream, so parts can be made by parallel worker processes and the
# output depends only on the arguments, never on the number of workers or their timing.
PART_PEOPLE = 100_000
# Record IDs and order numbers of part k start at k * (per-person bound) * (part size), so
# the parts never collide: these bound what one person can use (IDs step by 1-3 or 1-4).
_CONTACT_IDS_PER_PERSON = 2 * 3  # a contact and a duplicate
_COMPANY_IDS_PER_PERSON = 3
_DEAL_IDS_PER_PERSON = 2 * 4
_TICKET_IDS_PER_PERSON = 3 * 4
_ORDERS_PER_PERSON = 16  # a checkout at most once per visit (11), abandoned cart (1)
_ID_RANGE = 100_000_000  # each object type's Record IDs stay within 100 million numbers
_PROGRESS_SECONDS = 2.0  # progress lines at every 5% of people, at most this often
_BUFFER_LINES = 4096  # event lines kept per file before a write

# Junk values planted on many people; truth.csv lists them (normalized) with no person.
JUNK_EMAILS = ("test@test.com", "unknown", "null")  # "" is planted too (an empty CRM Email)
JUNK_CRM_EMAILS = ("unknown", "null", "")
JUNK_PHONES = ("0000000000", "1234567890")  # normalized: +10000000000, +11234567890
JUNK_ANONYMOUS_IDS = ("undefined", "null")

CONTACT_HEADER = [
    "Record ID",
    "First Name",
    "Last Name",
    "Email",
    "Phone Number",
    "Company Name",
    "Associated Company ID",
    "Lifecycle Stage",
    "Lead Status",
    "Create Date",
    "Last Activity Date",
    "Unsubscribed from all email",
    "City",
    "Country/Region",
]
COMPANY_HEADER = [
    "Record ID",
    "Company name",
    "Company Domain Name",
    "Industry",
    "Number of Employees",
    "Annual Revenue",
    "City",
    "Country/Region",
    "Create Date",
]
DEAL_HEADER = [
    "Record ID",
    "Deal Name",
    "Deal Stage",
    "Pipeline",
    "Amount",
    "Close Date",
    "Create Date",
    "Associated Contact IDs",
    "Associated Company IDs",
]
TICKET_HEADER = [
    "Record ID",
    "Ticket name",
    "Ticket status",
    "Priority",
    "Source",
    "Create Date",
    "Associated Contact IDs",
]

# Record ID ranges, one per object type.
CONTACT_ID_START = 100_000_001
COMPANY_ID_START = 200_000_001
DEAL_ID_START = 300_000_001
TICKET_ID_START = 400_000_001

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

# Roughly: shares of people (see the brief in seeds/README.md).
P_SIGNUP = 0.69
P_EMAIL_WITHOUT_SIGNUP = 0.5  # signing up needs an email: 0.7 + 0.3 * 0.5 = 85% with email
P_PHONE = 0.63
P_CRM = 0.58
P_EMAIL_VARIANTS = 0.06
P_PHONE_VARIANTS = 0.08
P_PRE_SIGNUP_BROWSING = 0.35
P_ALIAS = 0.07
P_NEW_ANONYMOUS_ID_PER_VISIT = 0.04
P_DUPLICATE_CONTACT = 0.04
P_EMAIL_CHANGE = 0.04
P_SAME_NAME = 0.03
P_BUYER = 0.5
P_CART_ABANDONER = 0.07
# Purchase intent the propensity model can learn: buyers look at products on more of their
# browsing visits, and orders after the sign-up visit follow 1-2 browsing visits.
P_VIEW_PRODUCT_BUYER = 0.75
P_VIEW_PRODUCT = 0.35
P_RESEARCH_BEFORE_ORDER = 0.8
P_SMS_OPT_IN = 0.3  # signed-up people with a phone who subscribe to SMS
P_SMS_OPT_OUT = 0.25  # of those, who later reply STOP
P_DUPLICATE_MESSAGE = 0.011
JUNK_CARRIER_SHARE = 0.03
SHARED_DEVICE_PAIR_SHARE = 0.0035  # pairs per person: ~1% of signed-up people are in a pair

FIRST_NAMES = (
    "Ana", "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew",
    "Betty", "Anthony", "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly",
    "Paul", "Emily", "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin",
    "Amanda", "Brian", "Melissa", "George", "Deborah", "Timothy", "Stephanie", "Ronald",
    "Rebecca", "Jason", "Sharon", "Edward", "Laura", "Jeffrey", "Cynthia", "Ryan", "Kathleen",
    "Jacob", "Amy", "Gary", "Angela", "Nicholas", "Shirley", "Eric", "Anna", "Jonathan",
    "Brenda", "Stephen", "Pamela", "Larry", "Emma", "Justin", "Nicole", "Scott", "Helen",
    "Brandon", "Samantha", "Benjamin", "Katherine", "Samuel", "Christine", "Gregory", "Debra",
    "Alexander", "Rachel", "Frank", "Carolyn", "Raymond", "Janet", "Jack", "Catherine",
    "Dennis", "Maria", "Jerry", "Heather", "Tyler", "Diane", "Aaron", "Ruth", "Jose", "Julie",
    "Adam", "Olivia", "Nathan", "Joyce", "Henry", "Virginia", "Zachary", "Victoria", "Peter",
    "Kelly", "Kyle", "Lauren", "Noah", "Christina", "Ethan", "Joan", "Jeremy", "Evelyn",
    "Walter", "Judith", "Christian", "Megan", "Keith", "Andrea", "Roger", "Cheryl", "Terry",
    "Hannah", "Austin", "Jacqueline", "Sean", "Martha", "Gerald", "Gloria", "Carl", "Teresa",
    "José", "Zoë", "Renée", "Chloé", "Søren", "Mei", "Priya", "Arjun", "Aisha", "Omar",
    "Yuki", "Hiroshi", "Fatima", "Mateo", "Sofía", "Lukas", "Ingrid", "Siobhan", "Niamh",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster",
    "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler",
    "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan",
    "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno",
    "West", "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar",
    "O'Brien", "O'Connor", "McDonald", "Müller", "Schröder", "Núñez", "Østergaard",
    "Van der Berg", "Smith-Jones", "Tanaka", "Yamamoto", "Chen", "Wang", "Singh", "Khan",
)  # fmt: skip

# (city, area code) for US numbers; a person with a phone lives where the area code is.
US_CITIES = (
    ("San Francisco", "415"), ("New York", "212"), ("Chicago", "312"), ("Austin", "512"),
    ("Seattle", "206"), ("Boston", "617"), ("Denver", "303"), ("Los Angeles", "213"),
    ("Miami", "305"), ("Atlanta", "404"), ("Portland", "503"), ("Phoenix", "602"),
    ("Dallas", "214"), ("Minneapolis", "612"), ("Philadelphia", "215"), ("San Diego", "619"),
)  # fmt: skip
UK_CITIES = ("London", "Manchester", "Bristol", "Leeds", "Edinburgh")
P_UK = 0.04

EMAIL_DOMAINS = (
    ("gmail.com", 40), ("yahoo.com", 12), ("outlook.com", 12), ("hotmail.com", 8),
    ("icloud.com", 10), ("proton.me", 3), ("aol.com", 3), ("fastmail.com", 2),
)  # fmt: skip

COMPANY_WORDS_A = (
    "Acme", "Northwind", "Blue", "Summit", "Silver", "Granite", "Bright", "Red", "Pioneer",
    "Harbor", "Evergreen", "Golden", "Iron", "Maple", "Quantum", "Vertex", "Lumen", "Cedar",
    "Atlas", "Nimbus", "Orbit", "Prairie", "Copper", "Crescent", "Falcon", "Horizon", "Juniper",
    "Keystone", "Meridian", "Oakridge",
)  # fmt: skip
COMPANY_WORDS_B = (
    "Labs", "Logistics", "Foods", "Analytics", "Systems", "Health", "Outfitters", "Studio",
    "Robotics", "Energy", "Partners", "Media", "Networks", "Goods", "Works", "Bank", "Dynamics",
    "Software", "Designs", "Ventures", "Apparel", "Capital", "Clinic", "Supply",
)  # fmt: skip
COMPANY_SUFFIXES = ("Inc.", "LLC", "Co.", "Group", "Ltd", "")
INDUSTRIES = (
    "COMPUTER_SOFTWARE", "RETAIL", "FINANCIAL_SERVICES", "HOSPITAL_HEALTH_CARE",
    "MARKETING_AND_ADVERTISING", "LOGISTICS_AND_SUPPLY_CHAIN", "FOOD_BEVERAGES",
    "INFORMATION_TECHNOLOGY_AND_SERVICES", "APPAREL_FASHION", "CONSUMER_GOODS", "",
)  # fmt: skip

# (product_id, sku, name, price, category)
CATALOG = (
    ("prod_1001", "TS-BLK-M", "Classic Tee", 24.0, "Apparel"),
    ("prod_1002", "TS-WHT-L", "Organic Cotton Tee", 29.0, "Apparel"),
    ("prod_1003", "HD-GRY-M", "Everyday Hoodie", 64.0, "Apparel"),
    ("prod_1004", "JK-NVY-L", "Rain Jacket", 129.0, "Apparel"),
    ("prod_1005", "PK-OLV-M", "Down Parka", 249.0, "Apparel"),
    ("prod_1006", "JN-IND-32", "Slim Jeans", 79.0, "Apparel"),
    ("prod_1007", "SK-WOL-3P", "Wool Socks 3-Pack", 18.0, "Apparel"),
    ("prod_1008", "CP-BLK-OS", "Baseball Cap", 22.0, "Accessories"),
    ("prod_1009", "BG-CNV-01", "Canvas Tote", 35.0, "Accessories"),
    ("prod_1010", "BP-BLK-20", "Commuter Backpack", 98.0, "Accessories"),
    ("prod_1011", "WL-LTH-BR", "Leather Wallet", 55.0, "Accessories"),
    ("prod_1012", "SG-TRT-01", "Polarized Sunglasses", 89.0, "Accessories"),
    ("prod_1013", "WT-STL-40", "Field Watch", 189.0, "Accessories"),
    ("prod_1014", "SN-WHT-10", "Court Sneakers", 95.0, "Shoes"),
    ("prod_1015", "RN-BLU-09", "Trail Runners", 135.0, "Shoes"),
    ("prod_1016", "BT-BRN-11", "Chelsea Boots", 175.0, "Shoes"),
    ("prod_1017", "SL-GRY-10", "House Slippers", 39.0, "Shoes"),
    ("prod_1018", "MG-CER-12", "Ceramic Mug", 16.0, "Home"),
    ("prod_1019", "CN-SOY-08", "Soy Candle", 28.0, "Home"),
    ("prod_1020", "BL-WOL-01", "Wool Throw Blanket", 119.0, "Home"),
    ("prod_1021", "PL-LIN-02", "Linen Pillow Cover", 34.0, "Home"),
    ("prod_1022", "KN-CHF-08", "Chef's Knife", 85.0, "Home"),
    ("prod_1023", "EM-ESP-01", "Espresso Machine", 399.0, "Home"),
    ("prod_1024", "PR-FRN-01", "French Press", 42.0, "Home"),
    ("prod_1025", "TN-2P-01", "Two-Person Tent", 229.0, "Outdoor"),
    ("prod_1026", "SB-DWN-01", "Down Sleeping Bag", 199.0, "Outdoor"),
    ("prod_1027", "BT-INS-32", "Insulated Bottle", 32.0, "Outdoor"),
    ("prod_1028", "HL-LED-01", "Headlamp", 45.0, "Outdoor"),
    ("prod_1029", "CH-CMP-01", "Camp Chair", 69.0, "Outdoor"),
    ("prod_1030", "SK-SPF-50", "Mineral Sunscreen", 19.0, "Beauty"),
    ("prod_1031", "FC-SRM-30", "Vitamin C Serum", 48.0, "Beauty"),
    ("prod_1032", "LB-MNT-01", "Lip Balm Trio", 14.0, "Beauty"),
    ("prod_1033", "SH-ARG-25", "Argan Shampoo", 26.0, "Beauty"),
    ("prod_1034", "GC-DIG-50", "Gift Card $50", 50.0, "Gift Cards"),
    ("prod_1035", "GC-DIG-100", "Gift Card $100", 100.0, "Gift Cards"),
    ("prod_1036", "YM-TPE-06", "Yoga Mat", 58.0, "Outdoor"),
)
SITE = "https://shop.example.com"
PAGES = (
    ("Home", "/"),
    ("Shop", "/shop"),
    ("New Arrivals", "/shop/new"),
    ("Sale", "/shop/sale"),
    ("Blog", "/blog/how-to-layer-for-winter"),
    ("Blog", "/blog/gift-guide-2026"),
    ("About", "/about"),
    ("Help", "/help/shipping"),
)
REFERRERS = (
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.facebook.com/",
    "https://t.co/",
    "https://www.bing.com/",
    "https://news.ycombinator.com/",
    "",
    "",
    "",
)
SEARCH_TERMS = ("jacket", "boots", "gift", "mug", "tent", "socks", "hoodie", "serum", "sale")
USER_AGENTS = (
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15"
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
)
LIB_WEB = {"name": "analytics.js", "version": "2.11.1"}
LIB_IOS = {"name": "analytics-ios", "version": "4.1.8"}
LIB_SERVER = {"name": "analytics-python", "version": "2.3.2"}
APP = {"name": "Shop", "version": "3.2.0", "build": "320"}
IOS_UA = "Shop/3.2.0 (iPhone; iOS 17.4; Scale/3.00)"
SCREENS = ("Home", "Shop", "Product", "Cart", "Account")

LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
)
LEAD_STATUSES = (
    "NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT",
    "CONNECTED", "BAD_TIMING", "", "",
)  # fmt: skip
OPEN_DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
)
DEAL_PRODUCTS = ("Annual plan", "Bulk order", "Corporate gifts", "Team uniforms", "Renewal")
TICKET_SUBJECTS = (
    "Where is my order?",
    "Return request",
    "Wrong size delivered",
    "Can't log in",
    "Refund not received",
    "Change shipping address",
    "Discount code not working",
    "Item arrived damaged",
)
TICKET_OPEN_STATUSES = ("New", "Waiting on contact", "Waiting on us")
TICKET_PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
TICKET_SOURCES = ("EMAIL", "CHAT", "FORM", "PHONE")


@dataclass
class GenerateReport:
    """What `generate` wrote. Row counts are well-formed rows (events include duplicates)."""

    people: int = 0
    contacts: int = 0
    companies: int = 0
    deals: int = 0
    tickets: int = 0
    events: int = 0
    identifiers: int = 0  # truth.csv rows
    planted: dict[str, int] = field(default_factory=dict)
    bad_rows: dict[str, int] = field(default_factory=dict)


def normalize_email(value: str) -> str:
    """Trimmed and lowercased, as in truth.csv."""
    return value.strip().lower()


def normalize_phone(value: str) -> str:
    """E.164 for the formats the generator writes (US numbers without +1 get +1)."""
    raw = value.strip()
    digits = re.sub(r"[^0-9]", "", raw)
    if raw.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return "+1" + digits


def _ascii_letters(name: str) -> str:
    table = {"ø": "o", "ö": "o", "ü": "u", "é": "e", "ë": "e", "í": "i", "ñ": "n", "ú": "u"}
    return "".join(
        table.get(c, c) for c in name.lower() if c.isalpha() and c.isascii() or c in table
    )


def _capitalized(email: str) -> str:
    local, _, domain = email.partition("@")
    parts = re.split(r"([._])", local)
    return "".join(p.capitalize() for p in parts) + "@" + domain.capitalize()


def _email_forms(email: str) -> list[str]:
    """Ways people and systems write the same address (index 0 is the canonical form)."""
    cap = _capitalized(email)
    return [email, cap, email.upper(), f" {cap} ", f"{email} ", f" {email.upper()}"]


def _us_phone_forms(digits10: str) -> list[str]:
    a, e, n = digits10[:3], digits10[3:6], digits10[6:]
    return [
        f"({a}) {e}-{n}",
        f"{a}.{e}.{n}",
        f"+1 {a} {e} {n}",
        f"1-{a}-{e}-{n}",
        f"+1{a}{e}{n}",
        f"{a}{e}{n}",
        f"{a}-{e}-{n}",
    ]


def _uk_phone_forms(national10: str) -> list[str]:
    """UK mobile numbers, always with an international prefix (never the trunk 0)."""
    head, tail = national10[:4], national10[4:]
    return [f"+44 {head} {tail}", f"0044 {head} {tail}", f"+44{national10}", f"+44 {national10}"]


class _Affine:
    """A bijection of range(modulus): i -> (i * mult + add) % modulus, for unique numbers."""

    def __init__(self, rng: Random, modulus: int) -> None:
        self.modulus = modulus
        mult = rng.randrange(modulus // 3, modulus) | 1
        while math.gcd(mult, modulus) != 1:
            mult += 2
        self.mult = mult
        self.add = rng.randrange(modulus)

    def __call__(self, i: int) -> int:
        return (i * self.mult + self.add) % self.modulus


TRUTH_HEADER = ["person_id", "identifier_type", "identifier_value"]
_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _first(item: tuple) -> int:
    return item[0]


def _remove_event_files(events: Path) -> None:
    """Event files of an earlier run (a smaller run must not leave parts behind)."""
    for old in events.glob("events-*.jsonl"):
        old.unlink()


class _EventFile:
    """An event file and the lines not yet written to it."""

    __slots__ = ("f", "lines")

    def __init__(self, path: Path) -> None:
        self.f = path.open("wb", buffering=1 << 20)
        self.lines: list[bytes] = []

    def flush(self) -> None:
        if self.lines:
            self.f.write(b"".join(self.lines))
            self.lines.clear()

    def close(self) -> None:
        self.flush()
        self.f.close()


_SERVER_CONTEXT = orjson.Fragment(orjson.dumps({"library": LIB_SERVER}))


class _Device:
    __slots__ = ("anon", "ctx", "mobile", "offset")

    def __init__(self, anon: str, mobile: bool, offset: int, ctx: dict) -> None:
        self.anon = anon
        self.mobile = mobile
        self.offset = offset  # minutes east of UTC used in `timestamp` (0 or 120)
        # The context as JSON, made once per device: the whole of it for the app, and for
        # the web all but the page, which each message adds (see _Generator._msg).
        if mobile:
            self.ctx = orjson.Fragment(orjson.dumps(ctx))
        else:
            self.ctx = orjson.dumps(ctx)[:-1] + b',"page":'


class _Person:
    def __init__(self, pid: str) -> None:
        self.pid = pid
        # (time, message without its times, timestamp offset in minutes, sentAt, receivedAt)
        self.msgs: list[tuple[int, dict, int, int, int]] = []
        self.ids: dict[tuple[str, str], None] = {}
        self.email_forms: dict[str, dict[str, None]] = {}
        self.phone_forms: dict[str, dict[str, None]] = {}
        self.contact_ids: list[str] = []
        self.revenue = 0.0
        self.orders = 0
        self.aliases = 0
        self.buyer = False


def _part_bounds(customers: int, parts: int) -> list[int]:
    """Person numbers where each part starts (and, last, where the run ends)."""
    return [k * customers // parts for k in range(parts + 1)]


def _parts_for(customers: int, part_people: int) -> int:
    return max(1, -(-customers // max(1, part_people)))


@cache
def _clock_bytes() -> tuple[list[bytes], list[bytes]]:
    """b"HH:MM:SS" for every second of a day and b".mmmZ" for every millisecond."""
    seconds = [b"%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) for s in range(86_400)]
    return seconds, [b".%03dZ" % m for m in range(1000)]


class _Generator:
    """Makes the people of one part (by default the whole run) and writes their rows.

    Everything that must be unique or consistent across the run (person ids, user ids,
    email and phone numbers, company names, where shared devices, junk and malformed rows
    go) is a function of the person number, derived from `Random(seed)`; part 0 continues
    that stream and part k > 0 draws from its own `Random("seed/k")`.
    """

    def __init__(
        self,
        customers: int,
        seed: int,
        out: Path,
        end: datetime,
        bad_rows: int,
        part: int = 0,
        parts: int = 1,
        crm_dir: Path | None = None,
    ) -> None:
        self.n = customers
        self.rng = Random(seed)
        self.out = out
        self.crm_dir = crm_dir  # part files without headers (several parts), else None
        self.end_ms = int(end.timestamp() * 1000)
        self.start_ms = self.end_ms - WINDOW_DAYS * DAY_MS
        self.report = GenerateReport()
        self.planted: dict[str, int] = dict.fromkeys(
            (
                "email_case_variants",
                "phone_format_variants",
                "anonymous_browsing_before_signup",
                "multiple_devices",
                "new_anonymous_id_per_visit",
                "alias_calls",
                "duplicate_crm_contacts",
                "shared_device",
                "junk_identifiers",
                "email_change",
                "same_name",
                "duplicate_messages",
                "newsletter_only",
                "cart_abandoners",
                "lifetime_revenue_500_plus",
                "research_before_order",
                "sms_opt_in",
                "sms_opt_out",
            ),
            0,
        )
        rng = self.rng
        digits = max(2, len(str(max(customers, 1))))
        self.email_number = _Affine(rng, 10**digits)
        self.us_number = _Affine(rng, len(US_CITIES) * 8_000_000)
        self.uk_number = _Affine(rng, 10**9)
        self.user_number = _Affine(rng, 1 << 48)
        self.user_mix = rng.getrandbits(48)
        self.company_number = _Affine(
            rng, len(COMPANY_WORDS_A) * len(COMPANY_WORDS_B) * len(COMPANY_SUFFIXES)
        )
        bounds = _part_bounds(customers, parts)
        self.lo, self.hi = bounds[part], bounds[part + 1]
        size = max(b - a for a, b in zip(bounds, bounds[1:], strict=False))
        n_bad_contacts = min(max(0, bad_rows), max(2, max(0, bad_rows) // 3))
        contact_stride = _CONTACT_IDS_PER_PERSON * size + n_bad_contacts
        if parts > 1 and max(contact_stride, _DEAL_IDS_PER_PERSON * size) * parts >= _ID_RANGE:
            raise ValueError(f"too many customers for the Record ID ranges: {customers:,}")
        self.contact_seq = CONTACT_ID_START + part * contact_stride
        self.company_seq = COMPANY_ID_START + part * _COMPANY_IDS_PER_PERSON * size
        self.deal_seq = DEAL_ID_START + part * _DEAL_IDS_PER_PERSON * size
        self.ticket_seq = TICKET_ID_START + part * _TICKET_IDS_PER_PERSON * size
        self.order_seq = part * _ORDERS_PER_PERSON * size
        self.company_count = part * size  # numbers company names: at most one per person
        self.companies: deque[tuple[str, str, str]] = deque(maxlen=300)
        self.recent_names: deque[tuple[str, str]] = deque(maxlen=500)
        self.junk: dict[tuple[str, str], None] = {}
        self.pending_shared: _Device | None = None
        self.day_cache: dict[int, tuple[str, str]] = {}
        self.iso_days: dict[int, str] = {}
        self.iso_days_b: dict[int, bytes] = {}
        self.page_context: dict[str, bytes] = {}  # path -> JSON of context.page, and a "}"
        self.page_properties: dict[tuple[str, str, str], orjson.Fragment] = {}
        self.clock_b, self.milli_z_b = _clock_bytes()
        self.event_suffix = f"-part{part + 1:03d}" if parts > 1 else ""
        self.event_files: dict[str, _EventFile] = {}
        self.day_files: dict[int, _EventFile] = {}

        # Rare cases are scheduled at evenly spaced people, so that small runs have them too.
        n = customers
        if n >= 50:
            carriers = max(15, round(JUNK_CARRIER_SHARE * n))
        else:
            carriers = min(n, max(1, round(JUNK_CARRIER_SHARE * n)))
        self.junk_slot = {(k * n) // carriers + n // (3 * carriers): k for k in range(carriers)}
        pairs = max(1, round(SHARED_DEVICE_PAIR_SHARE * n)) if n >= 4 else 0
        starts = {(k * n) // pairs + n // (2 * pairs) for k in range(pairs)} - {n - 1}
        # The two people of a pair are consecutive and must be in the same part.
        part_starts = set(bounds[1:-1])
        self.shared_starts = set()
        for start in starts:
            if start + 1 in part_starts:  # the last person of a part: pair with the one before
                if start in part_starts:
                    continue  # a part of one person
                start -= 1
            self.shared_starts.add(start)
        n_bad_events = max(0, bad_rows)
        self.bad_at = sorted(
            [((2 * k + 1) * n // (2 * n_bad_events), "events", k) for k in range(n_bad_events)]
            + [
                ((2 * k + 1) * n // (2 * n_bad_contacts), "contacts", k)
                for k in range(n_bad_contacts)
            ]
        )
        last = part == parts - 1
        self.bad_at = [
            bad for bad in self.bad_at if self.lo <= bad[0] and (bad[0] < self.hi or last)
        ]
        self.report.bad_rows = {"events": n_bad_events, "contacts": n_bad_contacts}
        if part:
            self.rng = Random(f"{seed}/{part}")

    # ----------------------------------------------------------------------------- formatting
    def _day(self, day: int) -> tuple[str, str]:
        cached = self.day_cache.get(day)
        if cached is None:
            d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
            cached = (d.strftime("%Y-%m-%d"), d.strftime("%Y-%m"))
            self.day_cache[day] = cached
        return cached

    def _iso(self, ms: int, offset_min: int = 0) -> str:
        """ISO-8601 with milliseconds: `Z`, or local time and `+HH:MM` for an offset."""
        day, rem = divmod(ms + offset_min * MINUTE_MS, DAY_MS)
        prefix = self.iso_days.get(day)
        if prefix is None:
            prefix = self.iso_days[day] = self._day(day)[0] + "T"
        h, rem = divmod(rem, HOUR_MS)
        m, rem = divmod(rem, MINUTE_MS)
        s, milli = divmod(rem, 1000)
        if offset_min:
            return f"{prefix}{h:02d}:{m:02d}:{s:02d}.{milli:03d}+{offset_min // 60:02d}:00"
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"

    def _stamp(self, ms: int) -> bytes:
        """`_iso(ms)` as bytes, from tables (the hot path: three per message)."""
        day, rem = divmod(ms, DAY_MS)
        prefix = self.iso_days_b.get(day)
        if prefix is None:
            prefix = self.iso_days_b[day] = (self._day(day)[0] + "T").encode()
        second, milli = divmod(rem, 1000)
        return prefix + self.clock_b[second] + self.milli_z_b[milli]

    def _hubspot_date(self, ms: int) -> str:
        day, rem = divmod(ms, DAY_MS)
        h, rem = divmod(rem, HOUR_MS)
        return f"{self._day(day)[0]} {h:02d}:{rem // MINUTE_MS:02d}"

    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def _user_id(self, i: int) -> str:
        x = self.user_number(i)
        x ^= x >> 21
        x = (x * 0x9E3779B97F4B) & ((1 << 48) - 1)  # odd multiplier: still a bijection
        x ^= self.user_mix
        return f"u_{x:012x}"

    # ----------------------------------------------------------------------------- files
    def _open(self) -> None:
        """Open the CRM and truth files: the final files with their headers for a run of one
        part, or this part's files without headers (the parent joins them)."""
        events = self.out / "events"
        events.mkdir(parents=True, exist_ok=True)
        if self.crm_dir is None:
            crm, truth_dir = self.out / "crm", self.out
            crm.mkdir(parents=True, exist_ok=True)
            _remove_event_files(events)
        else:
            crm = truth_dir = self.crm_dir
            crm.mkdir(parents=True, exist_ok=True)
        self.files = []
        headers = self.crm_dir is None

        def writer(path: Path, header: list[str]):
            f = path.open("w", newline="", encoding="utf-8", buffering=1 << 20)
            self.files.append(f)
            w = csv.writer(f, lineterminator="\n")
            if headers:
                w.writerow(header)
            return w

        self.contacts = writer(crm / "contacts.csv", CONTACT_HEADER)
        self.companies_w = writer(crm / "companies.csv", COMPANY_HEADER)
        self.deals = writer(crm / "deals.csv", DEAL_HEADER)
        self.tickets = writer(crm / "tickets.csv", TICKET_HEADER)
        self.truth = writer(truth_dir / "truth.csv", TRUTH_HEADER)

    def _event_file(self, ms: int) -> _EventFile:
        day = ms // DAY_MS
        f = self.day_files.get(day)
        if f is None:
            month = self._day(day)[1]
            f = self.event_files.get(month)
            if f is None:
                name = f"events-{month}{self.event_suffix}.jsonl"
                f = self.event_files[month] = _EventFile(self.out / "events" / name)
            self.day_files[day] = f
        return f

    def _close(self) -> None:
        for f in self.event_files.values():
            f.close()
        for f in self.files:
            f.close()

    # ----------------------------------------------------------------------------- run
    def run(
        self, progress: Callable[[int, int], None] | None = None
    ) -> tuple[GenerateReport, list[tuple[str, str]]]:
        """Make this part's people; returns the report and the junk values seen (for
        truth.csv). `progress(people, events)` is called every few hundred people."""
        self._open()
        try:
            bad = deque(self.bad_at)
            for i in range(self.lo, self.hi):
                self._person(i)
                while bad and bad[0][0] <= i:
                    self._bad_row(*bad.popleft()[1:])
                if progress and (i + 1 - self.lo) % 500 == 0:
                    progress(i + 1 - self.lo, self.report.events)
            while bad:
                self._bad_row(*bad.popleft()[1:])
            junk = sorted(self.junk)
            if self.crm_dir is None:
                for kind, value in junk:
                    self.truth.writerow(["", kind, value])
                    self.report.identifiers += 1
        finally:
            self._close()
        self.report.people = self.hi - self.lo
        self.report.planted = self.planted
        if progress:
            progress(self.report.people, self.report.events)
        return self.report, junk

    # ----------------------------------------------------------------------------- devices
    def _device(self, mobile: bool | None = None) -> _Device:
        rng = self.rng
        if mobile is None:
            mobile = rng.random() < 0.1
        octets = (
            rng.randint(23, 223),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        )
        ip = ".".join(map(str, octets))
        if mobile:
            ctx = {
                "library": LIB_IOS,
                "app": APP,
                "device": {"type": "ios", "model": rng.choice(("iPhone15,2", "iPhone14,5"))},
                "os": {"name": "iOS", "version": "17.4"},
                "userAgent": IOS_UA,
                "ip": ip,
                "locale": "en-US",
            }
        else:
            ctx = {"library": LIB_WEB, "userAgent": rng.choice(USER_AGENTS), "ip": ip}
        offset = 120 if rng.random() < 0.03 else 0
        return _Device(self._uuid(), mobile, offset, ctx)

    # ----------------------------------------------------------------------------- messages
    def _msg(
        self,
        p: _Person,
        ts: int,
        dev: _Device | None,
        kind: str,
        uid: str | None,
        *,
        anon: str | None = None,
        path: str = "/",
        **fields,
    ) -> None:
        rng = self.rng
        msg: dict = {"type": kind, "messageId": self._uuid()}
        if dev is not None:
            msg["anonymousId"] = anon or dev.anon
        if uid:
            msg["userId"] = uid
        msg.update(fields)
        if dev is None:
            msg["context"] = _SERVER_CONTEXT
            offset = 0
        elif dev.mobile:
            msg["context"] = dev.ctx
            offset = dev.offset
        else:
            page = self.page_context.get(path)
            if page is None:
                page = orjson.dumps({"path": path, "url": SITE + path}) + b"}"
                self.page_context[path] = page
            msg["context"] = orjson.Fragment(dev.ctx + page)
            offset = dev.offset
        # timestamp, sentAt and receivedAt (the last keys) are written by _write_messages
        random = rng.random
        sent = ts + 5 + int(random() * 1500)
        p.msgs.append((ts, msg, offset, sent, sent + 20 + int(random() * 600)))

    def _page(self, p, ts, dev, uid, name, path, referrer="", anon=None) -> int:
        if dev is not None and dev.mobile:
            screen = name if name in SCREENS else "Home"
            self._msg(p, ts, dev, "screen", uid, anon=anon, name=screen, properties={})
        else:
            props = self.page_properties.get((name, path, referrer))
            if props is None:
                props = {"path": path, "url": SITE + path, "title": f"{name} | Example Shop"}
                if referrer:
                    props["referrer"] = referrer
                props = orjson.Fragment(orjson.dumps(props))
                self.page_properties[(name, path, referrer)] = props
            self._msg(p, ts, dev, "page", uid, anon=anon, path=path, name=name, properties=props)
        return ts + 8_000 + int(self.rng.random() * 112_000)

    def _track(self, p, ts, dev, uid, event, props, path="/", server=False) -> int:
        self._msg(
            p, ts, None if server else dev, "track", uid, path=path, event=event, properties=props
        )
        return ts + 5_000 + int(self.rng.random() * 85_000)

    def _identify(self, p, ts, dev, uid, traits, anon=None) -> int:
        self._msg(p, ts, dev, "identify", uid, anon=anon, traits=traits)
        return ts + 2_000 + int(self.rng.random() * 28_000)

    @staticmethod
    def _product_props(product, quantity=None) -> dict:
        pid, sku, name, price, category = product
        props = {"product_id": pid, "sku": sku, "name": name, "price": price, "category": category}
        if quantity is not None:
            props["quantity"] = quantity
        return props

    def _shop(self, p: _Person, t: int, dev: _Device, uid: str | None, kind: str) -> int:
        """The body of a visit: browse, cart (abandoned) or order."""
        rng = self.rng
        if kind == "browse":
            for _ in range(rng.choice((0, 1, 1, 2))):
                name, path = rng.choice(PAGES)
                t = self._page(p, t, dev, uid, name, path)
            if rng.random() < (P_VIEW_PRODUCT_BUYER if p.buyer else P_VIEW_PRODUCT):
                product = rng.choice(CATALOG)
                path = f"/products/{product[1].lower()}"
                t = self._page(p, t, dev, uid, "Product", path)
                t = self._track(
                    p, t, dev, uid, "Product Viewed", self._product_props(product), path
                )
            if rng.random() < 0.08:
                props = {"query": rng.choice(SEARCH_TERMS)}
                t = self._track(p, t, dev, uid, "Products Searched", props, "/search")
            return t
        cart_id = f"{rng.getrandbits(64):016x}"
        n_items = 1 if rng.random() < 0.6 else (2 if rng.random() < 0.75 else 3)
        items = []
        for product in rng.sample(CATALOG, n_items):
            qty = 1 if rng.random() < 0.82 else (2 if rng.random() < 0.8 else 3)
            path = f"/products/{product[1].lower()}"
            if rng.random() < 0.7:
                t = self._page(p, t, dev, uid, "Product", path)
            t = self._track(p, t, dev, uid, "Product Viewed", self._product_props(product), path)
            props = {"cart_id": cart_id, **self._product_props(product, qty)}
            t = self._track(p, t, dev, uid, "Product Added", props, path)
            items.append((product, qty))
        if kind == "cart" and rng.random() < 0.5:
            return t
        revenue = round(sum(product[3] * qty for product, qty in items), 2)
        products = [self._product_props(product, qty) for product, qty in items]
        self.order_seq += 1
        order_id = f"ORD-{1_000_000 + self.order_seq}"
        checkout = {"order_id": order_id, "value": revenue, "revenue": revenue, "currency": "USD"}
        checkout["products"] = products
        t = self._track(p, t, dev, uid, "Checkout Started", checkout, "/checkout")
        if kind == "cart":
            return t
        discount = round(revenue * 0.1, 2) if rng.random() < 0.12 else 0.0
        shipping = 0.0 if revenue >= 75 else 5.99
        tax = round((revenue - discount) * 0.08, 2)
        order = {
            "order_id": order_id,
            "affiliation": "Online Store",
            "total": round(revenue - discount + shipping + tax, 2),
            "revenue": revenue,
            "shipping": shipping,
            "tax": tax,
            "discount": discount,
            "currency": "USD",
            "products": products,
        }
        if discount:
            order["coupon"] = "WELCOME10"
        server = rng.random() < 0.3  # a server-side library: userId only, no anonymousId
        t = self._track(p, t, dev, uid, "Order Completed", order, "/checkout/thank-you", server)
        p.revenue += revenue
        p.orders += 1
        return t

    # ----------------------------------------------------------------------------- people
    def _person(self, i: int) -> None:
        rng = self.rng
        p = _Person(f"p{i + 1:06d}")
        planted = self.planted

        shared_dev = None
        if self.pending_shared is not None:
            shared_dev, self.pending_shared = self.pending_shared, None
        elif i in self.shared_starts and i + 1 < self.hi:
            shared_dev = self._device(mobile=False)
            self.pending_shared = shared_dev
        junk = self.junk_slot.get(i)

        if self.recent_names and rng.random() < P_SAME_NAME:
            first, last = rng.choice(self.recent_names)
            planted["same_name"] += 1
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            self.recent_names.append((first, last))

        signup = shared_dev is not None or junk is not None or rng.random() < P_SIGNUP
        has_email = signup or rng.random() < P_EMAIL_WITHOUT_SIGNUP
        has_phone = junk is not None or rng.random() < P_PHONE
        has_crm = junk is not None or rng.random() < P_CRM
        email_variants = has_email and junk is None and rng.random() < P_EMAIL_VARIANTS
        phone_variants = has_phone and rng.random() < P_PHONE_VARIANTS
        has_crm = has_crm or email_variants or phone_variants
        if has_crm and not has_email and not has_phone:
            has_phone = True
        # A CRM contact links to the events through an email or phone the person also sends
        # in an identify call: people who never sign up only do so with an email (newsletter).
        if has_crm and not signup and not has_email:
            has_crm = phone_variants = False
        dup_contact = has_crm and junk is None and rng.random() < P_DUPLICATE_CONTACT
        email_change = signup and rng.random() < P_EMAIL_CHANGE
        pre_signup = signup and rng.random() < P_PRE_SIGNUP_BROWSING
        alias_user = signup and rng.random() < P_ALIAS
        per_visit = rng.random() < P_NEW_ANONYMOUS_ID_PER_VISIT
        buyer = p.buyer = signup and rng.random() < P_BUYER
        abandoner = signup and rng.random() < P_CART_ABANDONER
        newsletter = has_email and not signup
        uid = self._user_id(i) if signup else None

        # Identifiers, unique per person by construction.
        fn, ln = _ascii_letters(first) or "x", _ascii_letters(last) or "y"
        number = self.email_number(i)
        domain = _weighted(rng, EMAIL_DOMAINS)
        company = None
        if has_crm and rng.random() < 0.55:
            company = self._company()
            if rng.random() < 0.25:
                domain = company[2]
        email = new_email = None
        if has_email:
            pattern = rng.choice(
                (f"{fn}.{ln}", f"{fn}{ln}", f"{fn[0]}{ln}", f"{fn}_{ln}", f"{ln}.{fn}", fn)
            )
            email = f"{pattern}{number}@{domain}"
            if email_change:
                other = rng.choice([d for d, _ in EMAIL_DOMAINS if d != domain])
                new_email = f"{fn}.{ln}{number}@{other}"
        email_forms = _email_forms(email) if email else []
        email_form = 0 if rng.random() < 0.9 else 1
        phone_forms: list[str] = []
        country, city = "United States", rng.choice(US_CITIES)[0]
        if has_phone:
            if rng.random() < P_UK:
                national = "7" + f"{self.uk_number(i):09d}"
                phone_forms = _uk_phone_forms(national)
                country, city = "United Kingdom", rng.choice(UK_CITIES)
            else:
                k = self.us_number(i)
                city, area = US_CITIES[k // 8_000_000]
                rest = k % 8_000_000
                phone_forms = _us_phone_forms(f"{area}{200 + rest // 10_000}{rest % 10_000:04d}")
        phone_form = rng.randrange(len(phone_forms)) if phone_forms else 0

        # Devices and visits.
        n_dev = 1 if rng.random() < 0.55 else (2 if rng.random() < 0.67 else 3)
        devices = [self._device() for _ in range(n_dev)]
        n_pre = (1 if rng.random() < 0.6 else 2) if pre_signup else 0
        extra = 0
        while rng.random() < 0.55 and extra < 10:
            extra += 1
        n_visits = max(1 + extra, n_pre + n_dev + (1 if signup else 0))
        end = self.end_ms
        first_seen = self.start_ms + int(rng.random() * (WINDOW_DAYS - 2) * DAY_MS)
        last_start = end - HOUR_MS
        abandon_at = None
        if abandoner:
            abandon_at = end - rng.randint(2 * HOUR_MS, 6 * DAY_MS + 12 * HOUR_MS)
            first_seen = min(first_seen, abandon_at - 2 * DAY_MS)
            last_start = abandon_at - 2 * HOUR_MS
        times = sorted(
            first_seen + int(rng.random() * (last_start - first_seen)) for _ in range(n_visits - 1)
        )
        times.insert(0, first_seen)

        linked: set[str] = set()
        orders_left = 0
        if buyer:
            orders_left = _weighted(rng, ((1, 50), (2, 22), (3, 12), (4, 8), (5, 5), (6, 3)))
        email_sent = False

        def identify_traits(full: bool) -> dict:
            nonlocal email_sent
            traits: dict = {}
            if email and (full or email_variants or rng.random() < 0.5):
                if email_variants and email_sent:
                    form = rng.choice([f for f in range(len(email_forms)) if f != email_form])
                else:
                    form = email_form
                traits["email"] = email_forms[form]
                email_sent = True
            if full:
                traits["firstName"] = first
                traits["lastName"] = last
                if phone_forms:
                    traits["phone"] = phone_forms[phone_form]
                if rng.random() < 0.12:
                    traits["unsubscribed"] = rng.random() < 0.3
            return traits

        signup_at = None
        newsletter_visit = rng.randrange(n_visits) if newsletter else -1
        for v, t in enumerate(times):
            # Every identifier a person emits must be linkable from the data: people who
            # never sign in browse on one device, and pre-signup visits happen on the device
            # they sign up on (anonymous ids no record ever connects belong to nobody we know).
            if not signup or v <= n_pre:
                dev = devices[0]
            elif per_visit:
                dev = self._device()
            elif v - n_pre < n_dev:
                dev = devices[v - n_pre]
            else:
                dev = rng.choice(devices)
            name, path = ("Home", "/") if rng.random() < 0.5 else rng.choice(PAGES)
            referrer = rng.choice(REFERRERS)
            if not signup:
                t = self._page(p, t, dev, None, name, path, referrer)
                if v == newsletter_visit:
                    t = self._page(p, t, dev, None, "Newsletter", "/newsletter")
                    traits = {"email": email_forms[email_form]}
                    t = self._identify(p, t, dev, None, traits)
                    props = {"list": "weekly"}
                    t = self._track(p, t, dev, None, "Newsletter Subscribed", props, "/newsletter")
                kind = "cart" if rng.random() < 0.08 else "browse"
                self._shop(p, t, dev, None, kind)
                continue
            if v < n_pre:
                t = self._page(p, t, dev, None, name, path, referrer)
                self._shop(p, t, dev, None, "browse")
                continue
            if v == n_pre:
                signup_at = t
                t = self._page(p, t, dev, None, name, path, referrer)
                t = self._page(p, t, dev, None, "Sign Up", "/signup")
                if alias_user:
                    self._msg(p, t, None, "alias", uid, previousId=dev.anon)
                    p.aliases += 1
                    t += rng.randint(50, 900)
                t = self._identify(p, t, dev, uid, identify_traits(True))
                t = self._track(p, t, dev, uid, "Signed Up", {"method": "email"}, "/signup")
                linked.add(dev.anon)
            else:
                if dev.anon in linked:
                    t = self._page(p, t, dev, uid, name, path, referrer)
                else:
                    t = self._page(p, t, dev, None, name, path, referrer)
                    t = self._page(p, t, dev, None, "Log In", "/login")
                    if alias_user and rng.random() < 0.7:
                        self._msg(p, t, None, "alias", uid, previousId=dev.anon)
                        p.aliases += 1
                        t += rng.randint(50, 900)
                    else:
                        t = self._identify(
                            p, t, dev, uid, {} if email_change else identify_traits(False)
                        )
                    linked.add(dev.anon)
            remaining = n_visits - v
            if orders_left and (orders_left >= remaining or rng.random() < 0.5):
                orders_left -= 1
                if v > n_pre and rng.random() < P_RESEARCH_BEFORE_ORDER:
                    assert signup_at is not None
                    floor = max(signup_at, times[v - 1]) + HOUR_MS
                    self._research(p, t, floor, None if per_visit else dev, uid)
                self._shop(p, t, dev, uid, "order")
            else:
                self._shop(p, t, dev, uid, "cart" if rng.random() < 0.1 else "browse")
            if company and rng.random() < 0.15:
                traits = {"name": company[1], "industry": company[3] or "OTHER"}
                self._msg(p, t + 1000, dev, "group", uid, groupId=company[0], traits=traits)

        if signup and phone_forms and rng.random() < P_SMS_OPT_IN:
            assert signup_at is not None
            self._sms_consent(p, signup_at, abandon_at or end, devices[0], uid)

        if signup:
            assert signup_at is not None
            # Extra visits after signing up (and before an abandoned cart, which comes last).
            after = signup_at + 10 * MINUTE_MS
            span = max(0, (abandon_at - HOUR_MS if abandon_at else end - 40 * MINUTE_MS) - after)
            if abandon_at is not None:
                dev = rng.choice(devices) if not per_visit else self._device()
                if dev.anon not in linked:
                    t = self._identify(p, abandon_at, dev, uid, {})
                    linked.add(dev.anon)
                else:
                    t = abandon_at
                t = self._page(p, t, dev, uid, "Shop", "/shop", rng.choice(REFERRERS))
                self._shop(p, t, dev, uid, "cart")
            if shared_dev is not None:
                t = after + int(rng.random() * span)
                traits = {"email": email_forms[email_form]}
                t = self._page(p, t, shared_dev, None, "Log In", "/login")
                t = self._identify(p, t, shared_dev, uid, traits)
                self._shop(p, t, shared_dev, uid, "browse")
                planted["shared_device"] += 1
            if junk is not None:
                t = after + int(rng.random() * span)
                traits = {"email": "test@test.com", "phone": JUNK_PHONES[junk % 2]}
                t = self._identify(p, t, devices[0], uid, traits)
                junk_anon = JUNK_ANONYMOUS_IDS[junk % 2]
                self._page(p, t, devices[0], uid, "Account", "/account", anon=junk_anon)
                planted["junk_identifiers"] += 1
            if new_email:
                t = after + int(rng.random() * span)
                dev = devices[0] if not per_visit else self._device()
                t = self._page(p, t, dev, uid, "Account", "/account/settings")
                self._identify(p, t, dev, uid, {"email": new_email})
                planted["email_change"] += 1

        # CRM.
        if has_crm:
            if junk is not None:
                crm_email = JUNK_CRM_EMAILS[junk % 3]
            elif email:
                form = email_form
                if email_variants:
                    form = rng.choice([f for f in range(len(email_forms)) if f != email_form])
                crm_email = email_forms[form]
            else:
                crm_email = ""
            crm_phone = ""
            if phone_forms:
                form = phone_form
                if phone_variants:
                    form = rng.choice([f for f in range(len(phone_forms)) if f != phone_form])
                crm_phone = phone_forms[form]
            contact_id = self._contact(
                p, first, last, crm_email, crm_phone, company, city, country,
                signup, newsletter, first_seen,
            )  # fmt: skip
            if dup_contact:
                if email and (not phone_forms or rng.random() < 0.5):
                    used = email_forms.index(crm_email) if crm_email in email_forms else 0
                    form = rng.choice([f for f in range(len(email_forms)) if f != used])
                    dup_email, dup_phone = email_forms[form], ""
                else:
                    dup_email, dup_phone = "", rng.choice(phone_forms)
                self._contact(
                    p, first, last, dup_email, dup_phone, None, city, country,
                    False, False, first_seen,
                )  # fmt: skip
                planted["duplicate_crm_contacts"] += 1
            self._deals_and_tickets(p, contact_id, company, first, last)

        # Duplicated messages (SDK retries), then write the person's messages in time order.
        p.msgs.sort(key=_first)
        self._write_messages(p)

        # Truth and what was planted.
        truth = self.truth
        for kind, value in p.ids:
            truth.writerow([p.pid, kind, value])
        self.report.identifiers += len(p.ids)
        if any(len(forms) > 1 for forms in p.email_forms.values()):
            planted["email_case_variants"] += 1
        if any(len(forms) > 1 for forms in p.phone_forms.values()):
            planted["phone_format_variants"] += 1
        if pre_signup:
            planted["anonymous_browsing_before_signup"] += 1
        if per_visit:
            planted["new_anonymous_id_per_visit"] += 1
        elif signup and n_dev > 1:
            planted["multiple_devices"] += 1
        if p.aliases:
            planted["alias_calls"] += 1
        if newsletter:
            planted["newsletter_only"] += 1
        if p.revenue >= 500:
            planted["lifetime_revenue_500_plus"] += 1
        if signup and self._abandoned_cart(p):
            planted["cart_abandoners"] += 1

    def _research(
        self, p: _Person, order_at: int, floor: int, device: _Device | None, uid: str
    ) -> None:
        """Browsing before an order: 1-2 signed-in visits in the 1-14 days before it, each
        viewing 2-5 products (purchase intent the propensity model can learn), on `device`
        (None: a new device per visit). Visits that would fall before `floor` (sign-up or the
        previous visit) are not made."""
        rng = self.rng
        made = 0
        for _ in range(1 if rng.random() < 0.6 else 2):
            t = order_at - rng.randint(DAY_MS, 14 * DAY_MS)
            if t <= floor:
                continue
            dev = device or self._device()
            t = self._page(p, t, dev, uid, "Shop", "/shop", rng.choice(REFERRERS))
            if rng.random() < 0.3:
                props = {"query": rng.choice(SEARCH_TERMS)}
                t = self._track(p, t, dev, uid, "Products Searched", props, "/search")
            for product in rng.sample(CATALOG, rng.randint(2, 5)):
                path = f"/products/{product[1].lower()}"
                t = self._page(p, t, dev, uid, "Product", path)
                t = self._track(
                    p, t, dev, uid, "Product Viewed", self._product_props(product), path
                )
            made += 1
        if made:
            self.planted["research_before_order"] += 1

    def _sms_consent(self, p: _Person, after: int, before: int, dev: _Device, uid: str) -> None:
        """An SMS opt-in (server-side, from the checkout form) and, for some, a later STOP."""
        rng = self.rng
        span = max(0, before - HOUR_MS - after)
        t = after + MINUTE_MS + int(rng.random() * span)
        props = {"channel": "sms", "source": rng.choice(("checkout", "account", "popup"))}
        self._track(p, t, dev, uid, "SMS Subscribed", props, "/account")
        self.planted["sms_opt_in"] += 1
        if rng.random() < P_SMS_OPT_OUT:
            t += int(rng.random() * max(0, before - HOUR_MS - t))
            self._track(p, t, None, uid, "SMS Unsubscribed", {"channel": "sms", "keyword": "STOP"})
            self.planted["sms_opt_out"] += 1

    def _abandoned_cart(self, p: _Person) -> bool:
        since = self.end_ms - 7 * DAY_MS
        last_cart = last_order = None
        for ts, msg, *_ in p.msgs:
            event = msg.get("event")
            if event in ("Product Added", "Checkout Started") and ts >= since:
                last_cart = ts
            elif event == "Order Completed":
                last_order = ts
        return last_cart is not None and (last_order is None or last_order < last_cart)

    def _write_messages(self, p: _Person) -> None:
        """Write the person's messages (in time order) and collect their identifiers."""
        random = self.rng.random
        randint = self.rng.randint
        dumps = orjson.dumps
        stamp = self._stamp
        prefixes, clock, milli_z = self.iso_days_b, self.clock_b, self.milli_z_b
        day_files = self.day_files
        ids = p.ids
        written = duplicates = 0
        for ts, msg, offset, sent, received in p.msgs:
            day, rem = divmod(ts, DAY_MS)
            f = day_files.get(day) or self._event_file(ts)
            prefix = prefixes.get(day) or stamp(ts)[:11]
            body = dumps(msg)[:-1]
            if offset:
                parts = [body, b',"timestamp":"', self._iso(ts, offset).encode(), b"", b""]
            else:
                second, milli = divmod(rem, 1000)
                parts = [body, b',"timestamp":"', prefix, clock[second], milli_z[milli]]
            rem += sent - ts
            if rem + received - sent < DAY_MS:  # sentAt and receivedAt on the same day
                second, milli = divmod(rem, 1000)
                parts += (b'","sentAt":"', prefix, clock[second], milli_z[milli])
                second, milli = divmod(rem + received - sent, 1000)
                parts += (b'","receivedAt":"', prefix, clock[second], milli_z[milli], b'"}\n')
            else:
                parts += (b'","sentAt":"', stamp(sent), b'","receivedAt":"', stamp(received))
                parts.append(b'"}\n')
            line = b"".join(parts)
            lines = f.lines
            lines.append(line)
            written += 1
            if random() < P_DUPLICATE_MESSAGE:
                if random() < 0.3:  # a retry: same message, sent and received later
                    later = ts + randint(10_000, 120_000)
                    retried = (stamp(later), stamp(later + randint(20, 600)))
                    line = b"".join(
                        (*parts[:5], b'","sentAt":"', retried[0],
                         b'","receivedAt":"', retried[1], b'"}\n')
                    )  # fmt: skip
                lines.append(line)
                written += 1
                duplicates += 1
            if len(lines) >= _BUFFER_LINES:
                f.flush()

            # Identifiers, as _collect_message (inlined: this runs for every message).
            value = msg.get("userId")
            if value:
                ids[("user_id", value)] = None
            value = msg.get("anonymousId")
            if value:
                if value in JUNK_ANONYMOUS_IDS:
                    self.junk[("anonymous_id", value)] = None
                else:
                    ids[("anonymous_id", value)] = None
            kind = msg["type"]
            if kind == "identify" or kind == "alias":
                self._collect_message(p, msg)
        self.planted["duplicate_messages"] += duplicates
        self.report.events += written

    # ----------------------------------------------------------------------------- truth
    def _add_email(self, p: _Person, raw: str) -> None:
        value = normalize_email(raw)
        if not value:
            return
        if value in JUNK_EMAILS:
            self.junk[("email", value)] = None
            return
        p.ids[("email", value)] = None
        p.email_forms.setdefault(value, {})[raw] = None

    def _add_phone(self, p: _Person, raw: str) -> None:
        if not raw.strip():
            return
        value = normalize_phone(raw)
        if raw in JUNK_PHONES:
            self.junk[("phone", value)] = None
            return
        p.ids[("phone", value)] = None
        p.phone_forms.setdefault(value, {})[raw] = None

    def _add_id(self, p: _Person, kind: str, value: str | None) -> None:
        if not value:
            return
        if kind == "anonymous_id" and value in JUNK_ANONYMOUS_IDS:
            self.junk[(kind, value)] = None
        else:
            p.ids[(kind, value)] = None

    def _collect_message(self, p: _Person, msg: dict) -> None:
        """The identifiers of an alias (previousId) or identify (traits) beyond userId and
        anonymousId, which _write_messages collects."""
        if msg["type"] == "alias":
            self._add_id(p, "anonymous_id", msg.get("previousId"))
        if msg["type"] == "identify":
            traits = msg["traits"]
            if "email" in traits:
                self._add_email(p, traits["email"])
            if "phone" in traits:
                self._add_phone(p, traits["phone"])

    # ----------------------------------------------------------------------------- CRM
    def _company(self) -> tuple[str, str, str, str]:
        rng = self.rng
        if self.companies and rng.random() < 0.7:
            return rng.choice(self.companies)
        k = self.company_number(self.company_count % self.company_number.modulus)
        lap = self.company_count // self.company_number.modulus
        self.company_count += 1
        n_b, n_s = len(COMPANY_WORDS_B), len(COMPANY_SUFFIXES)
        a, b, s = COMPANY_WORDS_A[k // (n_b * n_s)], COMPANY_WORDS_B[(k // n_s) % n_b], k % n_s
        name = f"{a} {b}" + (f" {COMPANY_SUFFIXES[s]}" if COMPANY_SUFFIXES[s] else "")
        slug = f"{a}{b}".lower() + (str(lap + 1) if lap else "")
        domain = slug + (".com", ".io", ".co", ".net", ".ai", ".org")[s]
        self.company_seq += rng.randint(1, 3)
        company_id = str(self.company_seq)
        industry = rng.choice(INDUSTRIES)
        employees = rng.choice(("", "5", "12", "25", "48", "120", "350", "1200", "5000"))
        revenue = (
            "" if rng.random() < 0.3 else str(rng.choice((1, 2, 5, 10, 25, 50, 100)) * 1_000_000)
        )
        if rng.random() < 0.9:
            country, city = "United States", rng.choice(US_CITIES)[0]
        else:
            country, city = "United Kingdom", rng.choice(UK_CITIES)
        created = self.end_ms - rng.randint(30, 1500) * DAY_MS + rng.randint(0, DAY_MS - 1)
        self.companies_w.writerow(
            [company_id, name, domain, industry, employees, revenue, city, country,
             self._hubspot_date(created)]
        )  # fmt: skip
        self.report.companies += 1
        company = (company_id, name, domain, industry)
        self.companies.append(company)
        return company

    def _contact(
        self, p, first, last, email, phone, company, city, country, signup, newsletter, first_seen
    ) -> str:
        rng = self.rng
        self.contact_seq += rng.randint(1, 3)
        contact_id = str(self.contact_seq)
        if p.orders:
            stage = "evangelist" if p.orders >= 3 and rng.random() < 0.3 else "customer"
        elif signup:
            stage = rng.choice(LIFECYCLE_STAGES[1:5])
        elif newsletter:
            stage = "subscriber"
        else:
            stage = rng.choice(LIFECYCLE_STAGES[:2])
        if rng.random() < 0.5:
            created = first_seen + rng.randint(0, 3 * DAY_MS)
        else:
            created = self.end_ms - rng.randint(121, 900) * DAY_MS + rng.randint(0, DAY_MS - 1)
        created = min(created, self.end_ms - HOUR_MS)
        last_activity = ""
        if rng.random() < 0.75:
            last_activity = self._hubspot_date(
                created + int(rng.random() * (self.end_ms - created))
            )
        unsubscribed = "" if rng.random() < 0.2 else ("true" if rng.random() < 0.1 else "false")
        self.contacts.writerow(
            [
                contact_id, first, last, email, phone,
                company[1] if company else "", company[0] if company else "",
                stage, rng.choice(LEAD_STATUSES), self._hubspot_date(created), last_activity,
                unsubscribed, city, country,
            ]
        )  # fmt: skip
        self.report.contacts += 1
        p.ids[("crm_contact_id", contact_id)] = None
        p.contact_ids.append(contact_id)
        self._add_email(p, email)
        self._add_phone(p, phone)
        return contact_id

    def _deals_and_tickets(self, p, contact_id, company, first, last) -> None:
        rng = self.rng
        end = self.end_ms
        if rng.random() < (0.3 if company else 0.06):
            for _ in range(1 if rng.random() < 0.75 else 2):
                self.deal_seq += rng.randint(1, 4)
                created = end - rng.randint(1, 300) * DAY_MS - rng.randint(0, DAY_MS - 1)
                roll = rng.random()
                if roll < 0.35:
                    stage = "closedwon"
                elif roll < 0.55:
                    stage = "closedlost"
                else:
                    stage = rng.choice(OPEN_DEAL_STAGES)
                if stage.startswith("closed"):
                    close = created + int(rng.random() * (end - created))
                else:
                    close = end + rng.randint(7, 120) * DAY_MS
                who = company[1] if company else f"{first} {last}"
                amount = rng.choice((500, 1200, 2500, 4800, 7500, 12000, 25000, 48000))
                self.deals.writerow(
                    [
                        str(self.deal_seq), f"{who} - {rng.choice(DEAL_PRODUCTS)}", stage,
                        "default", f"{amount}.00" if rng.random() < 0.5 else str(amount),
                        self._hubspot_date(close), self._hubspot_date(created), contact_id,
                        company[0] if company else "",
                    ]
                )  # fmt: skip
                self.report.deals += 1
        if rng.random() < (0.25 if p.orders else 0.05):
            for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
                self.ticket_seq += rng.randint(1, 4)
                created = (
                    end - rng.randint(0, WINDOW_DAYS - 1) * DAY_MS - rng.randint(1, DAY_MS - 1)
                )
                status = "Closed" if rng.random() < 0.6 else rng.choice(TICKET_OPEN_STATUSES)
                contacts = contact_id
                if len(p.contact_ids) > 1 and rng.random() < 0.5:
                    contacts = ";".join(p.contact_ids)
                self.tickets.writerow(
                    [
                        str(self.ticket_seq), rng.choice(TICKET_SUBJECTS), status,
                        rng.choice(TICKET_PRIORITIES), rng.choice(TICKET_SOURCES),
                        self._hubspot_date(created), contacts,
                    ]
                )  # fmt: skip
                self.report.tickets += 1

    # ----------------------------------------------------------------------------- bad rows
    def _bad_row(self, kind: str, k: int) -> None:
        """A malformed row: fresh identifiers of nobody, rejected by the loader."""
        rng = self.rng
        if kind == "contacts":
            self.contact_seq += 1
            if k % 2 == 0:
                row = [
                    "", "Broken", "Row", f"import.error.{rng.getrandbits(32):08x}@example.org",
                    "", "", "", "lead", "", self._hubspot_date(self.end_ms - DAY_MS), "", "",
                    "", "",
                ]  # fmt: skip
            else:
                row = [str(self.contact_seq), "Truncated", "Row"]
            self.contacts.writerow(row)
            return
        ts = self.start_ms + int(rng.random() * (WINDOW_DAYS * DAY_MS - HOUR_MS))
        msg = {
            "type": "track",
            "messageId": self._uuid(),
            "anonymousId": self._uuid(),
            "event": "Product Viewed",
            "properties": self._product_props(rng.choice(CATALOG)),
            "context": {"library": LIB_WEB, "ip": "203.0.113.7"},
            "timestamp": self._iso(ts),
            "sentAt": self._iso(ts + 300),
            "receivedAt": self._iso(ts + 450),
        }
        sub = k % 4
        if sub == 1:
            del msg["messageId"]
        elif sub == 2:
            msg["timestamp"] = "not-a-date"
            del msg["sentAt"], msg["receivedAt"]
        elif sub == 3:
            del msg["event"]
        line = json.dumps(msg, separators=(",", ":"))
        if sub == 0:
            line = line[: len(line) // 2]
        self._event_file(ts).lines.append(line.encode() + b"\n")


def _weighted(rng: Random, choices):
    total = sum(w for _, w in choices)
    roll = rng.random() * total
    for value, weight in choices:
        roll -= weight
        if roll < 0:
            return value
    return choices[-1][0]


def generate(
    customers: int,
    seed: int,
    out: Path,
    end: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    bad_rows: int = 10,
    workers: int | None = None,
    part_people: int | None = None,
) -> GenerateReport:
    """Write a synthetic landing directory for `customers` people under `out`.

    Events span the 120 days before `end` (default: today 00:00 UTC; a naive `end` is read as
    UTC). `bad_rows` malformed rows are planted among the events and a few (a third, at least
    two) among the contacts; 0 plants none. Same arguments give byte-identical files.

    Runs of more than `part_people` (default PART_PEOPLE) people are cut into equal parts of
    consecutive people;
    each part has its own random stream and its own event files
    (`events-YYYY-MM-partNNN.jsonl`), and `workers` processes (default: one per CPU) make
    the parts. The CRM files and truth.csv are joined in part order, so the output depends
    on the arguments but not on `workers`. `progress` gets a line at every 5% of people
    (at most every two seconds) and a summary at the end.
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if end is None:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    out = Path(out)
    parts = _parts_for(customers, part_people or PART_PEOPLE)
    workers = max(1, min(parts, workers or os.cpu_count() or 1))
    tracker = _Progress(customers, parts, progress)
    if parts == 1:
        report, _junk = _Generator(customers, seed, out, end, bad_rows).run(
            lambda people, events: tracker.update(0, people, events)
        )
    else:
        report = _generate_parts(customers, seed, out, end, bad_rows, parts, workers, tracker)
    if progress:
        progress(
            f"wrote {report.contacts:,} contacts, {report.companies:,} companies, "
            f"{report.deals:,} deals, {report.tickets:,} tickets, {report.events:,} events, "
            f"{report.identifiers:,} truth rows to {out}"
        )
    return report


class _Progress:
    """Progress lines: people done, events written and the rate, at every 5% of people."""

    def __init__(self, customers: int, parts: int, say: Callable[[str], None] | None) -> None:
        self.total, self.say = customers, say
        self.people, self.events = [0] * parts, [0] * parts
        self.started = self.last = time.monotonic()
        self.step = max(1, customers // 20)
        self.next = self.step

    def update(self, part: int, people: int, events: int) -> None:
        self.people[part], self.events[part] = people, events
        done = sum(self.people)
        if self.say is None or done < self.next:
            return
        now = time.monotonic()
        if done < self.total and now - self.last < _PROGRESS_SECONDS:
            return
        self.last = now
        self.next = (done // self.step + 1) * self.step
        rate = done / (now - self.started) if now > self.started else 0.0
        self.say(
            f"generated {done:,}/{self.total:,} people ({done / self.total:.0%}), "
            f"{sum(self.events):,} events, {rate:,.0f} people/s"
        )


_SHARED_PROGRESS = None  # in a worker process: [people, events] per part, read by the parent


def _init_worker(shared) -> None:
    global _SHARED_PROGRESS
    _SHARED_PROGRESS = shared


def _run_part(
    customers: int,
    seed: int,
    out: Path,
    end: datetime,
    bad_rows: int,
    part: int,
    parts: int,
    parts_dir: Path,
) -> tuple[GenerateReport, list[tuple[str, str]]]:
    generator = _Generator(
        customers, seed, out, end, bad_rows, part, parts, crm_dir=parts_dir / f"{part:04d}"
    )
    shared = _SHARED_PROGRESS

    def progress(people: int, events: int) -> None:
        if shared is not None:
            shared[2 * part], shared[2 * part + 1] = people, events

    return generator.run(progress)


def _generate_parts(
    customers: int,
    seed: int,
    out: Path,
    end: datetime,
    bad_rows: int,
    parts: int,
    workers: int,
    tracker: _Progress,
) -> GenerateReport:
    """Make the parts (in `workers` processes) and join their CRM and truth files."""
    (out / "crm").mkdir(parents=True, exist_ok=True)
    (out / "events").mkdir(parents=True, exist_ok=True)
    _remove_event_files(out / "events")
    parts_dir = out / ".generate-parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    args = [(customers, seed, out, end, bad_rows, part, parts, parts_dir) for part in range(parts)]
    try:
        if workers == 1:
            results = []
            for part, part_args in enumerate(args):
                generator = _Generator(*part_args[:5], part, parts, parts_dir / f"{part:04d}")
                results.append(
                    generator.run(
                        lambda people, events, part=part: tracker.update(part, people, events)
                    )
                )
        else:
            results = _run_workers(args, parts, workers, tracker)
        report = GenerateReport(people=customers, bad_rows=results[0][0].bad_rows)
        report.planted = dict.fromkeys(results[0][0].planted, 0)
        junk: set[tuple[str, str]] = set()
        for part_report, part_junk in results:
            for name in ("contacts", "companies", "deals", "tickets", "events", "identifiers"):
                setattr(report, name, getattr(report, name) + getattr(part_report, name))
            for case, count in part_report.planted.items():
                report.planted[case] += count
            junk.update(part_junk)
        headers = {
            "contacts": CONTACT_HEADER,
            "companies": COMPANY_HEADER,
            "deals": DEAL_HEADER,
            "tickets": TICKET_HEADER,
        }
        for kind, header in headers.items():
            _join(out / "crm" / f"{kind}.csv", header, parts_dir, f"{kind}.csv", parts)
        extra = [["", kind, value] for kind, value in sorted(junk)]
        _join(out / "truth.csv", TRUTH_HEADER, parts_dir, "truth.csv", parts, extra)
        report.identifiers += len(extra)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return report


def _run_workers(args, parts: int, workers: int, tracker: _Progress):
    # fork (Linux) starts workers at once and, unlike spawn, does not re-run the caller's
    # main module, so that a script without a __main__ guard may call generate().
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    shared = context.Array("q", 2 * parts, lock=False)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(shared,)
    ) as pool:
        futures = [pool.submit(_run_part, *part_args) for part_args in args]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
            for part in range(parts):
                tracker.update(part, shared[2 * part], shared[2 * part + 1])
        return [future.result() for future in futures]


def _join(path: Path, header: list[str], parts_dir: Path, name: str, parts: int, extra=()) -> None:
    """Write `path`: the header, each part's file in part order, then `extra` rows."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        f.flush()
        for part in range(parts):
            with (parts_dir / f"{part:04d}" / name).open("rb") as src:
                shutil.copyfileobj(src, f.buffer, 1 << 22)
        f.buffer.flush()
        writer.writerows(extra)
