"""One account's journey as a story: what its people do, in time order, across all channels.

A `Plan` says how far the account gets (the funnel), whether it is sales-led
(account manager, demos, quotes) or buys in the webshop, and which troubles
it meets (an abandoned cart, a stalled deal). `Story.run` turns that into
events: anonymous research, the sign-up that stitches the cookie to the
contact, product research by other DMU members, meetings, quotes, carts,
orders on invoice, shipments, invoices, surveys and repeat orders; the
supplier's newsletters are laid over the top. Times follow office hours most
of the time, and real durations, so the default alert thresholds (4h carts,
14d deals) are met by the accounts meant to meet them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from orjson import dumps

from journeys.producers.simulator_world import (
    CONTENT,
    PAGES,
    REFERRERS,
    SEARCHES,
    SITE,
    Company,
    Contact,
)
from journeys.schemas.record import KNOWN_TYPES

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T = TypeVar("T")

#: (ts, event_id, the event's JSON after its event_id and occurred_at: `"channel":...}`)
Raw = tuple[int, bytes, bytes]

#: channel -> type -> the JSON members that open an event's tail.
HEADS: dict[str, dict[str, bytes]] = {
    channel: {t: b'"channel":"%s","type":"%s",' % (channel.encode(), t.encode()) for t in types}
    for channel, types in KNOWN_TYPES.items()
}


def encode(
    channel: str, type_: str, ident: bytes, props: dict[str, Any], context: bytes | None
) -> bytes:
    """An event's JSON tail: channel, type, identity members, properties and context."""
    if context is None:
        return b'%s%s,"properties":%s}' % (HEADS[channel][type_], ident, dumps(props))
    return b'%s%s,"properties":%s,"context":%s}' % (
        HEADS[channel][type_],
        ident,
        dumps(props),
        context,
    )


ANONYMOUS_ONLY = -1
AWARENESS, CONSIDERATION, DECISION, PURCHASE, DELIVERY, LOYALTY = range(6)


@dataclass(slots=True, frozen=True)
class Plan:
    """How far an account gets and what happens on the way."""

    depth: int  # ANONYMOUS_ONLY or the last phase reached (AWARENESS .. LOYALTY)
    sales_led: bool  # account manager and quotes rather than the webshop alone
    stall_then_revive: bool  # a deal goes quiet for more than 14 days, then resumes
    abandon_then_return: bool  # a cart is left for hours or days, then checked out
    existing_customer: bool  # a loyal customer already before the period starts


@dataclass(slots=True, frozen=True)
class Campaign:
    """One newsletter send, to every subscribed contact."""

    ts: int
    campaign_id: str
    subject: str
    paths: dict[str, str]  # segment group -> landing page (content is personalised)


