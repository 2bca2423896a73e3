"""Malformed input, as real producers send it: each kind must fail `schemas.event.parse_event`.

The pipeline promises never to drop bad input silently; the simulator
therefore mixes in lines that are broken in the ways seen in practice
(truncated JSON, an unknown channel, no identity, a naive or missing time,
wrong types, not an object), each made from a real event so it looks like
its neighbours.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

Body = dict[str, Any]
IDENTITY = ("anonymous_id", "contact_id", "email", "account_id")


def _truncated(rnd: random.Random, body: Body) -> bytes:
    line = orjson.dumps(body)
    return line[: rnd.randint(1, len(line) - 1)]


def _unknown_channel(rnd: random.Random, body: Body) -> bytes:
    return orjson.dumps({**body, "channel": rnd.choice(("sms", "social", "fax", "chat", "phone"))})


def _no_identity(rnd: random.Random, body: Body) -> bytes:
    blank = rnd.random() < 0.5
    out = {k: v for k, v in body.items() if k not in IDENTITY}
    if blank:
        out["contact_id"] = "  "
    return orjson.dumps(out)


def _naive_time(rnd: random.Random, body: Body) -> bytes:
    return orjson.dumps({**body, "occurred_at": body["occurred_at"].rstrip("Z")})


def _missing_time(rnd: random.Random, body: Body) -> bytes:
    choice = rnd.random()
    out = {k: v for k, v in body.items() if k != "occurred_at"}
    if choice < 0.3:
        out["occurred_at"] = None
    elif choice < 0.6:
        out["occurred_at"] = rnd.choice(("yesterday", "05-01-2026 09:15", ""))
    return orjson.dumps(out)


def _wrong_types(rnd: random.Random, body: Body) -> bytes:
    out = dict(body)
    case = rnd.randrange(7)
    if case == 0:
        out["type"] = rnd.choice((7, ["page_view"], None))
    elif case == 1:
        out["properties"] = rnd.choice(("url=/producten", [1, 2]))
    elif case == 2:
        out["contact_id"] = rnd.randint(1, 99999)
    elif case == 3:
        out["email"] = "jan at " + rnd.choice(("kwekerij", "tuinbouw.nl"))
    elif case == 4:
        out["context"] = {**(body.get("context") or {}), "dmu_role": rnd.choice(("ceo", "boss", 3))}
    elif case == 5:
        out["channel"] = "order"
        out["properties"] = {"order_id": "SO-x", "items": [{"sku": "POT-12", "quantity": "drie"}]}
    else:
        out["channel"] = "order"
        out["properties"] = rnd.choice(
            ({"amount": "veel"}, {"currency": "EURO"}, {"payment_terms": "cash"})
        )
    return orjson.dumps(out)


def _not_object(rnd: random.Random, body: Body) -> bytes:
    return orjson.dumps(rnd.choice(([body], body["type"], 42, None)))


#: kind -> builder; every builder's output fails validation.
MALFORMED: dict[str, Callable[[random.Random, Body], bytes]] = {
    "truncated": _truncated,
    "unknown_channel": _unknown_channel,
    "no_identity": _no_identity,
    "naive_time": _naive_time,
    "missing_time": _missing_time,
    "wrong_types": _wrong_types,
    "not_object": _not_object,
}
_BUILDERS = tuple(MALFORMED.values())


def malformed(rnd: random.Random, body: Body) -> bytes:
    """One broken line made from a valid event body (a random kind of breakage)."""
    return rnd.choice(_BUILDERS)(rnd, body)
