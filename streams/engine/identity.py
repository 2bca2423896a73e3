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
  the order the events arrive in.
- A link's time is the earliest moment in event time its two ends were joined:
  over every path of events and links between them, the latest step of the
  path (what replay in event-time order finds). An event that names an account
  links its aliases at its own time; one that reaches an account only through
  an alias, at that alias's link time if later. An alias points at the account
  it was linked to (a company domain merged into an ERP account later in event
  time is kept as the alias's account, with its own merge time), so a late
  event can move both links back.

Limits (documented in the README): an alias that a late event moves to
another account of the same rank takes its later events along, but events
that reached the first account only through that alias before the late event
arrived stay there, and so does a lower-ranked account already merged into it
through the alias.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
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


#: Whether an identifier (kind as `journeys.schemas.privacy.IdentifierKind`, value) names
#: a person being erased: how the router is told whom to forget (`IdentityRouter.erase`).
Names = Callable[[str, str], bool]


def alias_names(alias: str, names: Names) -> bool:
    """Whether an alias key ("a:…", "c:…", "e:…") is an identifier `names` names."""
    kind = ALIAS_KINDS.get(alias[:1])
    return kind is not None and names(kind, alias[2:])


def alias_journey(alias: str) -> str:
    """The journey key an alias makes by itself (a visitor's `?a:…`/`?c:…`, an email's
    company or free-mail address): where remnants of it may be kept."""
    return _named_by(alias)


def key_names(key: str, names: Names) -> bool:
    """Whether a journey or account key is made of an identifier `names` names: a
    visitor's "?a:…" or "?c:…", an account id, or a free-mail address (its own account)."""
    if key.startswith("?"):
        return alias_names(key[1:], names)
    return names("account_id", key) or ("@" in key and names("email", key))


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


def redirect_value(target: str, at: int | None) -> str:
    """A merged account's target and merge time as one checkpoint value."""
    return target if at is None else f"{target}{_LINK_SEPARATOR}{_base36(at)}"


def redirect_of(value: str) -> tuple[str, int | None]:
    """The inverse of `redirect_value` (a value without a time is read too)."""
    target, _, at = value.partition(_LINK_SEPARATOR)
    return target, int(at, 36) if at else None


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
    #: The moment the event's own aliases are linked: its time when it names an account
    #: itself (they meet that account in this very event), else `at`.
    alias_at: int = 0
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
    #: The key the event's new aliases name: the winner, or the event's own account when
    #: that joined the winner only later in event time.
    entry: str = ""
    #: Whether the event names an account itself (its aliases meet it in this event).
    names_account: bool = False
    #: Losing accounts found through an alias linked to them after `at`: when they join.
    merged_at: dict[str, int] = field(default_factory=dict)
    #: Account keys merged into the winner before, that this event links to it earlier.
    redirect_earlier: list[tuple[str, int]] = field(default_factory=list)


class Identity:
    """The alias table, account redirects and link times."""

    def __init__(
        self,
        aliases: MutableMapping[str, str] | None = None,
        linked: MutableMapping[str, int] | None = None,
        redirects: MutableMapping[str, str] | None = None,
        redirected_at: MutableMapping[str, int] | None = None,
    ) -> None:
        """Empty tables, dicts unless given (the router's maps over a store, `store.Paged`)."""
        #: alias key ("a:…", "c:…", "e:…") -> journey key
        self.aliases: MutableMapping[str, str] = {} if aliases is None else aliases
        #: alias key -> when it was linked to its account (aliases of visitors have none)
        self.linked: MutableMapping[str, int] = {} if linked is None else linked
        #: account key merged away -> the account it merged into
        self.redirects: MutableMapping[str, str] = {} if redirects is None else redirects
        #: account key merged away -> since when it belongs to the account it ends at
        self.redirected_at: MutableMapping[str, int] = (
            {} if redirected_at is None else redirected_at
        )
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
        if redirects[key] != root:
            self._compress(key, root)
        return root

    def joined(self, key: str) -> int:
        """Since when a merged account key belongs to the account it ends at."""
        redirects, times = self.redirects, self.redirected_at
        at = -_NEVER
        while key in redirects:
            at = max(at, times.get(key, _NEVER))
            key = redirects[key]
        return at

    def _compress(self, key: str, root: str) -> None:
        """Point every key on the way from `key` to `root` at `root`; each one's time becomes
        the latest merge on its way (it belongs to `root` only once all of them happened).
        The keys are saved so: an erasure may remove a key a chain went through."""
        redirects, times = self.redirects, self.redirected_at
        chain = []
        while key != root:
            chain.append(key)
            key = redirects[key]
        after: int | None = -_NEVER
        for key in reversed(chain):
            at = times.get(key)
            at = None if at is None or after is None else max(at, after)
            if at is None:
                times.pop(key, None)
            else:
                times[key] = at
            redirects[key] = root
            self.touched_redirects.add(key)
            after = at

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
        own_first = own_key
        names_account = own_rank >= ACCOUNT_RANK
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
            entry = winner
        else:
            # Of equal-ranked accounts, the one linked earliest (then the smaller key).
            winner, (_, via) = min(
                ((k, v) for k, v in found.items() if v[0] == top),
                key=lambda kv: (linked.get(kv[1][1], _NEVER), kv[0]),
            )
            via_at = linked.get(via)
            at = ts if via_at is None or via_at < ts else via_at
            entry = aliases.get(via, winner)
        alias_at = ts if names_account else at
        decision = Decision(
            winner,
            top,
            at,
            alias_at,
            upgrade=upgrade,
            entry=winner if names_account else entry,
            names_account=names_account,
        )
        if names_account and own_first != winner:
            joined = self.joined(own_first) if own_first in self.redirects else at
            if joined > ts:
                decision.entry = own_first
        if winner == own_key:
            decision.create = own is None
        elif own is not None and (own_rank < top or own_rank < ACCOUNT_RANK):
            decision.losers.append(own_key)
        elif own is None and own_rank >= ACCOUNT_RANK and own_rank < top:
            decision.redirect = own_key
        for key, (rank, via) in found.items():
            if key == winner:
                continue
            if rank < top or rank < ACCOUNT_RANK:
                decision.losers.append(key)
                via_at = linked.get(via)
                if rank >= ACCOUNT_RANK and via_at is not None and via_at > at:
                    decision.merged_at[key] = via_at
        if top >= ACCOUNT_RANK:
            for alias, root in by_alias.items():
                if root == winner or (names_account and root in decision.merged_at):
                    if linked.get(alias, _NEVER) > alias_at:
                        decision.earlier.append(alias)
                elif root in decision.losers:
                    # Merged in at `at`, but this event linked it to an account before.
                    if alias_at < at and linked.get(alias, _NEVER) > alias_at:
                        decision.earlier.append(alias)
                elif holders[root].rank == top:
                    if (alias_at, winner) < (linked.get(alias, _NEVER), root):
                        decision.relink.append((alias, root))
            if self.redirects:
                decision.redirect_earlier = self._redirects_earlier(
                    event, own_first, winner, decision.losers
                )
        decision.link = unlinked
        return decision

    def _redirects_earlier(
        self, event: EventRecord, own: str, winner: str, losers: list[str]
    ) -> list[tuple[str, int]]:
        """Account keys merged into `winner` that this event joins to it earlier than their
        merge: the event links its own key and aliases at its time, each alias is linked to
        its key since its link time and each merged key to its account since its merge. The
        time a key belongs to `winner` is the earliest, over paths between them, of the
        latest link on the path (what replay in event-time order would have found)."""
        redirects, times, linked, aliases = (
            self.redirects,
            self.redirected_at,
            self.linked,
            self.aliases,
        )
        edges: list[tuple[str, str, int]] = [("", own, event.ts)]
        starts = [own]
        for alias in self.alias_keys(event):
            key = aliases.get(alias)
            at = linked.get(alias)
            if key is None or at is None:
                continue
            edges += [("", alias, event.ts), (alias, key, at)]
            starts.append(key)
        merged = []
        for key in starts:
            while key in redirects and key not in merged:
                at = times.get(key)
                merged.append(key)
                if at is not None:
                    edges.append((key, redirects[key], at))
                key = redirects[key]
        if not merged:
            return []
        best = {winner: -_NEVER}
        changed = True
        while changed:
            changed = False
            for a, b, at in edges:
                for x, y in ((a, b), (b, a)):
                    if x in best:
                        through = max(best[x], at)
                        if through < best.get(y, _NEVER):
                            best[y] = through
                            changed = True
        out = []
        for key in merged:
            at = best.get(key, _NEVER)
            if at < times.get(key, _NEVER) and key not in losers and self.find(key) == winner:
                out.append((key, at))
        return out