class Story:
    """Builds one account's events (`simulator_plot.tell` plays the scenes)."""

    def __init__(
        self,
        company: Company,
        rnd: random.Random,
        start: int,
        end: int,
        campaigns: list[Campaign],
        prefix: bytes,
    ) -> None:
        self.c = company
        self.prefix = prefix  # event ids are the prefix and a serial number
        self.rnd = rnd
        self.random = rnd.random
        self.t = start
        self.end = end
        self.campaigns = campaigns
        self.events: list[Raw] = []
        self.quiet: list[tuple[int, int]] = []  # windows in which the account does nothing
        self.subscribed: list[tuple[Contact, int]] = []
        self.orders = 0
        self.quotes = 0
        self.carts = 0
        self.deal: str | None = None
        self.known: set[str] = set()  # contacts whose cookie is stitched to them

    # -- primitives -------------------------------------------------------------------------

    def between(self, low: int, high: int) -> int:
        """A whole number in [low, high] (faster than `randint`, and as deterministic)."""
        return low + int(self.random() * (high - low + 1))

    def pick(self, options: Sequence[T]) -> T:
        """One of the options (faster than `choice`, and as deterministic)."""
        return options[int(self.random() * len(options))]

    def wait(self, low: int, high: int) -> bool:
        """Let time pass (snapped to office hours mostly); False once past the period."""
        t = self.t + low + int(self.random() * (high - low))
        day, rest = divmod(t, DAY)
        if ((day + 3) % 7 >= 5 or not 7 * HOUR <= rest < 17 * HOUR) and self.random() < 0.88:
            if rest >= 7 * HOUR:
                day += 1
            while (day + 3) % 7 >= 5:  # 1970-01-01 was a Thursday
                day += 1
            t = day * DAY + 7 * HOUR + self.between(0, 3 * HOUR)
        self.t = t
        return t < self.end

    def soon(self, low: int, high: int) -> None:
        """A moment later, without office-hour snapping (clicks, deliveries of mail)."""
        self.t += low + int(self.random() * (high - low))

    def emit(
        self,
        channel: str,
        type_: str,
        who: Contact,
        kind: str,
        role: str | None,
        props: dict[str, Any],
    ) -> None:
        """Record one event at the current time.

        `role` is the DMU role acting (its context names the segment too); "" for the
        supplier acting on the contact (segment only); None for an unknown visitor.
        """
        context = None if role is None else who.contexts[role]
        events = self.events
        events.append(
            (
                self.t,
                b"%s%05x" % (self.prefix, len(events)),
                encode(channel, type_, who.ids[kind], props, context),
            )
        )

    def add(
        self,
        ts: int,
        channel: str,
        type_: str,
        ident: bytes,
        props: dict[str, Any],
        context: bytes | None,
    ) -> None:
        """Record one event at `ts` (scenes laid over the story, such as newsletters)."""
        events = self.events
        events.append(
            (
                ts,
                b"%s%05x" % (self.prefix, len(events)),
                encode(channel, type_, ident, props, context),
            )
        )

    def go_quiet(self, until: int) -> None:
        """Nothing from the account until `until` (a stalled deal): mail goes unread too."""
        self.quiet.append((self.t, until))

    def _is_quiet(self, ts: int) -> bool:
        for low, high in self.quiet:
            if low <= ts < high:
                return True
        return False

    def _page(self, path: str) -> str:
        return SITE + path

    # -- awareness ----------------------------------------------------------------------------

    def browse(self, who: Contact, kind: str, visits: int, spread: int) -> bool:
        """Research: blogs, cases, videos, search, a few general pages."""
        rnd, group = self.rnd, self.c.group
        role = None if kind == "anon" else who.roles[0]
        for _ in range(visits):
            roll = rnd.random()
            if roll < 0.55:
                self.emit(
                    "web",
                    "content_view",
                    who,
                    kind,
                    role,
                    {
                        "url": self._page(self.pick(CONTENT[group])),
                        "referrer": self.pick(REFERRERS),
                    },
                )
            elif roll < 0.8:
                self.emit(
                    "web", "page_view", who, kind, role, {"url": self._page(self.pick(PAGES))}
                )
            else:
                query = self.pick(SEARCHES[group])
                self.emit(
                    "web",
                    "search",
                    who,
                    kind,
                    role,
                    {
                        "query": query,
                        "url": self._page("/zoeken?q=" + query.replace(" ", "+")),
                    },
                )
            if not self.wait(10 * MINUTE, spread):
                return False
            if rnd.random() < 0.5:
                self.soon(MINUTE, 8 * MINUTE)  # a second page in the same visit
        return True

    def identify(self, who: Contact, type_: str, form: str) -> None:
        """The sign-up, login or form that ties the browser's cookie to the contact."""
        path = "/formulier/" + form.replace(" ", "-") if type_ == "form_submit" else "/aanmelden"
        props: dict[str, Any] = {"url": self._page(path if type_ != "login" else "/inloggen")}
        if type_ != "login":
            props["form"] = form
            props["company"] = self.c.name
        self.emit("web", type_, who, "signup", who.roles[0], props)
        self.known.add(who.contact_id)
        if type_ == "signup" or self.rnd.random() < 0.5:
            self.subscribe(who, self.t)

    def subscribe(self, who: Contact, since: int) -> None:
        """The contact gets the newsletters sent after `since`."""
        if all(other is not who for other, _ in self.subscribed):
            self.subscribed.append((who, since))

    def make_known(self, who: Contact, how: str = "signup") -> bool:
        """A contact not yet seen on the web: a short anonymous visit, then a sign-up."""
        if who.contact_id in self.known:
            return True
        if not self.browse(who, "anon", self.between(1, 3), 2 * DAY):
            return False
        self.identify(who, how, "webshop account")
        return True

    # -- consideration ------------------------------------------------------------------------

    def compare(self, who: Contact, kind: str, views: int) -> bool:
        """Product, pricing and review pages; comparisons of a few products."""
        rnd = self.rnd
        role = (
            None if kind == "anon" else "influencer" if "influencer" in who.roles else who.roles[0]
        )
        for _ in range(views):
            sku, title, _price, _ = self.pick(self.c.products)
            roll = rnd.random()
            url = self._page(f"/producten/{sku.lower()}")
            if roll < 0.5:
                self.emit(
                    "web", "product_view", who, kind, role, {"url": url, "sku": sku, "title": title}
                )
            elif roll < 0.68:
                self.emit(
                    "web", "pricing_view", who, kind, role, {"url": url + "#prijzen", "sku": sku}
                )
            elif roll < 0.85:
                self.emit(
                    "web", "review_view", who, kind, role, {"url": url + "#reviews", "sku": sku}
                )
            else:
                skus = sorted({sku, self.pick(self.c.products)[0], self.pick(self.c.products)[0]})
                self.emit(
                    "web",
                    "compare",
                    who,
                    kind,
                    role,
                    {"url": self._page("/vergelijk"), "skus": skus},
                )
            if not self.wait(2 * MINUTE, 2 * DAY):
                return False
        return True

    def sales_touch(self, type_: str, who: Contact, role: str) -> None:
        """A call, meeting or demo by the account manager."""
        props: dict[str, Any] = {"owner": self.c.account_manager, "deal_id": self._deal()}
        if type_ != "call":
            props["duration_min"] = self.pick((30, 45, 60, 90))
            props["location"] = self.pick(("on site", "online", "showroom"))
        self.emit("sales", type_, who, "crm", role, props)

    def _deal(self) -> str:
        if self.deal is None:
            self.deal = f"D-{self.c.index}-{self.quotes + 1}"
        return self.deal

    def stage(self, stage: str, amount: float | None = None) -> None:
        """The account manager moves the deal in the CRM."""
        props: dict[str, Any] = {
            "deal_id": self._deal(),
            "stage": stage,
            "owner": self.c.account_manager,
        }
        if amount is not None:
            props["amount"] = amount
        self.emit("sales", "deal_stage_changed", self.c.actor("decider"), "crm", "decider", props)

    # -- carts, quotes, orders ----------------------------------------------------------------

    def items(self, lines: int, budget: float) -> tuple[list[dict[str, Any]], float]:
        """Order lines for this company's segment, and their total."""
        rnd = self.rnd
        out, total = [], 0.0
        for sku, _title, price, _ in rnd.sample(self.c.products, min(lines, len(self.c.products))):
            quantity = max(1, int(rnd.uniform(0.2, 1.0) * budget / price))
            out.append({"sku": sku, "quantity": quantity, "price": price})
            total += quantity * price
        return out, round(total, 2)

    def cart(self, who: Contact) -> tuple[str, list[dict[str, Any]], float]:
        """Products into the webshop cart (sometimes one taken out again)."""
        self.carts += 1
        cart_id = f"cart-{self.c.index}-{self.carts}"
        items, amount = self.items(self.between(1, 3), self.pick((300.0, 1200.0, 4000.0)))
        for line in items:
            self.emit(
                "web",
                "add_to_cart",
                who,
                "web",
                "buyer",
                {
                    "cart_id": cart_id,
                    "sku": line["sku"],
                    "items": [line],
                },
            )
            self.soon(MINUTE, 6 * MINUTE)
        if len(items) > 1 and self.rnd.random() < 0.2:
            line = items.pop()
            amount = round(amount - line["quantity"] * line["price"], 2)
            self.emit(
                "web",
                "remove_from_cart",
                who,
                "web",
                "buyer",
                {"cart_id": cart_id, "sku": line["sku"]},
            )
        return cart_id, items, amount

    def checkout(self, who: Contact, cart: tuple[str, list[dict[str, Any]], float]) -> None:
        """Checkout started in the webshop."""
        cart_id, items, amount = cart
        self.soon(2 * MINUTE, 40 * MINUTE)
        self.emit(
            "web",
            "checkout_started",
            who,
            "web",
            "buyer",
            {
                "cart_id": cart_id,
                "items": items,
                "amount": amount,
                "currency": "EUR",
            },
        )

    def quote(self, who: Contact) -> tuple[str, list[dict[str, Any]], float]:
        """A quote asked for in the shop and sent by the supplier."""
        self.quotes += 1
        quote_id = f"Q-{self.c.index}-{self.quotes}"
        items, amount = self.items(self.between(1, 4), self.pick((2500.0, 8000.0, 25000.0)))
        self.emit(
            "order",
            "quote_requested",
            who,
            "crm",
            "gatekeeper" if "gatekeeper" in who.roles else who.roles[0],
            {"quote_id": quote_id, "items": items},
        )
        self.wait(3 * HOUR, 3 * DAY)
        self.emit(
            "order",
            "quote_sent",
            who,
            "erp",
            "",
            {
                "quote_id": quote_id,
                "items": items,
                "amount": amount,
                "currency": "EUR",
                "valid_until_days": 30,
                "owner": self.c.account_manager,
            },
        )
        return quote_id, items, amount

    def order(self, who: Contact, items: list[dict[str, Any]], amount: float, **refs: str) -> str:
        """An order placed (from the ERP for ERP customers), paid on invoice for businesses."""
        self.orders += 1
        order_id = f"SO-{self.c.index}-{self.orders}"
        terms = "invoice" if self.c.domain or self.orders > 1 else "immediate"
        self.emit(
            "order",
            "order_placed",
            who,
            "erp",
            "buyer",
            {
                "order_id": order_id,
                **refs,
                "items": items,
                "amount": amount,
                "currency": "EUR",
                "payment_terms": terms,
            },
        )
        return order_id

    def fulfil(self, who: Contact, order_id: str, amount: float, lead_days: int = 4) -> bool:
        """Shipped and delivered; the invoice goes out on delivery."""
        if not self.wait(4 * HOUR, lead_days * DAY):
            return False
        carrier = self.pick(("PostNL", "DHL", "eigen vervoer", "DB Schenker"))
        self.emit(
            "order", "order_shipped", who, "erp", "", {"order_id": order_id, "carrier": carrier}
        )
        if not self.wait(6 * HOUR, 3 * DAY):
            return False
        self.emit("order", "order_delivered", who, "erp", "", {"order_id": order_id})
        self.soon(MINUTE, 2 * HOUR)
        self.emit(
            "order",
            "invoice_sent",
            who,
            "erp",
            "",
            {
                "order_id": order_id,
                "invoice_id": "INV-" + order_id[3:],
                "amount": amount,
                "currency": "EUR",
                "payment_terms": "invoice",
                "due_days": 30,
            },
        )
        return True

    def pay(self, who: Contact, order_id: str, amount: float) -> None:
        """The invoice paid, usually within its terms (kept apart so the story can go on)."""
        saved = self.t
        self.wait(7 * DAY, 45 * DAY)
        self.emit(
            "order",
            "invoice_paid",
            who,
            "erp",
            "buyer",
            {
                "order_id": order_id,
                "invoice_id": "INV-" + order_id[3:],
                "amount": amount,
                "currency": "EUR",
            },
        )
        self.t = saved
