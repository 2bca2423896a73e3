"""The simulated world: a Dutch horticulture supplier, its catalogue and its B2B customers.

Companies are growers, installers, wholesalers and garden centres, each in a
segment, with a business email domain (a few sole traders use free-mail), an
ERP account id for some, and a decision making unit of contacts. Everything
here is plain data built from one seeded `random.Random`, so a company is the
same for the same seed and index whatever else is simulated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import accumulate

import orjson

from journeys.schemas.record import DMU_ROLES

SITE = "https://www.kasplus.nl"
ACCOUNT_MANAGERS: tuple[str, ...] = ("am-henk", "am-ilse", "am-ruud", "am-noor")

#: segment -> (company kinds, segment group used to pick products and content)
SEGMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "tomato growers": (("Kwekerij", "Tuinbouwbedrijf", "Glastuinbouw"), "grower"),
    "pepper growers": (("Kwekerij", "Tuinbouwbedrijf"), "grower"),
    "flower growers": (("Bloemenkwekerij", "Rozenkwekerij", "Kwekerij"), "flower"),
    "potted plant growers": (("Potplantenkwekerij", "Kwekerij"), "flower"),
    "climate installers": (("Installatiebedrijf", "Klimaattechniek"), "installer"),
    "electrical installers": (("Elektrotechniek", "Installatietechniek"), "installer"),
    "horticulture wholesalers": (("Groothandel", "Handelsonderneming"), "wholesale"),
    "garden centres": (("Tuincentrum",), "wholesale"),
}
SEGMENT_NAMES: tuple[str, ...] = tuple(SEGMENTS)
#: Relative number of companies per segment (growers dominate the customer base).
SEGMENT_WEIGHTS: tuple[int, ...] = (5, 3, 4, 2, 3, 2, 2, 1)

SURNAMES: tuple[str, ...] = (
    "de Vries",
    "Jansen",
    "van Dijk",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Leeuwen",
    "Dekker",
    "Brouwer",
    "de Wit",
    "Dijkstra",
    "Smits",
    "de Graaf",
    "van der Meer",
    "Kok",
    "Jacobs",
    "Vermeulen",
    "van den Berg",
    "Koster",
    "Prins",
    "Post",
    "Kuipers",
    "Verbeek",
    "Hoekstra",
    "van Vliet",
    "Schouten",
    "Zwart",
)
PLACES: tuple[str, ...] = (
    "Westland",
    "Naaldwijk",
    "Aalsmeer",
    "Honselersdijk",
    "Venlo",
    "Bleiswijk",
    "Emmen",
    "Pijnacker",
    "Maasdijk",
    "De Lier",
    "Bommelerwaard",
    "Berkel",
    "Rijsenhout",
    "Horst",
    "Zevenhuizen",
    "Barendrecht",
    "Monster",
    "Poeldijk",
    "Steenbergen",
    "Dinteloord",
)
FIRST_NAMES: tuple[str, ...] = (
    "jan",
    "piet",
    "kees",
    "anna",
    "sanne",
    "tom",
    "lisa",
    "mark",
    "eva",
    "daan",
    "emma",
    "bram",
    "fleur",
    "joost",
    "marieke",
    "ruben",
    "ingrid",
    "wouter",
    "femke",
    "sander",
    "linda",
    "gert",
)
FREE_MAIL: tuple[str, ...] = (
    "gmail.com",
    "outlook.com",
    "hotmail.com",
    "live.nl",
    "ziggo.nl",
    "kpnmail.nl",
)

#: (sku, title, price in EUR, segment groups that buy it)
PRODUCTS: tuple[tuple[str, str, float, str], ...] = (
    ("SUB-RW-100", "Steenwol substraatmat 100 cm", 4.85, "grower flower"),
    ("DRIP-200", "Druppelslang 200 m", 129.0, "grower flower wholesale"),
    ("POMP-B7", "Bemestingspomp 7 m3/h", 1490.0, "grower flower installer"),
    ("SENS-CLIM", "Draadloze klimaatsensor", 245.0, "grower flower installer"),
    ("LED-600", "LED groeilamp 600 W", 689.0, "grower flower installer wholesale"),
    ("SCHERM-E", "Energiescherm per 100 m2", 1150.0, "grower flower installer"),
    ("BIO-HOMMEL", "Hommelvolk bestuiving", 89.0, "grower"),
    ("CO2-DOS", "CO2 doseerunit", 2350.0, "grower installer"),
    ("TRAY-40", "Kweektray 40 cellen (100 st)", 38.5, "flower wholesale"),
    ("FUST-EM", "Emmerfust bloemen (50 st)", 62.0, "flower wholesale"),
    ("WP-KAS", "Warmtepomp kasverwarming", 18900.0, "grower installer"),
    ("VENT-AX", "Axiaalventilator", 410.0, "grower flower installer"),
    ("KABEL-25", "Installatiekabel 25 m", 54.0, "installer wholesale"),
    ("PVC-50", "PVC afvoerbuis 50 mm (10 st)", 27.5, "installer wholesale"),
    ("POT-12", "Kweekpot 12 cm (500 st)", 71.0, "flower wholesale"),
)

#: Research content per segment group (blogs, cases, whitepapers, videos).
CONTENT: dict[str, tuple[str, ...]] = {
    "grower": (
        "/blog/energie-besparen-in-de-kas",
        "/kennisbank/substraat-kiezen",
        "/cases/tomatenkweker-westland",
        "/whitepaper/led-belichting-rendement",
        "/video/druppelsysteem-onderhoud",
        "/blog/co2-doseren-zonder-verspilling",
    ),
    "flower": (
        "/cases/rozenkweker-aalsmeer",
        "/blog/houdbaarheid-snijbloemen",
        "/whitepaper/belichting-potplanten",
        "/video/bemesting-op-maat",
        "/kennisbank/fust-en-logistiek",
    ),
    "installer": (
        "/blog/warmtepomp-subsidie-2026",
        "/whitepaper/klimaatregeling-kas",
        "/cases/installateur-venlo",
        "/video/sensor-installatie",
        "/kennisbank/aansluitschema-led",
    ),
    "wholesale": (
        "/blog/assortiment-voorjaar",
        "/kennisbank/staffelkorting",
        "/cases/groothandel-barendrecht",
        "/whitepaper/inkoop-op-rekening",
    ),
}
PAGES: tuple[str, ...] = ("/", "/producten", "/over-ons", "/contact", "/service", "/vacatures")
SEARCHES: dict[str, tuple[str, ...]] = {
    "grower": ("substraat", "druppelslang", "co2 dosering", "hommels", "led belichting"),
    "flower": ("emmerfust", "kweektray", "belichting potplanten", "bemesting"),
    "installer": ("warmtepomp", "klimaatsensor", "installatiekabel", "ventilator"),
    "wholesale": ("staffelprijs", "pallet korting", "levertijd", "kweekpot"),
}
REFERRERS: tuple[str, ...] = (
    "https://www.google.nl/",
    "https://www.google.nl/",
    "https://www.linkedin.com/",
    "https://www.bing.com/",
    "https://www.groentenfruithuis.nl/",
    "",
)
#: Which DMU roles a company of n contacts has (an owner-run firm holds every role).
ROLE_SETS: dict[int, tuple[tuple[str, ...], ...]] = {
    1: (DMU_ROLES,),
    2: (("initiator", "influencer", "user"), ("decider", "buyer", "gatekeeper")),
    3: (("initiator", "user"), ("influencer", "gatekeeper"), ("decider", "buyer")),
    4: (("initiator", "user"), ("influencer",), ("gatekeeper", "buyer"), ("decider",)),
    5: (("initiator",), ("influencer", "user"), ("gatekeeper",), ("buyer",), ("decider",)),
    6: tuple((role,) for role in DMU_ROLES),
}
JOB_MAILBOXES: dict[str, str] = {"buyer": "inkoop", "gatekeeper": "info", "user": "teeltmanager"}
#: Identity kinds: what each source knows about a contact.
#: anon = cookie only (before sign-up), web = cookie + logged-in contact, signup = cookie,
#: contact and email (the stitching event), mail = the email service, crm = the CRM and the
#: webshop's order system, erp = the ERP (its account id and the contact).
IDENTITY_KINDS: tuple[str, ...] = ("anon", "web", "signup", "mail", "crm", "erp")


@dataclass(slots=True)
class Contact:
    """One person of a company's DMU: ids, email, roles and the cookie of their browser."""

    contact_id: str
    email: str
    roles: tuple[str, ...]
    cookie: str
    #: the JSON context object per role ("" for the segment alone), shared by the segment.
    contexts: dict[str, bytes] = field(default_factory=dict)
    #: the identity members as JSON text (`"contact_id":"c-1","email":...`) per source
    #: (see `IDENTITY_KINDS`), encoded once for all of the contact's events.
    ids: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Company:
    """One simulated customer account."""

    index: int
    name: str
    segment: str
    group: str
    domain: str | None
    erp_id: str | None
    contacts: list[Contact]
    products: list[tuple[str, str, float, str]]
    account_manager: str

    def actor(self, role: str) -> Contact:
        """The contact who plays `role` (small firms have one person in several roles)."""
        for contact in self.contacts:
            if role in contact.roles:
                return contact
        return self.contacts[0]


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


