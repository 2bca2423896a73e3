"""Realistic synthetic B2B journeys, seeded and fast.

Each simulated company has a segment, a business domain (a few buy through a
free-mail address), sometimes an ERP account id, and a decision making unit
of contacts. Its journey goes as far as a realistic funnel lets it:
anonymous research before a sign-up that stitches the cookie to the contact,
newsletters, product and pricing views, account-manager meetings and demos,
quotes, carts (some abandoned), orders paid on invoice, shipments,
deliveries, invoices, surveys and repeat orders; some deals stall. A small
share of events lack an event_id (the schema derives one), are delivered
twice, or are malformed (they must land in dead letters).

`simulate(...)` yields one JSON line per event (bytes, no newline), sorted by
event time; the same arguments give byte-identical output.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.event import format_ms

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000

KINDS = ["Kwekerij", "Installatiebedrijf", "Groothandel", "Tuinbouw", "Bouwbedrijf", "Transport", "Loonbedrijf"]
NAMES = ["de Vries", "Jansen", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "Bos"]
SEGMENTS = ["tomato growers", "flower growers", "installers", "wholesalers", "construction", "logistics"]
FIRST = ["jan", "piet", "anna", "sanne", "tom", "lisa", "mark", "eva", "daan", "emma", "bram", "fleur"]
FREE_MAIL = ["gmail.com", "outlook.com", "hotmail.com", "live.nl", "ziggo.nl", "kpnmail.nl"]
ROLES = ["initiator", "gatekeeper", "influencer", "decider", "buyer", "user"]
PAGES = ["/blog/afwatering", "/blog/energie-besparen", "/cases/kas-westland", "/whitepaper/substraat", "/video/installatie"]
SKUS = [("SUB-10", 12.5), ("KAS-200", 840.0), ("POMP-7", 310.0), ("SENS-3", 95.0), ("NET-50", 42.0)]


class _Account:
    """One simulated company and its people."""

    __slots__ = ("index", "domain", "segment", "erp", "contacts", "free_mail")

    def __init__(self, rnd: random.Random, index: int) -> None:
        self.index = index
        kind, name = rnd.choice(KINDS), rnd.choice(NAMES)
        self.domain = f"{kind}-{name}-{index}".lower().replace(" ", "") + ".nl"
        self.segment = rnd.choice(SEGMENTS)
        self.erp = f"erp-{10000 + index}" if rnd.random() < 0.6 else None
        self.free_mail = rnd.random() < 0.08
        size = 1 if self.free_mail else rnd.randint(2, 5)
        roles = rnd.sample(ROLES, size)
        self.contacts: list[tuple[str, str, str]] = []
        for j, role in enumerate(roles):
            first = rnd.choice(FIRST)
            domain = rnd.choice(FREE_MAIL) if self.free_mail else self.domain
            self.contacts.append((f"c-{index}-{j}", f"{first}.{index}.{j}@{domain}", role))


class _Journey:
    """Builds one account's events in time order."""

    def __init__(self, rnd: random.Random, account: _Account, seed: int, t0: int, end: int) -> None:
        self.rnd = rnd
        self.account = account
        self.t = t0
        self.end = end
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.prefix = f"s{seed}-{account.index}-"
        self.cookie = f"ck{seed}x{account.index}"

    def wait(self, low: int, high: int) -> bool:
        """Advance time; False once past the simulated period."""
        self.t += low + int(self.rnd.random() * (high - low))
        return self.t < self.end

    def emit(self, channel: str, type_: str, who: str, props: dict[str, Any] | None = None) -> None:
        acct = self.account
        contacts = acct.contacts
        contact = contacts[int(self.rnd.random() * len(contacts))]
        event: dict[str, Any] = {"channel": channel, "type": type_}
        if who == "anonymous":
            event["anonymous_id"] = self.cookie
        elif who == "signup":
            event.update(anonymous_id=self.cookie, contact_id=contact[0], email=contact[1])
        elif who == "erp" and acct.erp:
            event.update(account_id=acct.erp, contact_id=contact[0])
        else:
            event.update(contact_id=contact[0], email=contact[1])
        event["properties"] = props or {}
        if who != "anonymous":
            event["context"] = {"dmu_role": contact[2], "segment": acct.segment}
        self.events.append((self.t, event))

    def research(self) -> None:
        for _ in range(self.rnd.randint(2, 8)):
            kind = self.rnd.choice(["page_view", "content_view", "content_view", "search"])
            props = {"url": "https://shop.example" + self.rnd.choice(PAGES)}
            if kind == "search":
                props = {"query": self.rnd.choice(["substraat", "kasverwarming", "pomp"])}
            self.emit("web", kind, "anonymous", props)
            if not self.wait(2 * HOUR, 4 * DAY):
                return

    def newsletter(self) -> None:
        campaign = f"nl-{self.t // (7 * DAY)}"
        self.emit("email", "sent", "contact", {"campaign_id": campaign})
        self.emit("email", "delivered", "contact", {"campaign_id": campaign})
        roll = self.rnd.random()
        if roll < 0.03:
            self.emit("email", "bounce", "contact", {"campaign_id": campaign})
        elif roll < 0.45:
            self.wait(MINUTE, 2 * DAY)
            self.emit("email", "open", "contact", {"campaign_id": campaign})
            if roll < 0.2:
                self.emit("email", "click", "contact", {"campaign_id": campaign, "url": "https://shop.example/producten"})
        elif roll < 0.47:
            self.emit("email", "unsubscribe", "contact", {"campaign_id": campaign})

    def consider(self) -> None:
        for _ in range(self.rnd.randint(2, 6)):
            sku = self.rnd.choice(SKUS)[0]
            kind = self.rnd.choice(["product_view", "product_view", "pricing_view", "review_view", "compare", "page_view"])
            self.emit("web", kind, "contact", {"url": f"https://shop.example/p/{sku}", "sku": sku})
            if not self.wait(HOUR, 3 * DAY):
                return
        if self.rnd.random() < 0.5:
            self.emit("sales", self.rnd.choice(["meeting", "call", "demo"]), "contact", {"owner": "am-1"})

    def cart(self, abandon: bool) -> bool:
        cart = f"cart-{self.account.index}-{self.t // HOUR}"
        sku, price = self.rnd.choice(SKUS)
        items = [{"sku": sku, "quantity": self.rnd.randint(1, 20), "price": price}]
        self.emit("web", "add_to_cart", "contact", {"cart_id": cart, "items": items})
        if self.rnd.random() < 0.2:
            self.wait(MINUTE, 30 * MINUTE)
            self.emit("web", "remove_from_cart", "contact", {"cart_id": cart, "sku": sku})
        if abandon:
            return self.wait(5 * HOUR, 6 * DAY)
        self.wait(5 * MINUTE, 2 * HOUR)
        self.emit("web", "checkout_started", "contact", {"cart_id": cart})
        return self.wait(MINUTE, 40 * MINUTE)

    def quote(self, stall: bool) -> bool:
        quote = f"q-{self.account.index}-{self.t // DAY}"
        self.emit("order", "quote_requested", "erp", {"quote_id": quote})
        self.wait(4 * HOUR, 3 * DAY)
        self.emit("order", "quote_sent", "erp", {"quote_id": quote, "amount": round(self.rnd.uniform(500, 25000), 2), "currency": "EUR"})
        if stall:
            return False
        if not self.wait(HOUR, 6 * DAY):
            return False
        if self.rnd.random() < 0.12:
            self.emit("order", "quote_rejected", "erp", {"quote_id": quote})
            return False
        self.emit("order", "quote_accepted", "erp", {"quote_id": quote})
        return self.wait(HOUR, 2 * DAY)

    def order(self, number: int) -> bool:
        order_id = f"o-{self.account.index}-{number}"
        sku, price = self.rnd.choice(SKUS)
        quantity = self.rnd.randint(1, 40)
        props = {
            "order_id": order_id, "amount": round(price * quantity, 2), "currency": "EUR",
            "payment_terms": "invoice" if self.rnd.random() < 0.85 else "immediate",
            "items": [{"sku": sku, "quantity": quantity, "price": price}],
        }
        self.emit("order", "order_placed", "erp", props)
        if number == 1 and self.rnd.random() < 0.4:
            self.emit("sales", "deal_won", "contact", {"deal_id": f"d-{self.account.index}"})
        if not self.wait(HOUR, 2 * DAY):
            return False
        self.emit("order", "order_shipped", "erp", {"order_id": order_id})
        if not self.wait(6 * HOUR, 3 * DAY):
            return False
        self.emit("order", "order_delivered", "erp", {"order_id": order_id})
        self.emit("order", "invoice_sent", "erp", {"order_id": order_id, "amount": props["amount"]})
        if not self.wait(5 * DAY, 30 * DAY):
            return False
        self.emit("order", "invoice_paid", "erp", {"order_id": order_id, "amount": props["amount"]})
        return True

    def build(self, depth: int, abandon: bool, stall: bool) -> None:
        """depth: 0 awareness .. 5 loyalty."""
        self.research()
        self.emit("web", self.rnd.choice(["signup", "form_submit", "login"]), "signup",
                  {"url": "https://shop.example/aanmelden"})
        for _ in range(self.rnd.randint(0, 3)):
            if self.wait(DAY, 10 * DAY):
                self.newsletter()
        if depth < 1 or not self.wait(HOUR, 5 * DAY):
            return
        self.consider()
        if abandon and not self.cart(abandon=True):
            return
        if depth < 2:
            if stall and self.rnd.random() < 0.5:
                self.emit("sales", "demo", "contact", {"owner": "am-2"})
            return
        if self.account.erp and not self.quote(stall):
            return
        if stall:
            return
        if not self.cart(abandon=False) or depth < 3:
            return
        if not self.order(1) or depth < 4:
            return
        if depth >= 5:
            if self.rnd.random() < 0.5:
                self.emit("web", "survey_response", "contact", {"score": self.rnd.randint(6, 10)})
            for n in range(2, self.rnd.randint(3, 5)):
                if not self.wait(7 * DAY, 30 * DAY) or not self.order(n):
                    return


