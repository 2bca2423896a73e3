"""The journey map as one HTML file: the data, the page and Plotly's JavaScript, all inline.

Plotly (the `plotly` PyPI package, MIT) is embedded from
`plotly.offline.get_plotlyjs()`, so the file opens with no network, in any
browser, from a mail attachment or a shared drive. The page itself is
`page.html`, `page.css` and `page.js` beside this module.
"""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

import orjson

from journeys.schemas.errors import ConfigError

_MARKER = re.compile(r"\{(title|css|plotly|data|app)\}")


def _asset(name: str) -> str:
    return resources.files("journeys.sinks.report").joinpath(name).read_text("utf-8")


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:  # a dependency of the package; only a broken install lacks it
        raise ConfigError("the report needs the plotly package: pip install journeys") from exc
    return str(get_plotlyjs())


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it sits in."""
    return text.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def render(data: dict[str, Any]) -> str:
    """The whole page for the data `journeys.sinks.report.data.gather` returns."""
    payload = orjson.dumps(data).decode().replace("<", "\\u003c")
    parts = {
        "title": html.escape(str(data.get("database", ""))),
        "css": _asset("page.css"),
        "plotly": _script_safe(_plotly_js()),
        "data": payload,
        "app": _script_safe(_asset("page.js")),
    }
    pieces = _MARKER.split(_asset("page.html"))  # text, name, text, name, ..., text
    if sorted(pieces[1::2]) != sorted(parts):
        raise ConfigError("the report page's placeholders do not match its parts")
    return "".join(parts[p] if i % 2 else p for i, p in enumerate(pieces))
