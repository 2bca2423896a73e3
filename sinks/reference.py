"""What the stored tables must show: the reference semantics every sink is checked against.

`final_tables` collapses the engine's rows the way the ClickHouse tables do
when read with FINAL (ReplacingMergeTree: per key one row, the highest
version, deletions gone), and `FinalTables.current()` gives what each
`<table>_current` view shows. Unit tests compare the engine's output through
it; integration tests compare ClickHouse with it.

Which row of a key wins:

- events (key event_id): the delivery with the earliest occurred_at, whatever
  order deliveries are written in; for equal times an on-time row over a late
  one, then the last written. Its account is then re-attributed through the
  identity links (`attributed_account`).
- identity links (key kind, alias): the earliest linked_at, the contract's
  rule for an alias seen with two accounts; for equal times the last written.
  `identity_links_current` names the account each alias ends at, following
  the `account` links of merged accounts (`FinalTables.links_followed`).
- transitions, journeys, alerts: the highest version (the engine's), ties to
  the last written; dead letters: the last written. Of several generations
  (`journeys rebuild`), only the live one's rows count (`live_generation`):
  the newest every partition reported, as the `_current` views show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    GenerationRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)


@dataclass(frozen=True)
class FinalTables:
    """The tables as `SELECT ... FINAL` shows them: per key the newest version, deletions gone.

    Alerts keep their withdrawn versions (FINAL shows them, flagged); the
    `_current` views leave them out (`current()`).
    """

    events: dict[str, StoredEvent]
    transitions: dict[tuple[str, str], TransitionRow]
    journeys: dict[str, JourneyRow]
    alerts: dict[str, AlertRow]
    links: dict[tuple[str, str], IdentityLink]
    dead_letters: dict[str, DeadLetterRow]

    def links_followed(self) -> dict[tuple[str, str], IdentityLink]:
        """Links naming the account each alias ends at (`identity_links_current`)."""
        links = self.links
        return {
            k: replace(link, account_id=_follow(links, link.account_id))
            for k, link in links.items()
        }

    def current(self) -> dict[str, dict[Any, Any]]:
        """The rows of each `<table>_current` view (and `open_alerts`), by key."""
        alerts = {k: a for k, a in self.alerts.items() if not a.withdrawn}
        return {
            "events_current": self.events,
            "phase_transitions_current": self.transitions,
            "journeys_current": self.journeys,
            "alerts_current": alerts,
            "open_alerts": {k: a for k, a in alerts.items() if a.resolved_at is None},
            "identity_links_current": self.links_followed(),
            "dead_letters_current": self.dead_letters,
        }


def _follow(links: dict[Any, IdentityLink], account: str) -> str:
    """The account `account` ends at, through the `account` links (merges)."""
    seen = {account}
    while ("account", account) in links:
        account = links[("account", account)].account_id
        if account in seen:
            break
        seen.add(account)
    return account


def newest(
    rows: list[Any], key: Callable[[Any], Any], rank: Callable[[Any], Any]
) -> dict[Any, Any]:
    """Per key the row with the highest rank; of equal ranks the last one."""
    best: dict[Any, Any] = {}
    for row in rows:
        k = key(row)
        if k not in best or rank(row) >= rank(best[k]):
            best[k] = row
    return best


def event_rank(row: StoredEvent) -> tuple[int, int]:
    """Which delivery of an event wins: the earliest occurred_at, then an on-time row."""
    return (-row.record.ts, 0 if row.late else 1)


def live_generation(generations: list[GenerationRow]) -> int:
    """The newest generation every partition reported, 0 when none (`generation_current`)."""
    reported: dict[int, set[int]] = {}
    needed: dict[int, int] = {}
    for row in generations:
        reported.setdefault(row.generation, set()).add(row.partition)
        needed[row.generation] = max(needed.get(row.generation, 0), row.partitions)
    return max((g for g, parts in reported.items() if len(parts) >= needed[g]), default=0)


def final_tables(output: Output) -> FinalTables:
    """Collapse rows the way the ClickHouse tables do (ReplacingMergeTree read with FINAL).

    When the output reports generations, derived rows of the live one only; without
    any, every derived row (one engine run makes one generation)."""
    links = newest(output.links, lambda r: (r.kind, r.alias), lambda r: -r.linked_at)
    live = live_generation(output.generations)

    def derived(rows: list[Any]) -> list[Any]:
        return [r for r in rows if r.generation == live] if output.generations else rows

    transitions = newest(
        derived(output.transitions), lambda r: (r.account_id, r.to_phase), lambda r: r.version
    )
    journeys = newest(derived(output.journeys), lambda r: r.account_id, lambda r: r.version)
    events = {
        event_id: replace(row, account_id=attributed_account(row, links))
        for event_id, row in newest(output.events, lambda r: r.record.event_id, event_rank).items()
    }
    return FinalTables(
        events=events,
        transitions={k: r for k, r in transitions.items() if not r.deleted},
        journeys={k: r for k, r in journeys.items() if not r.deleted},
        alerts=newest(derived(output.alerts), lambda r: r.alert_id, lambda r: r.version),
        links=links,
        dead_letters=newest(output.dead_letters, lambda r: r.dead_letter_id, lambda r: 0),
    )


def attributed_account(row: StoredEvent, links: dict[tuple[str, str], IdentityLink]) -> str | None:
    """The account a stored event belongs to once identity links are applied.

    An event stored without an account takes the account its contact_id, else
    its anonymous_id, else its email was linked to; an account merged into
    another hands its events on (following the chain).
    """
    account = row.account_id
    if account is None:
        record = row.record
        for kind, alias in (
            ("contact_id", record.contact_id),
            ("anonymous_id", record.anonymous_id),
            ("email", record.email),
        ):
            link = links.get((kind, alias)) if alias else None
            if link is not None:
                account = link.account_id
                break
    return None if account is None else _follow(links, account)
