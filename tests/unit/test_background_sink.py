"""The background sink writes everything, in order, and hands errors back."""

from __future__ import annotations

import pytest

from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import IdentityLink, Output
from journeys.sinks.background import BackgroundSink
from journeys.sinks.memory import MemorySink


def test_everything_is_written_in_order() -> None:
    inner = MemorySink()
    sink = BackgroundSink(inner)
    sink.setup()
    for i in range(50):
        sink.add(Output(links=[IdentityLink("email", f"a{i}", "acme", i)]))
    sink.flush()
    assert [link.alias for link in inner.written.links] == [f"a{i}" for i in range(50)]


def test_a_writer_error_reaches_the_caller() -> None:
    class Broken(MemorySink):
        def flush(self) -> None:
            raise SinkUnavailable("down")

    sink = BackgroundSink(Broken())
    sink.setup()
    sink.add(Output())
    with pytest.raises(SinkUnavailable, match="down"):
        sink.flush()