_MALFORMED = [
    lambda ts, i: b'{"channel": "web", "type": "page_view", "occurred_at": ',
    lambda ts, i: orjson.dumps({"channel": "fax", "type": "page_view", "occurred_at": ts, "email": f"x{i}@fax.nl"}),
    lambda ts, i: orjson.dumps({"channel": "web", "type": "page_view", "occurred_at": ts}),
    lambda ts, i: orjson.dumps({"channel": "web", "type": "page_view", "occurred_at": ts[:19], "anonymous_id": f"m{i}"}),
    lambda ts, i: orjson.dumps({"channel": "web", "type": "page_view", "anonymous_id": f"m{i}"}),
    lambda ts, i: orjson.dumps({"channel": "web", "type": 7, "occurred_at": ts, "anonymous_id": f"m{i}"}),
    lambda ts, i: orjson.dumps([{"channel": "web"}]),
]
_FUNNEL = [1.0, 0.75, 0.5, 0.36, 0.3, 0.18]


def _depth(rnd: random.Random) -> int:
    roll = rnd.random()
    return max(d for d, share in enumerate(_FUNNEL) if roll <= share)


def simulate(
    accounts: int = 200,
    days: int = 90,
    seed: int = 7,
    start: datetime | None = None,
    invalid_share: float = 0.005,
    duplicate_share: float = 0.003,
    missing_id_share: float = 0.01,
) -> Iterator[bytes]:
    """JSON lines of simulated events in event-time order (see the module docstring)."""
    rnd = random.Random(seed)
    t0 = int((start or DEFAULT_START).timestamp() * 1000)
    end = t0 + days * DAY
    timeline: list[tuple[int, str, dict[str, Any]]] = []
    for index in range(accounts):
        journey = _Journey(rnd, _Account(rnd, index), seed, t0 + rnd.randint(0, max(1, days * DAY * 2 // 3)), end)
        depth = _depth(rnd)
        journey.build(depth, abandon=rnd.random() < 0.25, stall=depth in (1, 2) and rnd.random() < 0.35)
        for n, (ts, event) in enumerate(journey.events):
            if ts < end:
                timeline.append((ts, f"{journey.prefix}{n}", event))
    timeline.sort(key=lambda item: (item[0], item[1]))
    random_, dumps = rnd.random, orjson.dumps
    no_id = invalid_share + missing_id_share
    twice = no_id + duplicate_share
    for ts, event_id, event in timeline:
        roll = random_()
        if roll < invalid_share:
            yield _MALFORMED[rnd.randrange(len(_MALFORMED))](format_ms(ts), event_id)
            continue
        event["occurred_at"] = format_ms(ts)
        if roll >= no_id:
            event["event_id"] = event_id
        line = dumps(event)
        yield line
        if no_id <= roll < twice:
            yield line