_SLUGS: dict[str, str] = {
    name: _slug(name)
    for name in SURNAMES + PLACES + tuple(kind for kinds, _ in SEGMENTS.values() for kind in kinds)
}
#: segment -> role ("" for none) -> JSON context object, shared by every event of that segment.
_CONTEXTS: dict[str, dict[str, bytes]] = {
    segment: {"": orjson.dumps({"segment": segment})}
    | {role: orjson.dumps({"dmu_role": role, "segment": segment}) for role in DMU_ROLES}
    for segment in SEGMENTS
}
_SEGMENT_CUMULATIVE: tuple[int, ...] = tuple(accumulate(SEGMENT_WEIGHTS))
#: Contacts per company (DMU size) and how common each size is.
_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
_SIZE_CUMULATIVE: tuple[int, ...] = tuple(accumulate((2, 4, 5, 4, 2, 1)))
_PRODUCTS_BY_GROUP: dict[str, list[tuple[str, str, float, str]]] = {
    group: [p for p in PRODUCTS if group in p[3]] for group in CONTENT
}


def _contact(
    rnd: random.Random,
    company_index: int,
    number: int,
    roles: tuple[str, ...],
    surname: str,
    domain: str | None,
    segment: str,
) -> Contact:
    random = rnd.random
    first = FIRST_NAMES[int(random() * len(FIRST_NAMES))]
    last = _SLUGS[surname] if random() < 0.5 else _SLUGS[SURNAMES[int(random() * len(SURNAMES))]]
    if domain is None:
        email = f"{first}{last}{company_index}@{FREE_MAIL[int(random() * len(FREE_MAIL))]}"
    elif number > 0 and roles[0] in JOB_MAILBOXES and rnd.random() < 0.4:
        email = f"{JOB_MAILBOXES[roles[0]]}@{domain}"
    else:
        email = f"{first}.{last}@{domain}" if number == 0 else f"{first}.{last}{number}@{domain}"
    return Contact(
        contact_id=f"c-{100000 + company_index * 8 + number}",
        email=email,
        roles=roles,
        cookie=f"anon-{rnd.getrandbits(64):016x}",
        contexts=_CONTEXTS[segment],
    )


