"""Alert webhooks: routes, messages, signatures and backoff (no I/O)."""

from __future__ import annotations

import random

import orjson
import pytest

from journeys.schemas.codec import alert_json
from journeys.schemas.errors import ConfigError
from journeys.schemas.rows import AlertRow
from journeys.sinks.alert_webhooks import (
    Alert,
    Target,
    backoff,
    check_routes,
    describe,
    headers,
    message,
    parse_routes,
    retry_after,
    retryable,
    sign,
    verify,
)

DETAILS = '{"phase":"decision","open_since":"2026-03-01T08:00:00.000Z","last_activity_at":null}'


def test_routes_per_kind_with_a_fallback_and_slack() -> None:
    routes = parse_routes(
        "cart_abandoned=https://crm.example/hook?a=1,b=2, deal_stalled=slack+https://hooks.slack.com/x,"
        "deal_stalled=https://crm.example/deals,*=http://ops.example/all"
    )
    assert routes.targets("cart_abandoned") == (Target("https://crm.example/hook?a=1,b=2"),)
    assert routes.targets("deal_stalled") == (
        Target("https://hooks.slack.com/x", "slack"),
        Target("https://crm.example/deals"),
    )
    assert routes.targets("reorder_due") == (Target("http://ops.example/all"),)
    assert not parse_routes("") and not parse_routes("cart_abandoned=http://a").targets(
        "deal_stalled"
    )


@pytest.mark.parametrize("text", ["https://no-kind", "x=ftp://a", "x=", "=https://a"])
def test_bad_routes_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ConfigError, match="JOURNEYS_ALERT_WEBHOOKS"):
        parse_routes(text)


def test_keys_and_messages_per_status() -> None:
    raised = Alert.parse(alert_json(AlertRow("al_1", "deal_stalled", "erp-1", 0, DETAILS, 1)))
    withdrawn = Alert.parse(
        alert_json(AlertRow("al_1", "deal_stalled", "erp-1", 0, DETAILS, 2, withdrawn=True))
    )
    resolved = Alert.parse(
        alert_json(AlertRow("al_1", "deal_stalled", "erp-1", 0, DETAILS, 2, resolved_at=5))
    )
    assert [raised.key, withdrawn.key, resolved.key] == [
        "al_1:1:raised",
        "al_1:2:withdrawn",
        "al_1:2:resolved",
    ]
    body = orjson.loads(message(withdrawn, Target("https://x")))
    assert body["correction"] is True and body["event"] == "alert.withdrawn"
    assert body["alert"]["alert_id"] == "al_1" and body["idempotency_key"] == "al_1:2:withdrawn"
    assert "in decision" in describe(raised) and describe(resolved).startswith("Resolved")
    slack = orjson.loads(message(raised, Target("https://hooks.slack.com/x", "slack")))
    assert slack["text"] == describe(raised) and slack["blocks"][0]["type"] == "section"


def test_a_hot_account_reads_as_a_moment_to_call_and_its_cooling_as_the_end() -> None:
    hot = '{"phase": "decision", "score": 26.5, "hot": 25.0, "warm": 10.0, "half_life_ms": 1}'
    raised = Alert.parse(alert_json(AlertRow("al_h", "account_hot", "erp-7", 0, hot, 1)))
    resolved = Alert.parse(
        alert_json(AlertRow("al_h", "account_hot", "erp-7", 0, hot, 2, resolved_at=5))
    )
    assert describe(raised).startswith(
        "Account hot: account erp-7 in decision reached an engagement score of 26.5 (hot from "
        "25.0): a good moment to call"
    )
    assert describe(resolved).endswith("account erp-7 has cooled below 10.0 engagement points.")


def test_signature_covers_timestamp_and_body() -> None:
    secret, body = b"k", b'{"a":1}'
    sent = headers(
        Alert.parse(alert_json(AlertRow("al", "x", "a", 0, "{}", 1))),
        body,
        1_700_000_000,
        2,
        secret,
    )
    assert sent["Idempotency-Key"] == "al:1:raised" and sent["X-Journeys-Attempt"] == "2"
    assert sent["X-Journeys-Signature"] == sign(secret, 1_700_000_000, body)
    assert verify(
        secret, sent["X-Journeys-Timestamp"], body, sent["X-Journeys-Signature"], 1_700_000_010
    )
    assert not verify(
        secret,
        sent["X-Journeys-Timestamp"],
        body + b" ",
        sent["X-Journeys-Signature"],
        1_700_000_010,
    )
    assert not verify(
        secret, "1700000000", body, sent["X-Journeys-Signature"], 1_700_009_999
    )  # too old
    assert "X-Journeys-Signature" not in headers(
        Alert.parse(alert_json(AlertRow("al", "x", "a", 0, "{}", 1))), body, 1, 1, None
    )


def test_backoff_doubles_up_to_the_cap_and_which_answers_are_retried() -> None:
    rng = random.Random(1)
    waits = [backoff(n, 1.0, 30.0, rng) for n in range(1, 10)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(30.0, 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert [retryable(s) for s in (500, 503, 429, 408, 400, 401, 404, 410)] == [True] * 4 + [
        False
    ] * 4


def test_retry_after_is_kept_between_one_second_and_the_cap() -> None:
    assert [retry_after(v, 30.0) for v in ("0", "0.001", "-5", "7", "3600")] == [
        1.0,
        1.0,
        1.0,
        7.0,
        30.0,
    ]
    assert retry_after(None, 30.0) is None and retry_after("nan", 30.0) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 30.0) is None  # a date: the backoff


def test_routes_to_public_hosts_pass_the_address_check() -> None:
    check_routes(parse_routes("*=https://hooks.slack.com/x,a=http://8.8.8.8/x"), False)
    with pytest.raises(ConfigError, match="private address"):
        check_routes(parse_routes("*=https://hooks.slack.com/x,a=http://10.1.2.3/x"), False)
    check_routes(parse_routes("a=http://10.1.2.3/x"), True)
