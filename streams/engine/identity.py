"""Identity: which journey an event belongs to, decided from the alias table alone.

An event names its own identity (account_id, else the email's company, else
its free-mail address, else its contact or anonymous visitor) and carries
aliases (anonymous_id, contact_id, email) that earlier events may have linked
to a journey. `Identity.decide` returns what the event means for identity; the
engine carries it out (creating, merging and relinking journeys):

- The highest-ranked journey among the event's own and its aliases' wins.
  Lower-ranked ones merge into it (a visitor into the account it turns out to
  be, a domain account into the ERP account its contact belongs to); two
  different accounts of the same rank never merge.
- An own account key that loses to a higher-ranked account is redirected to
  it even when it has no journey yet, so its later events follow.
- An alias seen with two accounts of the same rank belongs to the one it was
  linked to earliest in event time (ties: the smaller account key), whatever
  the order the events arrive in. A link's time is when both ends were known:
  the event's time, or the later link it went through.

Limits (documented in the README): an alias that a late event moves to
another account of the same rank takes its later events along, but events
that reached the first account only through that alias before the late event
arrived stay there, and so does a lower-ranked account already merged into it
through the alias.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from journeys.schemas.identity import FREE_MAIL_DOMAINS
from journeys.schemas.record import EventRecord
from journeys.streams.engine.state import (
    ACCOUNT_RANK,
    RANK_ACCOUNT,
    RANK_ANONYMOUS,
    RANK_CONTACT,
    RANK_DOMAIN,
    RANK_FREE_MAIL,
)

#: Link kinds of alias key prefixes ("a:…", "c:…", "e:…").
ALIAS_KINDS = {"a": "anonymous_id", "c": "contact_id", "e": "email"}
_NEVER = 2**62
_LINK_SEPARATOR = "\x1f"


def own_identity(event: EventRecord) -> tuple[str, int]:
    """The event's own identity and its rank."""
    if event.account_id:
        return event.account_id, RANK_ACCOUNT
    email = event.email
    if email:
        domain = email.rpartition("@")[2]
        if domain in FREE_MAIL_DOMAINS:
            return email, RANK_FREE_MAIL
        return domain, RANK_DOMAIN
    if event.contact_id:
        return "?c:" + event.contact_id, RANK_CONTACT
    return "?a:" + (event.anonymous_id or ""), RANK_ANONYMOUS


def link_value(alias: str, key: str, at: int | None) -> str:
    """An alias's journey and link time as one checkpoint value.

    The journey is left out when the alias names it itself (an email's company or
    free-mail address, a visitor's own cookie or contact); the time is in base 36.
    """
    named = "" if key == _named_by(alias) else key
    return named if at is None else f"{named}{_LINK_SEPARATOR}{_base36(at)}"


def link_of(alias: str, value: str) -> tuple[str, int | None]:
    """The inverse of `link_value`."""
    key, _, at = value.partition(_LINK_SEPARATOR)
    return key or _named_by(alias), int(at, 36) if at else None


def _named_by(alias: str) -> str:
    """The journey an alias names by itself: what `own_identity` gives an event with it alone."""
    if alias[0] == "e":
        email = alias[2:]
        domain = email.rpartition("@")[2]
        return email if domain in FREE_MAIL_DOMAINS else domain
    return "?" + alias


def _base36(number: int) -> str:
    if number < 0:
        return "-" + _base36(-number)
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
        if not number:
            return "".join(reversed(digits))


class Ranked(Protocol):
    """What identity needs to know of a journey: its rank."""

    rank: int


@dataclass(slots=True)
class Decision:
    """What one event means for identity."""

    #: The journey the event belongs to, and its rank.
    winner: str
    rank: int
    #: The moment the event's links hold (its time, or a later link it goes through).
    at: int
    #: Whether the winner's journey is new, and whether an existing one's rank rises.
    create: bool = False
    upgrade: bool = False
    #: Journeys to fold into the winner.
    losers: list[str] = field(default_factory=list)
    #: An own account key without a journey that now points at the winner.
    redirect: str | None = None
    #: Aliases to link to the winner.
    link: list[str] = field(default_factory=list)
    #: Aliases linked to another account of the winner's rank, later than this event.
    relink: list[tuple[str, str]] = field(default_factory=list)
    #: Aliases already the winner's whose link this event makes earlier.
    earlier: list[str] = field(default_factory=list)


