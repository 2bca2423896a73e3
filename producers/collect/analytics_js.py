"""analytics.js's own settings, served by the collector so a website sets only `cdnURL`.

`@segment/analytics-next` fetches `{cdnURL}/v1/projects/{writeKey}/settings`
before it sends anything. With `cdnURL` pointing at the collector, this
answer is what it gets:

- `integrations["Segment.io"]`: `apiKey` (the write key: without it every
  call is answered 401 and dropped), `apiHost` (the collector's host and
  `/v1`, no scheme) and `protocol`: the browser posts its calls back here.
- No other integration, no remote plugins, no middleware: nothing else is
  loaded into the page.
- `metrics.sampleRate: 0`: analytics-next's own telemetry, which otherwise
  posts to `api.segment.io/v1/m` every 30 s, is off.
- `addBundledMetadata: false`: the calls carry no list of bundled
  destinations (there are none), so they stay small.

Where the collector is reached: `collect_public_url` when set (behind a
proxy or TLS terminator), else the scheme and `Host` of the request (the
app then answers `private, no-store`: a guess from a client's `Host` must
not be cached for anyone else).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def api_host(public_url: str | None, scheme: str, host: str) -> tuple[str, str]:
    """(protocol, apiHost) for the browser: the public URL's, else the request's."""
    if public_url:
        parts = urlsplit(public_url.rstrip("/"))
        scheme, host = parts.scheme or "https", parts.netloc + parts.path
    protocol = "http" if scheme == "http" else "https"
    return protocol, f"{host}/v1"


def settings_document(write_key: str, protocol: str, host: str) -> dict[str, Any]:
    """The settings analytics-next expects, pointing its Segment.io integration at `host`."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": host,
                "protocol": protocol,
                "addBundledMetadata": False,
                "unbundledIntegrations": [],
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "metrics": {"sampleRate": 0},
        "remotePlugins": [],
        "enabledMiddleware": {},
        "middlewareSettings": {},
        "edgeFunction": {},
        "legacyVideoPluginsEnabled": False,
        "analyticsNextEnabled": True,
    }
