"""Erasure in the running engine (`journeys forget`, docs/privacy.md): the router forgets a
person's aliases, links, redirects and journeys, saying so as deletions in its changes; the
identity stage does it when the `forget` control message comes through the ordered topic,
drops the person's held-back and later events, and leaves nothing of theirs in either
changelog; the journey partitions re-fold the account without the person's events
(`Erase`) and drop what they forwarded or absorbed under the person's keys (`Forget`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from journeys.schemas.codec import Control, decode_ordered, forget_json, forwarded_json, idle_json
from journeys.schemas.privacy import identifier_hash
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import JourneyRow
from journeys.streams import disk
from journeys.streams.engine import IdentityRouter, PartitionEngine
from journeys.streams.engine.commands import Contacts, Erase, Forget, Route
from journeys.streams.engine.identity import Names
from journeys.streams.engine.router import VERSIONS_PER_SEQ
from tests.unit.engine.journey import ev
from tests.unit.engine.test_stage import CONFIG, Pipeline

SALT = b""  # the unit tests' stages run without a salt; the hashes match under it

BOB = {"email": "bob@acme.nl", "contact_id": "c-bob", "anonymous_id": "a-bob"}
#: Everything `forget` would find for Bob (his second cookie seen only anonymously here).
BOB_IDS = {
    ("email", "bob@acme.nl"),
    ("contact_id", "c-bob"),
    ("anonymous_id", "a-bob"),
    ("anonymous_id", "a-bob2"),
}
BOB_TEXT = (b"bob@acme.nl", b"c-bob", b"a-bob")


def names(pairs: set[tuple[str, str]]) -> Names:
    """What the stage builds from hashes, in clear for the tests."""
    return lambda kind, value: (kind, value) in pairs


def history() -> list[EventRecord]:
    """Anna and Bob at acme.nl (Bob a visitor first), Bob's second cookie never identified,
    Jan at a free-mail address who became ERP account erp-7."""
    return [
        ev("content_view", 0, event_id="b1", anonymous_id="a-bob"),
        ev("page_view", 1, event_id="a1", email="anna@acme.nl", anonymous_id="a-anna"),
        ev("pricing_view", 2, event_id="b2", **BOB),
        ev("page_view", 3, event_id="b3", anonymous_id="a-bob2"),
        ev("demo_request", 4, event_id="a2", email="anna@acme.nl"),
        ev("page_view", 5, event_id="j1", email="jan@gmail.com", anonymous_id="a-jan"),
        ev("quote_request", 6, event_id="j2", email="jan@gmail.com", account_id="erp-7"),
        ev("page_view", 7, event_id="k1", email="kim@gmail.com", anonymous_id="a-kim"),
    ]


def routed(events: Iterable[EventRecord]) -> IdentityRouter:
    router = IdentityRouter(CONFIG)
    router.process_all(events)
    router.take()
    router.changes()
    return router


def text(changes: Mapping[bytes, bytes | None]) -> bytes:
    """Keys and values of state as one text, to search for identifiers."""
    return b"\n".join(k + b"=" + (v or b"") for k, v in changes.items())


def test_the_router_forgets_a_person_and_says_so_as_deletions() -> None:
    router = routed(history())
    assert "e:bob@acme.nl" in router.identity.aliases and "?a:a-bob2" in router.shadows
    contacts = router.shadows["acme.nl"].contacts

    erased = router.erase(names(BOB_IDS), ["b1", "b2"])

    aliases = router.identity.aliases
    assert not [a for a in aliases if "bob" in a]
    assert {"e:anna@acme.nl", "a:a-anna", "e:jan@gmail.com"} <= set(aliases)
    assert "?a:a-bob2" not in router.shadows and "acme.nl" in router.shadows
    assert router.shadows["acme.nl"].contacts == contacts - 1
    commands, links = router.take()
    sent = [c for _, c in commands]
    assert Forget(router.seq, "?a:a-bob2") in sent
    assert Contacts(router.seq, "acme.nl", contacts - 1) in sent
    assert Erase(router.seq, "acme.nl", ("b1", "b2")) in sent
    assert not links
    assert (erased.aliases, erased.journeys, erased.erased_in) == (4, 1, 1)
    assert Forget(router.seq, "?a:a-bob") in sent  # merged into acme.nl: remnants go too
    changes = router.changes()
    for alias in ("e:bob@acme.nl", "c:c-bob", "a:a-bob", "a:a-bob2"):
        assert changes.get(b"a:" + alias.encode(), b"kept") is None, alias
    assert changes[b"s:?a:a-bob2"] is None
    kept = text({k: v for k, v in changes.items() if v is not None})  # tombstones aside
    assert not [t for t in BOB_TEXT if t in kept]


def test_a_free_mail_person_merged_into_an_erp_account_loses_their_redirect() -> None:
    router = routed(history())
    assert router.identity.redirects["jan@gmail.com"] == "erp-7"
    jan = {("email", "jan@gmail.com"), ("anonymous_id", "a-jan"), ("account_id", "jan@gmail.com")}

    router.erase(names(jan), ["j1", "j2"], stored_under=lambda key: key == "erp-7")

    assert "jan@gmail.com" not in router.identity.redirects
    assert not [a for a in router.identity.aliases if "jan" in a]
    assert "erp-7" in router.shadows  # the company stays, without Jan's events
    commands, _ = router.take()
    assert Erase(router.seq, "erp-7", ("j1", "j2")) in [c for _, c in commands]
    changes = router.changes()
    assert changes[b"r:jan@gmail.com"] is None
    assert b"jan@gmail.com" not in text({k: v for k, v in changes.items() if v is not None})


def test_a_free_mail_persons_own_journey_is_forgotten() -> None:
    router = routed(history())
    kim = {("email", "kim@gmail.com"), ("anonymous_id", "a-kim"), ("account_id", "kim@gmail.com")}

    router.erase(names(kim), ["k1"])

    assert "kim@gmail.com" not in router.shadows
    commands, _ = router.take()
    sent = [c for _, c in commands]
    assert Forget(router.seq, "kim@gmail.com") in sent
    assert not [c for c in sent if isinstance(c, Erase)]  # nothing left to re-fold


def test_a_company_asked_for_goes_with_everyone_linked_to_it() -> None:
    router = routed(history())
    company = {("account_id", "acme.nl"), ("email", "anna@acme.nl"), *BOB_IDS}

    erased = router.erase(names(company), ["a1", "a2", "b1", "b2", "b3"])

    assert "acme.nl" not in router.shadows
    assert not [a for a, key in router.identity.aliases.items() if key == "acme.nl"]
    assert "a:a-anna" not in router.identity.aliases  # it led to the company
    commands, _ = router.take()
    assert Forget(router.seq, "acme.nl") in [c for _, c in commands]
    assert erased.erased_in == 0  # nothing of the company is left to fold again


def test_the_state_restored_after_an_erasure_holds_nothing_of_the_person() -> None:
    router = IdentityRouter(CONFIG)
    state: dict[bytes, bytes] = {}

    def save() -> None:
        for key, value in router.changes().items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value

    for event in history():
        router.process(event)
        save()
    router.erase(names(BOB_IDS), ["b1", "b2", "b3"])
    save()
    assert not [t for t in BOB_TEXT if t in text(state)]
    again = IdentityRouter.restore(CONFIG, state)
    assert again.identity.aliases == router.identity.aliases
    assert set(again.shadows) == set(router.shadows)
    # Bob comes back (had the suppression list missed him): a new person, nothing recalled
    again.process(ev("page_view", 9, event_id="b9", anonymous_id="a-bob"))
    commands, _ = again.take()
    [route] = [c for _, c in commands if isinstance(c, Route)]
    assert route.key == "?a:a-bob"


def test_routes_and_links_of_the_person_not_yet_taken_are_dropped() -> None:
    router = routed(history())
    router.process_late(ev("page_view", 1.5, event_id="b4", **BOB))  # same batch, before it
    router.erase(names(BOB_IDS), ["b1", "b2"])
    commands, links = router.take()
    assert not [c for _, c in commands if isinstance(c, Route)]
    assert not [link for link in links if "bob" in link.alias]


def test_a_forget_message_carries_hashes_and_ids_in_pieces() -> None:
    hashes = [identifier_hash(b"s", "email", "bob@acme.nl")]
    ids = [f"e{i:05d}" for i in range(12_000)]
    messages = forget_json("r1", hashes, ["h-acct"], ids)
    assert len(messages) == 3 and not [m for m in messages if b"bob" in m]
    controls = [c for m in messages for c in decode_ordered(m) if isinstance(c, Control)]
    assert len(controls) == 3 and all(c.kind == "forget" for c in controls)
    assert {c.hashes for c in controls} == {tuple(hashes)}
    assert sum(len(c.event_ids) for c in controls) == 12_000
    [empty] = decode_ordered(forget_json("r2", hashes, [], [])[0])
    assert isinstance(empty, Control) and empty.event_ids == ()


# ------------------------------------------------------------------ the identity stage


def forwarded(events: list[EventRecord], start: int = 0) -> list[bytes]:
    return [forwarded_json(e, 0, 1, start + i) for i, e in enumerate(events)]


def bob_hashes() -> list[str]:
    return [identifier_hash(SALT, kind, value) for kind, value in sorted(BOB_IDS)]


def streamed(lateness: int = 0) -> Pipeline:
    pipeline = Pipeline(partitions=2, lateness=lateness)
    events = history()
    pipeline.feed(forwarded(events) + [idle_json(0, 1)])
    pipeline.settle()
    return pipeline


def forget_bob(pipeline: Pipeline) -> None:
    account = identifier_hash(SALT, "account_id", "acme.nl")
    pipeline.feed(forget_json("r1", bob_hashes(), [account], ["b1", "b2", "b3"]))


def test_the_stage_erases_the_person_from_both_changelogs_and_drops_what_comes_later() -> None:
    pipeline = streamed()
    assert b"bob@acme.nl" in text(pipeline.identity_log)
    forget_bob(pipeline)
    late = ev("page_view", 1.5, event_id="b5", **BOB)
    after = ev("signup", 9, event_id="b6", email="BOB@acme.nl")
    anna = ev("page_view", 9, event_id="a3", email="anna@acme.nl")
    pipeline.feed(forwarded([late, after, anna], start=100) + [idle_json(0, 1)])
    pipeline.settle()

    stage = pipeline.identity
    assert stage.stats.suppressed == 2
    assert not [t for t in BOB_TEXT if t in text(pipeline.identity_log)]
    assert [k for k in pipeline.identity_log if k.startswith(b"x:")]  # hashes only
    routes = [c for _, c in pipeline.sent if isinstance(c, Route)]
    assert not [c for c in routes if c.event.event_id in ("b5", "b6")]
    assert [c for c in routes if c.event.event_id == "a3"]
    assert "?a:a-bob2" not in stage.router.shadows


def test_a_forget_drops_the_persons_events_still_held_back() -> None:
    pipeline = Pipeline(partitions=1, lateness=10**12)  # nothing is released before a drain
    pipeline.feed(forwarded(history()))
    pipeline.settle()
    assert len(pipeline.identity.sequencer) == len(history())
    forget_bob(pipeline)
    pipeline.feed([idle_json(0, 1)])
    pipeline.settle()
    assert pipeline.identity.stats.suppressed == 3
    routed_ids = {c.event.event_id for _, c in pipeline.sent if isinstance(c, Route)}
    assert routed_ids == {"a1", "a2", "j1", "j2", "k1"}
    assert not [t for t in BOB_TEXT if t in text(pipeline.identity_log)]


def test_a_stage_restored_after_the_forget_still_drops_the_person() -> None:
    pipeline = streamed()
    forget_bob(pipeline)
    pipeline.settle()
    pipeline.identity = pipeline._identity()  # a crash: read back from the changelog
    pipeline.feed(forwarded([ev("page_view", 9, event_id="b7", **BOB)], start=200))
    pipeline.settle()
    assert pipeline.identity.stats.suppressed == 1


def test_no_journey_partition_keeps_anything_of_the_person() -> None:
    pipeline = streamed()
    forget_bob(pipeline)
    pipeline.settle()
    for log in pipeline.journey_logs:
        assert not [t for t in BOB_TEXT if t in text(log)]


def test_the_account_equals_a_run_without_the_person() -> None:
    others = [e for e in history() if not e.event_id.startswith("b")]
    pipeline = streamed()
    forget_bob(pipeline)
    pipeline.feed(forwarded([ev("page_view", 9, event_id="b8", **BOB)], start=300))
    pipeline.settle()
    reference = Pipeline(partitions=2)
    reference.feed(forwarded(others) + [idle_json(0, 1)])
    reference.settle()
    assert latest(pipeline, "acme.nl") == latest(reference, "acme.nl")


def latest(pipeline: Pipeline, account: str) -> JourneyRow:
    """The account's current journey row, its version aside."""
    rows = [r for r in pipeline.out.journeys if r.account_id == account]
    return replace(max(rows, key=lambda r: r.version), version=0)