def _identities(contact: Contact, erp_id: str | None) -> None:
    # Every id and address is plain ASCII without quotes or backslashes, so the JSON
    # members can be written directly (the tests parse every line).
    anon = b'"anonymous_id":"%s"' % contact.cookie.encode()
    cid = b'"contact_id":"%s"' % contact.contact_id.encode()
    email = b'"email":"%s"' % contact.email.encode()
    crm = cid + b"," + email
    contact.ids.update(
        anon=anon,
        web=anon + b"," + cid,
        signup=anon + b"," + crm,
        mail=email,
        crm=crm,
        erp=b'"account_id":"%s",%s' % (erp_id.encode(), cid) if erp_id else crm,
    )


def make_company(rnd: random.Random, index: int) -> Company:
    """The company at `index`; unique names, domains and ids for every index."""
    segment = rnd.choices(SEGMENT_NAMES, cum_weights=_SEGMENT_CUMULATIVE)[0]
    kinds, group = SEGMENTS[segment]
    kind, surname, place = rnd.choice(kinds), rnd.choice(SURNAMES), rnd.choice(PLACES)
    name = f"{kind} {surname} {place}"
    sole_trader = rnd.random() < 0.07
    domain = None if sole_trader else f"{_SLUGS[kind]}-{_SLUGS[surname]}-{_SLUGS[place]}-{index}.nl"
    size = 1 if sole_trader else rnd.choices(_SIZES, cum_weights=_SIZE_CUMULATIVE)[0]
    contacts = [
        _contact(rnd, index, n, roles, surname, domain, segment)
        for n, roles in enumerate(ROLE_SETS[size])
    ]
    has_erp = rnd.random() < (0.3 if sole_trader else 0.6)
    erp_id = f"erp-{10000 + index}" if has_erp else None
    for contact in contacts:
        _identities(contact, erp_id)
    products = _PRODUCTS_BY_GROUP[group]
    return Company(
        index=index,
        name=name,
        segment=segment,
        group=group,
        domain=domain,
        erp_id=erp_id,
        contacts=contacts,
        products=products,
        account_manager=rnd.choice(ACCOUNT_MANAGERS),
    )
