"""Write keys, the rate limiter and the privacy rules (pure functions)."""

from __future__ import annotations

import base64

import pytest

from journeys.producers.collect.guard import (
    RateLimiter,
    Rejected,
    apply_privacy,
    basic_user,
    check_write_key,
    client_ip,
    hash_email,
    truncate_ip,
    trusted_networks,
)
from journeys.schemas.settings import Settings


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def test_write_key_from_basic_auth_or_the_body() -> None:
    settings = Settings(write_keys=" k1 , k2,")
    assert check_write_key(settings, basic("k2")) == "k2"
    assert check_write_key(settings, None, {"writeKey": "k1"}) == "k1"
    assert check_write_key(settings, basic("nope"), {"writeKey": "k1"}) == "k1"
    for authorization, body in (
        (None, None),
        (basic("nope"), None),
        ("Bearer k1", {"writeKey": 1}),
    ):
        with pytest.raises(Rejected) as caught:
            check_write_key(settings, authorization, body)
        assert caught.value.status == 401
    with pytest.raises(Rejected, match="no write keys configured"):
        check_write_key(Settings(write_keys=""), basic("k1"))


def test_basic_user_survives_garbage() -> None:
    assert [basic_user(h) for h in (None, "", "Basic !!!", "Basic " + "gA==", basic("ü"))] == [
        "",
        "",
        "",
        "",
        "ü",
    ]


def test_rate_limiter_token_bucket() -> None:
    limiter = RateLimiter(rate=10)  # holds 20 tokens
    limiter.take("k", 15, now=0.0)
    limiter.take("other", 20, now=0.0)  # buckets are per key
    with pytest.raises(Rejected) as caught:
        limiter.take("k", 10, now=0.0)  # 5 left
    assert (caught.value.status, caught.value.extra["retry_after"]) == (429, 1)
    limiter.take("k", 10, now=0.5)  # 5 + 5 refilled
    limiter.take("k", 100, now=2.5)  # a full bucket lets a big batch through, into debt: -80
    with pytest.raises(Rejected) as caught:
        limiter.take("k", 1, now=3.0)  # -75: 7.6 s to one token
    assert caught.value.extra["retry_after"] == 8
    limiter.take("k", 1, now=10.7)
    RateLimiter(rate=0).take("k", 10**9)  # 0: no limit


def test_hashed_emails_keep_the_company_and_still_link() -> None:
    assert (
        hash_email("Jan@Acme.nl")
        == hash_email("jan@acme.nl ")
        == "6a0ac0fd972c325d6ca5512b67a5e0ad@acme.nl"
    )


def test_ip_truncation_and_client_ip() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:abcd:12::1") == "2001:db8:abcd::"
    assert truncate_ip("not an ip") is None
    proxies = trusted_networks("10.0.0.0/8")
    assert client_ip("198.51.100.7, 10.0.0.1", "10.0.0.1", proxies) == "198.51.100.7"
    assert client_ip("198.51.100.7", "192.0.2.1") == "192.0.2.1"  # not a proxy: its own address
    assert [client_ip(None, r) for r in ("192.0.2.1", "127.0.0.1", "::1", None)] == [
        "192.0.2.1",
        None,
        None,
        None,
    ]


def test_apply_privacy() -> None:
    strict = Settings(collect_hash_emails=True, collect_truncate_ip=True)
    event = apply_privacy(
        strict, {"email": "jan@acme.nl", "context": {"ip": "203.0.113.77"}}, "192.0.2.9"
    )
    assert event == {"email": hash_email("jan@acme.nl"), "context": {"ip": "203.0.113.0"}}
    assert apply_privacy(strict, {"context": {}}, "192.0.2.9") == {"context": {"ip": "192.0.2.0"}}
    assert apply_privacy(strict, {"context": {"ip": "garbage"}}, None) == {"context": {}}
    assert apply_privacy(Settings(), {"email": "jan@acme.nl"}, "192.0.2.9") == {
        "email": "jan@acme.nl",
        "context": {"ip": "192.0.2.9"},
    }
    assert apply_privacy(strict, {"context": "not an object"}, "192.0.2.9") == {
        "context": "not an object"
    }