class Identity:
    """The alias table, account redirects and link times."""

    def __init__(self) -> None:
        #: alias key ("a:…", "c:…", "e:…") -> journey key
        self.aliases: dict[str, str] = {}
        #: alias key -> when it was linked to its account (aliases of visitors have none)
        self.linked: dict[str, int] = {}
        #: account key merged away -> the account it merged into
        self.redirects: dict[str, str] = {}
        self.touched_aliases: set[str] = set()
        self.touched_redirects: set[str] = set()

    # ------------------------------------------------------------- lookups

    def find(self, key: str) -> str:
        """The account a key ends at after merges."""
        redirects = self.redirects
        if key not in redirects:
            return key
        root = key
        while root in redirects:
            root = redirects[root]
        while key != root:  # path compression
            following = redirects[key]
            redirects[key] = root
            key = following
        return root

    own = staticmethod(own_identity)

    @staticmethod
    def alias_keys(event: EventRecord) -> list[str]:
        """The event's aliases, contact first."""
        keys = []
        if event.contact_id:
            keys.append("c:" + event.contact_id)
        if event.email:
            keys.append("e:" + event.email)
        if event.anonymous_id:
            keys.append("a:" + event.anonymous_id)
        return keys

    def lookup(self, event: EventRecord, holders: Mapping[str, Ranked]) -> str | None:
        """The journey an event belongs to now, without learning anything."""
        own, _ = self.own(event)
        best_key = self.find(own)
        best = holders.get(best_key)
        for alias in self.alias_keys(event):
            key = self.aliases.get(alias)
            if key is None:
                continue
            root = self.find(key)
            holder = holders.get(root)
            if holder is not None and (best is None or holder.rank > best.rank):
                best, best_key = holder, root
        return best_key if best is not None else None

    # ------------------------------------------------------------- deciding

    def known(self, event: EventRecord, holders: Mapping[str, Ranked]) -> str | None:
        """The common case, decided quickly: nothing to learn, the journey is known.

        Either the event's own journey exists and its aliases all point to it, or the
        event names only a visitor no longer kept and its aliases all point to one journey.
        """
        own_key, own_rank = own_identity(event)
        redirects = self.redirects
        if own_key in redirects:
            own_key = self.find(own_key)
        own = holders.get(own_key)
        aliases = self.aliases
        target: str | None
        if own is not None:
            if own.rank < own_rank:
                return None
            contact, email, anonymous = event.contact_id, event.email, event.anonymous_id
            if (
                (contact is None or aliases.get("c:" + contact) == own_key)
                and (email is None or aliases.get("e:" + email) == own_key)
                and (anonymous is None or aliases.get("a:" + anonymous) == own_key)
            ):
                return own_key
            target = own_key
        elif own_rank >= ACCOUNT_RANK:
            return None
        else:
            target = None
        for alias in (
            None if event.contact_id is None else "c:" + event.contact_id,
            None if event.email is None else "e:" + event.email,
            None if event.anonymous_id is None else "a:" + event.anonymous_id,
        ):
            if alias is None:
                continue
            key = aliases.get(alias)
            if key == target:
                continue
            if key is None:
                return None
            if key in redirects:
                key = self.find(key)
                if key == target:
                    continue
            if target is not None or key not in holders:
                return None
            target = key
        return target

    def decide(self, event: EventRecord, holders: Mapping[str, Ranked]) -> Decision:
        """What the event means for identity (nothing is changed here)."""
        ts = event.ts
        own_key, own_rank = self.own(event)
        if own_key in self.redirects:
            own_key = self.find(own_key)
        own = holders.get(own_key)
        upgrade = own is not None and own.rank < own_rank
        if own is not None and own.rank > own_rank:
            own_rank = own.rank
        found: dict[str, tuple[int, str]] = {}  # journey key -> (rank, alias it was found by)
        aliases, linked = self.aliases, self.linked
        alias_keys = self.alias_keys(event)
        unlinked: list[str] = []
        stale: list[str] = []
        by_alias: dict[str, str] = {}
        for alias in alias_keys:
            key = aliases.get(alias)
            if key is None:
                unlinked.append(alias)
                continue
            root = self.find(key)
            holder = holders.get(root)
            if holder is None:
                stale.append(alias)  # its visitor was forgotten
                unlinked.append(alias)
                continue
            by_alias[alias] = root
            if root == own_key:
                continue
            seen = found.get(root)
            if seen is None or linked.get(alias, _NEVER) < linked.get(seen[1], _NEVER):
                found[root] = (holder.rank, alias)
        for alias in stale:
            del aliases[alias]
            linked.pop(alias, None)
            self.touched_aliases.add(alias)

        top = max([own_rank, *(rank for rank, _ in found.values())])
        if own_rank == top:
            winner, at = own_key, ts
        else:
            # Of equal-ranked accounts, the one linked earliest (then the smaller key).
            winner, (_, via) = min(
                ((k, v) for k, v in found.items() if v[0] == top),
                key=lambda kv: (linked.get(kv[1][1], _NEVER), kv[0]),
            )
            via_at = linked.get(via)
            at = ts if via_at is None or via_at < ts else via_at
        decision = Decision(winner, top, at, upgrade=upgrade)
        if winner == own_key:
            decision.create = own is None
        elif own is not None and (own_rank < top or own_rank < ACCOUNT_RANK):
            decision.losers.append(own_key)
        elif own is None and own_rank >= ACCOUNT_RANK and own_rank < top:
            decision.redirect = own_key
        for key, (rank, _) in found.items():
            if key == winner:
                continue
            if rank < top or rank < ACCOUNT_RANK:
                decision.losers.append(key)
        if top >= ACCOUNT_RANK:
            for alias, root in by_alias.items():
                if root == winner:
                    if linked.get(alias, _NEVER) > at:
                        decision.earlier.append(alias)
                elif root not in decision.losers and holders[root].rank == top:
                    if (at, winner) < (linked.get(alias, _NEVER), root):
                        decision.relink.append((alias, root))
        decision.link = unlinked
        return decision
