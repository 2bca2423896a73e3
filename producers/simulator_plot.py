"""The plot of an account's journey: which scenes a `Plan` plays, and the newsletters over them.

`tell(story, plan)` plays a prospect (research, sign-up, consideration,
a webshop or sales-led decision, purchase, delivery, loyalty) or an existing
customer (repeat orders from the first day), stops where the plan says, and
returns the account's events in time order, cut at the end of the period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from operator import itemgetter

from journeys.producers.simulator_story import (
    ANONYMOUS_ONLY,
    AWARENESS,
    CONSIDERATION,
    DAY,
    DECISION,
    DELIVERY,
    HOUR,
    MINUTE,
    PURCHASE,
    Campaign,
    Plan,
    Raw,
    Story,
)
from journeys.producers.simulator_world import CONTENT, SITE, Contact

SUBJECTS: tuple[str, ...] = (
    "Nieuw: energiezuinige LED-belichting",
    "Praktijkcase: 18% minder gas in de kas",
    "Voorjaarsactie substraat en fust",
    "Webinar klimaatregeling",
    "Subsidie 2026: wat u moet weten",
    "Tips voor onderhoud van uw druppelsysteem",
)
LOSS_REASONS: tuple[str, ...] = ("price", "chose competitor", "no budget", "timing", "no response")


def campaigns(start: int, end: int) -> list[Campaign]:
    """The supplier's fortnightly newsletter: Tuesdays 08:30 UTC, content per segment group."""
    day = start // DAY
    while (day + 3) % 7 != 1:  # the first Tuesday on or after the start
        day += 1
    out = []
    number = 0
    while day * DAY < end:
        ts = day * DAY + 8 * HOUR + 30 * MINUTE
        stamp = datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y%m%d")
        paths = {group: pages[number % len(pages)] for group, pages in CONTENT.items()}
        out.append(Campaign(ts, f"nb-{stamp}", SUBJECTS[number % len(SUBJECTS)], paths))
        day += 14
        number += 1
    return out


def tell(story: Story, plan: Plan) -> list[Raw]:
    """Play the plan; the account's events sorted by time, none at or after the end."""
    if plan.existing_customer:
        _existing(story)
    else:
        _prospect(story, plan)
    _newsletters(story)
    end = story.end
    events = [event for event in story.events if event[0] < end]
    events.sort(key=itemgetter(0))
    return events


def _prospect(s: Story, plan: Plan) -> None:
    c = s.c
    first = c.actor("initiator")
    if not s.browse(first, "anon", s.between(2, 9), 4 * DAY) or plan.depth == ANONYMOUS_ONLY:
        return
    deep = plan.depth > AWARENESS and s.random() < 0.4
    s.identify(first, "form_submit" if deep else "signup", "whitepaper" if deep else "newsletter")
    if plan.depth == AWARENESS:
        s.browse(first, "web", s.between(0, 4), 10 * DAY)
        return
    if not s.wait(DAY, 12 * DAY):
        return
    researcher = c.actor("influencer")
    if not s.make_known(researcher) or not s.compare(researcher, "web", s.between(2, 8)):
        return
    if plan.sales_led:
        _sales_led(s, plan)
    else:
        _webshop(s, plan)


def _sales_led(s: Story, plan: Plan) -> None:
    c = s.c
    gate, decider = c.actor("gatekeeper"), c.actor("decider")
    s.emit(
        "web",
        "form_submit",
        gate,
        "signup",
        "gatekeeper",
        {
            "url": SITE + "/contact",
            "form": s.pick(("demo request", "contact request")),
            "company": c.name,
        },
    )
    s.known.add(gate.contact_id)
    if not s.wait(2 * HOUR, 2 * DAY):
        return
    s.sales_touch("call", gate, "gatekeeper")
    if not s.wait(2 * DAY, 10 * DAY):
        return
    s.sales_touch(s.pick(("meeting", "demo")), decider, "decider")
    stall_early = plan.stall_then_revive and s.random() < 0.5
    if plan.depth == CONSIDERATION:
        _open_ending(s, decider)
        return
    if stall_early and not _stall(s):
        return
    if not s.wait(DAY, 7 * DAY):
        return
    s.stage("proposal")
    quote_id, items, amount = s.quote(gate)
    if not s.wait(HOUR, 3 * DAY):
        return
    s.stage("negotiation", amount)
    if plan.depth == DECISION:
        _open_ending(s, decider, quote_id)
        return
    if plan.stall_then_revive and not stall_early and not _stall(s):
        return
    if not s.wait(DAY, 8 * DAY):
        return
    s.emit(
        "order",
        "quote_accepted",
        decider,
        "crm",
        "decider",
        {"quote_id": quote_id, "amount": amount},
    )
    s.soon(10 * MINUTE, 3 * HOUR)
    s.emit(
        "sales",
        "deal_won",
        decider,
        "crm",
        "decider",
        {
            "deal_id": s._deal(),
            "amount": amount,
            "owner": c.account_manager,
            "stage": "closed won",
        },
    )
    if not s.wait(HOUR, 2 * DAY):
        return
    buyer = c.actor("buyer")
    order_id = s.order(buyer, items, amount, quote_id=quote_id)
    _after_order(s, plan, buyer, order_id, amount)


