"""analytics.js's settings, served so a website sets only `cdnURL` to the collector."""

from __future__ import annotations

from journeys.producers.collect.analytics_js import api_host
from journeys.schemas.settings import Settings
from tests.unit.collect.client import request, settings


def test_settings_point_the_segment_integration_at_the_collector() -> None:
    answer = request(
        "GET", "/v1/projects/wk_test/settings", headers={"Origin": "https://shop.example"}
    )
    assert answer.status == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
    segment = answer.body["integrations"]["Segment.io"]
    assert segment["apiKey"] == "wk_test" and segment["protocol"] == "http"
    assert segment["apiHost"].endswith("/v1") and segment["apiHost"].startswith("127.0.0.1:")
    assert list(answer.body["integrations"]) == ["Segment.io"]  # nothing else is loaded
    assert answer.body["metrics"] == {"sampleRate": 0}  # analytics-next's telemetry is off
    assert answer.body["remotePlugins"] == []


def test_unknown_write_keys_get_no_settings() -> None:
    answer = request("GET", "/v1/projects/wk_nope/settings")
    assert answer.status == 404 and answer.body == {"error": "unknown write key"}
    assert (
        request("GET", "/v1/projects/wk_test/settings", config=Settings(write_keys="")).status
        == 404
    )


def test_the_public_url_or_the_forwarded_scheme_wins() -> None:
    behind = settings(collect_public_url="https://collect.example.com/")
    answer = request("GET", "/v1/projects/wk_test/settings", config=behind)
    segment = answer.body["integrations"]["Segment.io"]
    assert (segment["protocol"], segment["apiHost"]) == ("https", "collect.example.com/v1")
    answer = request("GET", "/v1/projects/wk_test/settings", headers={"X-Forwarded-Proto": "https"})
    assert answer.body["integrations"]["Segment.io"]["protocol"] == "https"
    assert api_host("http://10.0.0.5:8080/collect", "https", "ignored") == (
        "http",
        "10.0.0.5:8080/collect/v1",
    )
    assert api_host(None, "gopher", "h:1") == ("https", "h:1/v1")
