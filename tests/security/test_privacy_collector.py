"""The collector's privacy on a real loopback port: the admin endpoint opens to the admin
key only, a forgotten person's next events are dropped, consent is honoured."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from journeys.producers.collect.app import create_app
from journeys.producers.collect.privacy import PRIVACY
from journeys.producers.collect.publisher import MemoryPublisher
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect
from tests.security.test_privacy_forget import BAD, BOB, EVENTS, _replayed, _write, scan
from tests.unit.collect.server import serving

KEY = "wk_public_in_every_page"
ADMIN = "adm_0123456789abcdef_secret"


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def call(url: str, path: str, body: Any, authorization: str | None = None) -> tuple[int, Any]:
    """POST JSON; (status, decoded body)."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url + path, orjson.dumps(body), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


def metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        return str(answer.read().decode())


@contextmanager
def collector(
    config: Settings, publisher: MemoryPublisher, forget: Callable[..., Any] | None = None
) -> Iterator[str]:
    app = create_app(config, publisher)
    if forget is not None:
        app[PRIVACY].forget = forget
    with serving(app, "the collector") as url:
        yield url


def track(email: str | None = None, user: str | None = None, **context: object) -> dict[str, Any]:
    """A Segment track call (Product Viewed) as analytics.js sends it."""
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-x-1",
        **({"userId": user} if user else {}),
        "properties": {"url": "https://shop.example/p/1?email=a@b.nl#x", "email": email},
        "context": {"ip": "203.0.113.7", "userAgent": "Firefox", **context},
        "timestamp": "2026-11-02T09:15:00.000Z",
    }


# ------------------------------------------------------------------ the admin endpoint

REFUSED = [
    (None, 401),
    (_basic(KEY), 401),  # the write key, as SDKs send it
    (f"Bearer {KEY}", 401),  # the write key as a bearer token
    (_basic(ADMIN), 401),  # the admin key, but not as a bearer token
    ("Bearer adm_0123456789abcdef_secreT", 401),
    ("Bearer ", 401),
]


@pytest.mark.parametrize(("authorization", "status"), REFUSED)
def test_the_forget_endpoint_takes_only_the_admin_key_as_bearer(
    authorization: str | None, status: int, tmp_path: Path
) -> None:
    called: list[Any] = []
    config = Settings(write_keys=KEY, admin_key=SecretStr(ADMIN), data_dir=tmp_path)
    with collector(config, MemoryPublisher(), lambda *a: called.append(a)) as url:
        answer = call(url, "/v1/privacy/forget", {"email": "bob@acme.nl"}, authorization)
    assert answer[0] == status and called == []


@pytest.mark.parametrize("admin", [None, KEY])
def test_the_forget_endpoint_is_off_without_an_admin_key_of_its_own(
    admin: str | None, tmp_path: Path
) -> None:
    called: list[Any] = []
    config = Settings(
        write_keys=KEY, admin_key=SecretStr(admin) if admin else None, data_dir=tmp_path
    )
    with collector(config, MemoryPublisher(), lambda *a: called.append(a)) as url:
        assert call(url, "/v1/privacy/forget", {"email": "x@y.nl"}, f"Bearer {KEY}")[0] == 403
    assert called == []


def test_a_forget_body_names_exactly_one_identifier(tmp_path: Path) -> None:
    called: list[Any] = []
    config = Settings(write_keys=KEY, admin_key=SecretStr(ADMIN), data_dir=tmp_path)
    with collector(config, MemoryPublisher(), lambda *a: called.append(a)) as url:
        for body in ({}, {"email": "a@b.nl", "contact_id": "c"}, {"email": 3}, [1], {"x": "y"}):
            assert call(url, "/v1/privacy/forget", body, f"Bearer {ADMIN}")[0] == 400
    assert called == []


@pytest.mark.integration
def test_forget_over_http_erases_and_the_next_visit_is_dropped(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    db = database_name("http")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    config = Settings(
        write_keys=KEY, admin_key=SecretStr(ADMIN), data_dir=tmp_path, clickhouse_url=chdb_dsn,
        clickhouse_database=db,
    )  # fmt: skip
    publisher = MemoryPublisher()
    with collector(config, publisher) as url:
        status, body = call(url, "/v1/privacy/forget", {"email": BOB["email"]}, f"Bearer {ADMIN}")
        assert status == 200 and body["status"] == "erased", body
        assert body["erased"]["events"] >= 5 and body["accounts_recomputed"] == 1
        assert scan(connect(chdb_dsn), db, list(BOB.values())) == []
        # Bob comes back: by email, by user id, by his old cookie; Anna too
        visits = [
            track(email=BOB["email"]),
            track(user=BOB["contact_id"]),
            {**track(), "anonymousId": BOB["anonymous_id"]},
            track(email="anna@acme.nl"),
            {**track(email=BOB["email"]), "timestamp": "yesterday"},  # would be a dead letter
            {**track(email="kees@other.de"), "timestamp": "yesterday"},
        ]
        for visit in visits:
            assert call(url, "/v1/track", visit, _basic(KEY))[0] == 200
        text = metrics(url)
    assert [r.email for r in publisher.records] == ["anna@acme.nl"]
    assert [b"kees@other.de" in d.payload for d in publisher.dead_letters] == [True]
    assert 'journeys_collect_events_withheld_total{reason="suppressed"} 4.0' in text


# ------------------------------------------------------------------ consent

DENIED = {"consent": {"categoryPreferences": {"Analytics": False, "Advertising": True}}}
GIVEN = {"consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}}}


def test_consent_denied_is_dropped_and_given_is_kept(tmp_path: Path) -> None:
    publisher = MemoryPublisher()
    config = Settings(write_keys=KEY, data_dir=tmp_path)
    with collector(config, publisher) as url:
        assert call(url, "/v1/track", track("jan@acme.nl", None, **DENIED), _basic(KEY))[0] == 200
        assert call(url, "/v1/track", track("piet@acme.nl", None, **GIVEN), _basic(KEY))[0] == 200
        assert call(url, "/v1/track", track("kees@acme.nl"), _basic(KEY))[0] == 200
        text = metrics(url)
    assert [r.email for r in publisher.records] == ["piet@acme.nl", "kees@acme.nl"]
    assert orjson.loads(publisher.records[0].context)["consent"] == GIVEN["consent"]
    assert 'journeys_collect_events_withheld_total{reason="consent_dropped"} 1.0' in text


def test_consent_denied_is_anonymised_when_so_configured(tmp_path: Path) -> None:
    publisher = MemoryPublisher()
    config = Settings(write_keys=KEY, data_dir=tmp_path, consent_mode="anonymise")
    with collector(config, publisher) as url:
        body = track("jan@acme.nl", user="c-jan", groupId="acme", **DENIED)
        assert call(url, "/v1/track", body, _basic(KEY))[0] == 200
        assert call(url, "/v1/track", body, _basic(KEY))[0] == 200  # a retry: same stand-in
    first, again = publisher.records
    assert (first.email, first.contact_id, first.account_id) == (None, None, None)
    assert first.anonymous_id != "anon-x-1" and first.anonymous_id == again.anonymous_id
    stored = first.to_json().decode()
    for personal in ("jan@acme.nl", "c-jan", 'acme"', "203.0.113", "Firefox", "anon-x-1", "a@b"):
        assert personal not in stored, personal
    assert orjson.loads(first.properties)["url"] == "https://shop.example/p/1"
    assert (first.channel, first.type) == ("web", "product_view")