def _open_ending(s: Story, decider: Contact, quote_id: str | None = None) -> None:
    """A deal that ends here: lost (quote rejected), or left open and silent (it stalls)."""
    if s.random() < 0.4:
        if not s.wait(DAY, 10 * DAY):
            return
        if quote_id:
            s.emit(
                "order",
                "quote_rejected",
                decider,
                "crm",
                "decider",
                {
                    "quote_id": quote_id,
                    "reason": s.pick(LOSS_REASONS[:2]),
                },
            )
            s.soon(HOUR, 2 * DAY)
        s.emit(
            "sales",
            "deal_lost",
            decider,
            "crm",
            "decider",
            {
                "deal_id": s._deal(),
                "owner": s.c.account_manager,
                "reason": s.pick(LOSS_REASONS),
                "stage": "closed lost",
            },
        )
    else:
        s.go_quiet(s.end + DAY)


def _stall(s: Story) -> bool:
    """Quiet for 15 to 35 days (long enough to stall), then the account picks it up again."""
    gap = s.between(15 * DAY, 35 * DAY)
    s.go_quiet(s.t + gap)
    s.t += gap
    if not s.wait(0, HOUR):
        return False
    return s.compare(s.c.actor("influencer"), "web", s.between(1, 3))


def _webshop(s: Story, plan: Plan) -> None:
    c = s.c
    buyer = c.actor("buyer")
    if not s.make_known(buyer) or not s.wait(HOUR, 4 * DAY):
        return
    cart = s.cart(buyer)
    if plan.depth == CONSIDERATION:
        return  # the cart is abandoned for good
    if plan.abandon_then_return:
        if not s.wait(5 * HOUR, 4 * DAY):
            return
        s.identify(buyer, "login", "")
    s.checkout(buyer, cart)
    if plan.depth == DECISION:
        return  # checkout started, never finished
    s.soon(MINUTE, 12 * MINUTE)
    cart_id, items, amount = cart
    order_id = s.order(buyer, items, amount, cart_id=cart_id)
    _after_order(s, plan, buyer, order_id, amount)


def _after_order(s: Story, plan: Plan, buyer: Contact, order_id: str, amount: float) -> None:
    for contact in s.c.contacts:
        s.subscribe(contact, s.t)  # customers' contacts get the newsletter
    if plan.depth == PURCHASE:
        s.fulfil(buyer, order_id, amount, lead_days=s.between(70, 120))  # a long-lead project order
        return
    if not s.fulfil(buyer, order_id, amount):
        return
    if plan.depth == DELIVERY:
        if s.random() < 0.35 and s.wait(DAY, 10 * DAY):
            s.emit(
                "order",
                "order_returned",
                buyer,
                "erp",
                "buyer",
                {
                    "order_id": order_id,
                    "reason": s.pick(("damaged", "wrong item", "not needed")),
                },
            )
        return  # the invoice stays unpaid in the period
    _loyal(s, buyer, order_id, amount)