def test_what_the_partitions_publish_after_a_forget_comes_above_the_recomputed_rows() -> None:
    router = routed(history())
    router.erase(names(BOB_IDS), ["b1"], version=10_000)
    commands, _ = router.take()
    [erase] = [c for _, c in commands if isinstance(c, Erase)]
    assert erase.seq * VERSIONS_PER_SEQ > 10_000  # a partition's next rows: seq * 4 + stage
    engine = PartitionEngine(CONFIG)
    engine.apply(erase)
    assert engine.seq == erase.seq


def test_a_forget_leaves_nothing_of_the_person_in_the_stages_stores_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages keeping their state in RocksDB (one journey or identity entry per table in
    memory): after the forget, no file of any store holds the person's identifiers (the
    stores are purged at the next save, older files included). Files uncompressed, so
    what is in them can be found."""
    monkeypatch.setattr(disk, "COMPRESSED", False)
    cookie, contact = os.urandom(24).hex(), os.urandom(24).hex()  # incompressible
    name = os.urandom(24).hex()
    person = {"anonymous_id": cookie, "contact_id": contact, "email": name + "@acme.nl"}
    # Their tails: a file keeps a key's first bytes shared with the key before only once.
    secrets = [cookie[8:].encode(), contact[8:].encode(), name[8:].encode()]
    events = [
        *history(),
        ev("page_view", 2, event_id="p1", anonymous_id=cookie),
        ev("signup", 3, event_id="p2", **person),
    ]
    pipeline = Pipeline(partitions=2, folder=tmp_path, capacity=1)
    pipeline.feed(forwarded(events) + [idle_json(0, 1)])
    pipeline.settle()

    def files() -> bytes:
        for store in [pipeline.identity._store, *(p._store for p in pipeline.parts)]:  # noqa: SLF001
            assert store is not None
            store._db.flush()  # noqa: SLF001 (what a long run leaves in older files)
        return b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())

    assert all(secret in files() for secret in secrets)
    hashes = [identifier_hash(SALT, kind, value) for kind, value in person.items()]
    pipeline.feed(forget_json("r2", hashes, [], ["p1", "p2"]))
    pipeline.settle()
    assert pipeline.identity.erasures == 1
    files()
    left = [
        (f, secret)
        for f in tmp_path.rglob("*")
        if f.is_file()
        for secret in secrets
        if secret in f.read_bytes()
    ]
    assert not left
