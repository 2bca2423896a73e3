"""Event-time ordering: hold events back until no earlier one can still arrive.

Events of one account come from several partitions and out of order. The
sequencer buffers them and releases them in (occurred_at, event_id) order
once the *watermark* (the event time before which nothing more is expected)
has passed them. Anything that arrives behind what was already released is
late: the engine applies it with `process_late` and publishes the corrections
(late data is data).

Pure: the caller decides the watermark (the Faust worker: the slowest input
partition's latest event time less the allowed lateness; replay: end of
input).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from journeys.schemas.record import EventRecord


class Sequencer:
    """A reorder buffer keyed by (ts, event_id)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, int, EventRecord]] = []
        self._counter = 0
        #: The key of the last event released; anything at or before it is late.
        self.released: tuple[int, str] = (-(2**62), "")

    def __len__(self) -> int:
        return len(self._heap)

    def is_late(self, event: EventRecord) -> bool:
        """Whether the event's place in time was already released."""
        return (event.ts, event.event_id) <= self.released

    def push(self, event: EventRecord) -> bool:
        """Buffer an event; False (and not buffered) if it is late."""
        if self.is_late(event):
            return False
        self._counter += 1
        heapq.heappush(self._heap, (event.ts, event.event_id, self._counter, event))
        return True

    def release(self, watermark: int) -> Iterator[EventRecord]:
        """Events with ts strictly before `watermark`, in order."""
        heap = self._heap
        while heap and heap[0][0] < watermark:
            ts, event_id, _, event = heapq.heappop(heap)
            self.released = (ts, event_id)
            yield event

    def drain(self) -> Iterator[EventRecord]:
        """Every buffered event, in order (end of input, or an idle stream)."""
        heap = self._heap
        while heap:
            ts, event_id, _, event = heapq.heappop(heap)
            self.released = (ts, event_id)
            yield event

    @property
    def earliest(self) -> int | None:
        """Event time of the oldest buffered event."""
        return self._heap[0][0] if self._heap else None