def _loyal(s: Story, buyer: Contact, order_id: str, amount: float) -> None:
    """Invoices paid, a survey, and repeat orders at the account's own rhythm until it churns."""
    c = s.c
    s.pay(buyer, order_id, amount)
    if s.random() < 0.45:
        saved = s.t
        user = c.actor("user")
        if s.wait(2 * DAY, 10 * DAY):
            s.emit(
                "web",
                "survey_response",
                user,
                "signup",
                "user",
                {
                    "url": SITE + "/enquete",
                    "survey_id": "nps-delivery",
                    "score": s.pick((6, 7, 8, 8, 9, 9, 10)),
                },
            )
            s.known.add(user.contact_id)
        s.t = saved
    cadence = s.between(14, 45) * DAY
    while s.random() > 0.12:  # each cycle, some accounts stop reordering
        if not s.wait(cadence * 7 // 10, cadence * 13 // 10):
            return
        _keep_in_touch(s)
        if c.erp_id and s.random() < 0.5:
            s.sales_touch("call", buyer, "buyer")
            s.soon(5 * MINUTE, 30 * MINUTE)
            items, total = s.items(s.between(1, 3), s.pick((800.0, 2500.0)))
            order_id = s.order(buyer, items, total, source="phone")
        else:
            s.identify(buyer, "login", "")
            s.soon(MINUTE, 5 * MINUTE)
            cart = s.cart(buyer)
            s.checkout(buyer, cart)
            s.soon(MINUTE, 10 * MINUTE)
            order_id = s.order(buyer, cart[1], cart[2], cart_id=cart[0])
            total = cart[2]
        if not s.fulfil(buyer, order_id, total):
            return
        s.pay(buyer, order_id, total)
        if s.random() < 0.08:
            s.wait(DAY, 5 * DAY)
            s.sales_touch("meeting", c.actor("decider"), "decider")


def _keep_in_touch(s: Story) -> None:
    """Between orders, known contacts read post-purchase content and look at new products."""
    known = [contact for contact in s.c.contacts if contact.contact_id in s.known]
    if known and s.random() < 0.6:
        who = s.pick(known)
        if s.browse(who, "web", s.between(1, 3), 2 * DAY) and s.random() < 0.5:
            s.compare(who, "web", s.between(1, 3))


def _existing(s: Story) -> None:
    """A customer from before the period: its contacts are known and it simply reorders."""
    c = s.c
    buyer = c.actor("buyer")
    for contact in c.contacts:
        s.subscribe(contact, s.t)
    if not s.wait(0, 10 * DAY):
        return
    if c.erp_id:
        items, total = s.items(s.between(1, 3), s.pick((800.0, 2500.0)))
        order_id = s.order(buyer, items, total, source="phone")
    else:
        s.identify(buyer, "login", "")
        cart = s.cart(buyer)
        s.checkout(buyer, cart)
        s.soon(MINUTE, 10 * MINUTE)
        order_id, total = s.order(buyer, cart[1], cart[2], cart_id=cart[0]), cart[2]
    if s.fulfil(buyer, order_id, total):
        _loyal(s, buyer, order_id, total)


def _newsletters(s: Story) -> None:
    """Each subscribed contact gets every later campaign; some open, click, bounce or leave."""
    group, add, random = s.c.group, s.add, s.random
    for who, since in s.subscribed:
        mail, ctx, role_ctx = who.ids["mail"], who.contexts[""], who.contexts[who.roles[0]]
        for camp in s.campaigns:
            if camp.ts <= since:
                continue
            if camp.ts >= s.end:
                break
            t = camp.ts + s.between(0, 20 * MINUTE)
            props = {
                "campaign_id": camp.campaign_id,
                "message_id": f"{camp.campaign_id}.{who.contact_id}",
                "subject": camp.subject,
            }
            add(t, "email", "sent", mail, props, ctx)
            roll = random()
            if roll < 0.015:
                add(
                    t + s.between(1000, 60_000),
                    "email",
                    "bounce",
                    mail,
                    {**props, "reason": "550 mailbox unavailable"},
                    ctx,
                )
                break
            add(t + s.between(1000, 90_000), "email", "delivered", mail, props, ctx)
            if roll > 0.32:
                continue
            t += s.between(5 * MINUTE, 2 * DAY)
            if s._is_quiet(t):
                continue
            if roll < 0.023:
                add(t, "email", "unsubscribe", mail, props, role_ctx)
                break
            if roll < 0.027:
                add(t, "email", "spam_report", mail, props, role_ctx)
                break
            add(t, "email", "open", mail, props, role_ctx)
            if roll < 0.033:
                add(t + s.between(MINUTE, 4 * HOUR), "email", "reply", mail, props, role_ctx)
            elif roll < 0.13:
                url = f"{SITE}{camp.paths[group]}?utm_source=newsletter&utm_campaign="
                url += camp.campaign_id
                t += s.between(10_000, 10 * MINUTE)
                tagged = {"url": url, "utm_campaign": camp.campaign_id}
                add(t, "email", "click", mail, {**props, **tagged}, role_ctx)
                if who.contact_id in s.known:
                    add(
                        t + s.between(1000, 20_000),
                        "web",
                        "content_view",
                        who.ids["web"],
                        {**tagged, "referrer": "newsletter"},
                        role_ctx,
                    )
