"""The privacy gate, list in, list out: consent, anonymisation, suppression by hash."""

from __future__ import annotations

import orjson
import pytest

from journeys.schemas.privacy import (
    PrivacyGate,
    anonymise,
    consent_denied,
    identifier_hash,
    identifiers_of,
)
from journeys.schemas.record import EventRecord
from journeys.streams.ingest import split

SALT = b"0123456789abcdef0123456789abcdef"


def event(event_id: str = "e1", context: object = None, **fields: object) -> EventRecord:
    body = orjson.dumps(context if context is not None else {}).decode()
    return EventRecord(event_id, "web", "page_view", 1_700_000_000_000, context=body, **fields)  # type: ignore[arg-type]


def consent(**preferences: object) -> dict[str, object]:
    return {"consent": {"categoryPreferences": preferences}}


@pytest.mark.parametrize(
    ("context", "denied"),
    [
        ({}, False),
        (consent(analytics=True), False),
        (consent(Analytics=False), True),  # categories are compared without case
        (consent(advertising=False), False),  # another category
        (consent(analytics="false"), False),  # only a real false denies
        ({"consent": {"categoryPreferences": "no"}}, False),
        ({"consent": "categoryPreferences"}, False),
    ],
)
def test_consent_denied_only_by_false_for_the_category(context: object, denied: bool) -> None:
    assert consent_denied(orjson.dumps(context).decode(), "analytics") is denied


def test_anonymise_keeps_what_happened_and_nothing_of_who() -> None:
    context = {
        **consent(analytics=False), "ip": "10.1.2.3", "userAgent": "UA", "dmu_role": "buyer",
        "traits": {"email": "a@b.nl"}, "locale": "nl-NL", "page": {"url": "https://x/?e=a@b.nl"},
    }  # fmt: skip
    record = event(
        "e9", context, email="a@b.nl", contact_id="c1", anonymous_id="v1", account_id="acme",
        dmu_role="buyer", segment="growers",
        properties=orjson.dumps({"url": "https://shop.nl/p?email=a@b.nl", "email": "a@b.nl",
                                 "referrer": "https://mail/?u=a", "amount": 3}).decode(),
    )  # fmt: skip
    out = anonymise(record)
    assert (out.event_id, out.channel, out.type, out.ts) == ("e9", "web", "page_view", record.ts)
    assert (out.email, out.contact_id, out.account_id, out.dmu_role, out.segment) == (None,) * 5
    assert out.anonymous_id and out.anonymous_id != "v1"
    assert anonymise(record).anonymous_id == out.anonymous_id  # a redelivery: one event
    assert anonymise(event("e10", context)).anonymous_id != out.anonymous_id  # links nothing
    assert orjson.loads(out.properties) == {"url": "https://shop.nl/p", "amount": 3}
    assert orjson.loads(out.context) == {**consent(analytics=False), "locale": "nl-NL"}


def test_hashes_are_salted_and_normalised() -> None:
    assert identifier_hash(SALT, "email", " Bob@Acme.NL ") == identifier_hash(
        SALT, "email", "bob@acme.nl"
    )
    assert identifier_hash(SALT, "email", "bob@acme.nl") != identifier_hash(
        b"other-salt-000000", "email", "bob@acme.nl"
    )
    assert identifier_hash(SALT, "contact_id", "x") != identifier_hash(SALT, "anonymous_id", "x")
    assert identifier_hash(SALT, "contact_id", "C1") != identifier_hash(SALT, "contact_id", "c1")


def test_an_email_stands_for_the_account_it_implies() -> None:
    assert ("account_id", "acme.nl") in identifiers_of(event(email="bob@acme.nl"))
    assert ("account_id", "jan@gmail.com") in identifiers_of(event(email="Jan@gmail.com"))
    assert ("account_id", "acme.nl") not in identifiers_of(
        event(email="b@acme.nl", account_id="erp-1")
    )


def test_the_gate_suppresses_before_consent_and_counts_why() -> None:
    gate = PrivacyGate("analytics", "anonymise", SALT)
    gate.suppress(
        [
            identifier_hash(SALT, "contact_id", "c-17"),
            identifier_hash(SALT, "account_id", "gone.nl"),
        ]
    )
    records = [
        event("a", contact_id="c-17"),
        event("b", consent(analytics=False), contact_id="c-17"),  # suppressed, not anonymised
        event("c", email="someone@gone.nl"),  # a forgotten company's person, no account id
        event("d", consent(analytics=False), email="x@here.nl"),
        event("e", email="y@here.nl"),
    ]
    counts: dict[str, int] = {}
    kept = gate.screen_all(records, counts)
    assert [r.event_id for r in kept] == ["d", "e"] and kept[0].email is None
    assert counts == {"suppressed": 3, "consent_anonymised": 1}
    assert PrivacyGate("analytics", "drop").screen(records[3]).record is None


def test_ingest_forwards_what_the_gate_lets_through_and_counts_the_rest() -> None:
    gate = PrivacyGate("analytics", "drop", SALT, {identifier_hash(SALT, "email", "bob@acme.nl")})
    messages = [
        ("t", 0, 0, event("a", email="bob@acme.nl").to_json()),
        ("t", 0, 1, event("b", consent(analytics=False), email="x@acme.nl").to_json()),
        ("t", 0, 2, event("c", email="anna@acme.nl").to_json()),
        ("t", 0, 3, b"{not json"),
        ("t", 0, 4, b'{"channel": "fax", "context": {"traits": {"email": "Bob@acme.nl"}}}'),
    ]
    out = split(messages, 1, 0, gate)
    assert len(out.forward) == 1 and b"anna@acme.nl" in out.forward[0]
    assert len(out.dead_letters) == 1 and out.next_offsets == {0: 5}
    assert out.withheld == {"suppressed": 2, "consent_dropped": 1}
    assert len(split(messages, 1, 0).forward) == 3  # no gate: as before
    assert len(split(messages, 1, 0).dead_letters) == 2


def test_rejected_input_naming_a_forgotten_person_is_found() -> None:
    gate = PrivacyGate(salt=SALT, suppressed={identifier_hash(SALT, "account_id", "gone.nl")})
    assert gate.payload_suppressed(
        b'{"batch": [{"userId": "x", "traits": {"email": "a@gone.nl"}}]}'
    )
    assert gate.payload_suppressed(b'{"groupId": "Gone.nl"}')
    assert not gate.payload_suppressed(b'{"email": "a@here.nl"}')
    assert not gate.payload_suppressed(b"not json gone.nl")
    assert not PrivacyGate().payload_suppressed(b'{"groupId": "gone.nl"}')
