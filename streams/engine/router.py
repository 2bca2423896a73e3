"""The identity router: the one owner of the identity graph, routing events to journeys.

Every event passes through one router (the identity stage). It decides which
journey the event belongs to (`identity.Identity`), carries out what identity
learns (journeys merged, aliases linked and relinked, accounts redirected,
visitors forgotten after the visitor TTL) and tells the journey partitions
what to do, as commands (`commands`), each for the partition of its journey
key (`commands.partition_of`):

- `Route` an event to its journey, with the journey's rank and contact count;
- `Release` a journey merged into another (its partition sends the state on),
  and tell the winner's partition to `Expect` it;
- `Contacts` for a journey that lost a contact to another account;
- `Forget` a visitor not seen for the visitor TTL;
- `Advance` event time, to every partition;
- and, when a person is erased (`erase`, from `journeys forget` through the
  identity stage), `Forget` their own journeys, `Contacts` and `Erase` (their
  events) for the accounts they were part of.

The router keeps, per journey, only what identity needs: its rank, the latest
event time routed to it, a visitor's aliases and the contact count (a
`Shadow`). What it publishes itself are identity links.

Commands for one partition are sent in the order they were made, so a
partition never sees an event under a key the router has merged away; only
absorbs, sent from partition to partition, can find their winner gone (see
`PartitionEngine`, forwards).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import IdentityLink
from journeys.streams.engine.commands import (
    Advance,
    Command,
    Contacts,
    Erase,
    Expect,
    Forget,
    Rebuild,
    Release,
    Route,
    partition_of,
)
from journeys.streams.engine.identity import (
    ALIAS_KINDS,
    Decision,
    Identity,
    Names,
    alias_journey,
    alias_names,
    key_names,
    link_of,
    link_value,
    redirect_of,
    redirect_value,
)
from journeys.streams.engine.partition import RESTART_GAP, EngineConfig
from journeys.streams.engine.state import ACCOUNT_RANK, MAX_VISITOR_ALIASES
from journeys.streams.engine.store import Paged, Store

#: Row versions per step of the sequence: a partition publishes rows with versions
#: `seq * 4 + stage` (`PartitionEngine._version`).
VERSIONS_PER_SEQ = 4

#: At most this many keys' `names` answers are remembered during an erasure.
_NAMING = 1 << 16

# State keys (see `IdentityRouter.changes`).
_SHADOW, _ALIAS, _REDIRECT, META = b"s:", b"a:", b"r:", b"m:router"


class Shadow:
    """What the router knows of one journey."""

    __slots__ = ("key", "rank", "latest", "contacts", "aliases", "wake")

    def __init__(self, key: str, rank: int, ts: int) -> None:
        self.key = key
        self.rank = rank
        #: The latest event time routed to the journey.
        self.latest = ts
        self.contacts = 0
        #: Alias keys of an unidentified visitor, for links and eviction.
        self.aliases: list[str] | None = [] if rank < ACCOUNT_RANK else None
        self.wake: int | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.rank, self.latest, self.contacts, self.aliases])

    @classmethod
    def from_bytes(cls, key: str, data: bytes) -> Shadow:
        rank, latest, contacts, aliases = orjson.loads(data)
        shadow = cls(key, rank, latest)
        shadow.contacts, shadow.aliases = contacts, aliases
        return shadow


def _alias_target(alias: str, data: bytes) -> str:
    return link_of(alias, data.decode())[0]


def _alias_linked(alias: str, data: bytes) -> int | None:
    return link_of(alias, data.decode())[1]


def _redirect_target(_: str, data: bytes) -> str:
    return redirect_of(data.decode())[0]


def _redirect_at(_: str, data: bytes) -> int | None:
    return redirect_of(data.decode())[1]


@dataclass
class Erased:
    """What `IdentityRouter.erase` removed: aliases, merged-account redirects, journeys
    forgotten whole, and journeys told to erase events."""

    aliases: int = 0
    redirects: int = 0
    journeys: int = 0
    erased_in: int = 0


def _event_names(event: EventRecord, names: Names) -> bool:
    """Whether an event carries an identifier `names` names."""
    return any(
        value and names(kind, value)
        for kind, value in (
            ("email", event.email),
            ("contact_id", event.contact_id),
            ("anonymous_id", event.anonymous_id),
            ("account_id", event.account_id),
        )
    )


class IdentityRouter:
    """Events in (in any order), commands for `partitions` journey partitions out.

    `process` routes an event and advances event time to it; `process_late`
    routes one without moving event time; `advance_to(ts)` says nothing more is
    expected before `ts`. `take()` hands over the commands per partition and
    the identity links made since the last call.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        partitions: int = 1,
        store: Store | None = None,
        capacity: int = 0,
    ) -> None:
        """A router with nothing routed yet. With a `store`, its graph lives there and
        only the entries changed since the last save and up to `capacity` read last per
        table stay in memory (`store.Paged`); `changes()` writes the store."""
        self.config = config or EngineConfig.default()
        self.partitions = partitions
        self._store = store
        self.shadows: MutableMapping[str, Shadow]
        #: The tables kept in the store (none without one).
        self._tables: list[Paged[Any]] = []
        if store is None:
            self.identity = Identity()
            self.shadows = {}
        else:
            aliases = Paged(_ALIAS, _alias_target, store, capacity)
            linked = Paged(_ALIAS, _alias_linked, store, capacity)
            redirects = Paged(_REDIRECT, _redirect_target, store, capacity)
            redirected_at = Paged(_REDIRECT, _redirect_at, store, capacity)
            self.identity = Identity(aliases, linked, redirects, redirected_at)
            self.shadows = shadows = Paged(_SHADOW, Shadow.from_bytes, store, capacity)
            self._tables = [shadows, aliases, linked, redirects, redirected_at]
        self.clock = 0
        self._until = 0
        self._seq = 0
        self._ttl = self.config.visitor_ttl
        self._wakes: list[tuple[int, str]] = []
        self._commands: list[tuple[int, Command]] = []
        self._links: list[IdentityLink] = []
        #: The event time last sent to every partition with `Advance`.
        self._advanced = 0
        self._touched: set[str] = set()

    @property
    def seq(self) -> int:
        """The router's Lamport sequence."""
        return self._seq

    # ------------------------------------------------------------------ input

    def process(self, event: EventRecord) -> None:
        """Route one event and advance event time to it."""
        self._seq += 1
        ts = event.ts
        if ts > self.clock:
            self.clock = ts
            if ts > self._until:
                self._until = ts
                if self._wakes and self._wakes[0][0] < ts:
                    self._wake()
            self._route(event, False)
        elif ts < self.clock:
            self._route(event, True)
        else:
            self._route(event, False)

    def process_all(self, events: Iterable[EventRecord]) -> None:
        """Route many events."""
        for event in events:
            self.process(event)

    def process_late(self, event: EventRecord) -> None:
        """Route an event that came after event time passed it; event time stays."""
        self._seq += 1
        self._route(event, True)

    def advance_to(self, ts: int) -> None:
        """Event time reached `ts` with nothing more before it."""
        self._seq += 1
        self.clock = max(self.clock, ts)
        self._until = max(self._until, ts + 1)
        if self._wakes and self._wakes[0][0] < self._until:
            self._wake()

    def take(self) -> tuple[list[tuple[int, Command]], list[IdentityLink]]:
        """The (partition, command) pairs and identity links made since the last call.

        Ends with an `Advance` to every partition when event time moved, so each
        partition's deadlines follow the router's event time.
        """
        until = self._until
        if until - 1 > self._advanced:
            self._advanced = until - 1
            seq = self._seq
            self._commands += [(p, Advance(seq, until - 1)) for p in range(self.partitions)]
        commands, self._commands = self._commands, []
        links, self._links = self._links, []
        return commands, links

    # ------------------------------------------------------------------ routing

    def _send(self, key: str, command: Command) -> None:
        self._commands.append((partition_of(key, self.partitions), command))

    def _route(self, event: EventRecord, late: bool) -> None:
        shadows = self.shadows
        identity = self.identity
        key = None if late else identity.known(event, shadows)
        ts = event.ts
        if key is not None and ts < shadows[key].latest:
            key = None  # earlier than the journey's latest event: it may link an alias earlier
        h = (
            shadows[key]
            if key is not None
            else self._carry_out(identity.decide(event, shadows), ts)
        )
        if ts > h.latest:
            h.latest = ts
            self._touched.add(h.key)
        self._send(h.key, Route(self._seq, h.key, h.rank, h.contacts, late, event))

    def _carry_out(self, d: Decision, ts: int) -> Shadow:
        shadows = self.shadows
        winner = shadows.get(d.winner)
        if winner is None:
            winner = shadows[d.winner] = Shadow(d.winner, d.rank, ts)
            self._touched.add(d.winner)
            if d.rank < ACCOUNT_RANK:
                self._schedule(winner)  # forgotten after visitor_ttl without events
        elif d.upgrade and winner.rank < d.rank:
            winner.rank = d.rank
            self._touched.add(d.winner)
        for key in d.losers:
            loser = shadows.get(key)
            if loser is not None and loser is not winner:
                self._merge(loser, winner, d.at, d.merged_at.get(key, d.at), d.entry)
        if d.redirect is not None:
            self._redirect(d.redirect, winner.key, d.at)
        for alias in d.link:
            self._link(alias, winner, d.alias_at, new=True, entry=d.entry)
        for alias, previous in d.relink:
            self._relink(alias, shadows.get(previous), winner, d.alias_at, d.entry)
        identity = self.identity
        for alias in d.earlier:
            if d.names_account:
                identity.aliases[alias] = d.entry  # the account this event links it to
            identity.linked[alias] = d.alias_at
            identity.touched_aliases.add(alias)
            self._links.append(
                IdentityLink(ALIAS_KINDS[alias[0]], alias[2:], winner.key, d.alias_at)
            )
        for key, at in d.redirect_earlier:
            self._redirect(key, winner.key, at)
        return winner

    def _link(self, alias: str, h: Shadow, ts: int, new: bool, entry: str = "") -> None:
        """Link `alias` to `h`'s journey, naming `entry` (an account merged into it) if given."""
        identity = self.identity
        identity.aliases[alias] = entry or h.key
        identity.touched_aliases.add(alias)
        if new and alias[0] == "c":
            h.contacts += 1
            self._touched.add(h.key)
        if h.rank >= ACCOUNT_RANK:
            identity.linked[alias] = ts
            self._links.append(IdentityLink(ALIAS_KINDS[alias[0]], alias[2:], h.key, ts))
        elif h.aliases is not None and len(h.aliases) < MAX_VISITOR_ALIASES:
            h.aliases.append(alias)
            self._touched.add(h.key)

    def _relink(
        self, alias: str, previous: Shadow | None, winner: Shadow, ts: int, entry: str
    ) -> None:
        """An alias linked to another account later in event time than this event: it moves."""
        if previous is not None and alias[0] == "c":
            previous.contacts -= 1
            self._touched.add(previous.key)
            self._send(previous.key, Contacts(self._seq, previous.key, previous.contacts))
        self._link(alias, winner, ts, new=True, entry=entry)

    def _redirect(self, key: str, target: str, ts: int) -> None:
        self.identity.redirects[key] = target
        self.identity.redirected_at[key] = ts
        self.identity.touched_redirects.add(key)
        self._links.append(IdentityLink("account", key, target, ts))

    def _merge(self, loser: Shadow, winner: Shadow, ts: int, joined: int, entry: str) -> None:
        """`loser` turns out to be `winner`'s journey at `ts`: its partition sends its state on.

        A losing account is linked to the winner from `joined` on (later than `ts` when it
        was found through an alias linked to it only later); a losing visitor's aliases
        name `entry`."""
        if loser.latest > winner.latest:
            winner.latest = loser.latest
        winner.contacts += loser.contacts
        del self.shadows[loser.key]
        self._touched.add(loser.key)
        self._touched.add(winner.key)
        self._send(loser.key, Release(self._seq, loser.key, winner.key, winner.rank, ts))
        if partition_of(loser.key, self.partitions) != partition_of(winner.key, self.partitions):
            self._send(winner.key, Expect(self._seq, loser.key, winner.key, ts))
        if loser.rank >= ACCOUNT_RANK:
            self._redirect(loser.key, winner.key, joined)
        for alias in loser.aliases or ():
            if self.identity.aliases.get(alias) == loser.key:
                self._link(alias, winner, ts, new=False, entry=entry)

    # ------------------------------------------------------------------ visitors

    def _schedule(self, h: Shadow) -> None:
        wake = h.latest + self._ttl
        if h.wake is None or wake < h.wake:
            h.wake = wake
            heapq.heappush(self._wakes, (wake, h.key))

    def _wake(self) -> None:
        """Forget visitors not seen for the visitor TTL (timers are moved on lazily)."""
        until = self._until
        wakes = self._wakes
        shadows = self.shadows
        while wakes and wakes[0][0] < until:
            deadline, key = heapq.heappop(wakes)
            h = shadows.get(key)
            if h is None or (h.wake != deadline and h.wake is not None):
                continue  # a timer moved on (one read back from a store has lost its own)
            h.wake = None
            if h.rank >= ACCOUNT_RANK:
                continue
            if h.latest + self._ttl < until:
                self._forget(h)
            else:
                self._schedule(h)

    def _forget(self, h: Shadow) -> None:
        del self.shadows[h.key]
        self._touched.add(h.key)
        identity = self.identity
        for alias in h.aliases or ():
            if identity.aliases.get(alias) == h.key:
                del identity.aliases[alias]
                identity.linked.pop(alias, None)
                identity.touched_aliases.add(alias)
        self._send(h.key, Forget(self._seq, h.key))

    # ------------------------------------------------------------------ erasure

    def erase(
        self,
        names: Names,
        event_ids: Sequence[str] = (),
        stored_under: Callable[[str], bool] | None = None,
        version: int = 0,
    ) -> Erased:
        """Forget a person (or company): every identifier `names` names.

        Their aliases and the links of their journeys go (`changes()` gives deletions,
        tombstones in the changelog), and so do merged-account redirects that name them
        or end at a journey of theirs; an alias naming a merged account of theirs points
        at the account it ended at instead. Their own journeys (a visitor's `?a:…`, a
        free-mail address, an account asked for) are forgotten (`Forget`); an account
        that loses one of their contacts is told its new count (`Contacts`); the
        journeys their aliases led to, and those whose key `stored_under` accepts (the
        accounts their stored events were under), are told to `Erase` `event_ids`.
        `Forget` goes to every partition, and also for keys of theirs that no longer
        hold a journey (a visitor merged into an account): a partition keeps what it
        forwarded or absorbed under such keys.
        Commands and links made since the last `take()` that carry them are dropped.
        `version`: rows were written with versions up to it (the accounts `forget`
        recomputed); the sequence jumps past it, so what the partitions publish from now
        on supersedes them.
        Costs one `names` call per alias and journey key (hashing: linear in the state),
        and one pass over each table (with a store, a scan: the tables are never whole in
        memory).
        """
        self._seq = max(self._seq + 1, version // VERSIONS_PER_SEQ + 1)
        identity, shadows = self.identity, self.shadows
        aliases, redirects = identity.aliases, identity.redirects
        naming: dict[str, bool] = {}

        def named(key: str) -> bool:
            found = naming.get(key)
            if found is None:
                if len(naming) >= _NAMING:
                    naming.clear()
                found = naming[key] = key_names(key, names)
            return found

        # One pass over each table (a store's tables are scanned, never held whole);
        # what changes is collected first and changed after the passes.
        forgotten = {key for key in shadows if named(key)}
        targets: set[str] = set()
        if stored_under is not None:
            targets |= {key for key in shadows if stored_under(key)}
        remnants: set[str] = set()
        gone: list[str] = []
        for key in redirects:  # find() compresses chains (values only): saved (`_compress`)
            root = identity.find(key)
            if stored_under is not None and stored_under(key):
                targets.add(root)
            if named(key) or root in forgotten or named(root):
                gone.append(key)
                if named(key):
                    remnants.add(key)
        removed: list[tuple[str, str]] = []
        rerooted: list[tuple[str, str]] = []
        for alias, target in aliases.items():
            root = identity.find(target)
            person = alias_names(alias, names)
            if person:
                targets.add(root)
            if person or root in forgotten or named(root):
                removed.append((alias, root))
            elif named(target):
                rerooted.append((alias, root))  # it named a merged account of theirs
        erased = Erased()
        recount: set[str] = set()
        for alias, root in removed:
            self._unlink(alias, root, forgotten, recount)
        for alias, root in rerooted:
            aliases[alias] = root
            identity.touched_aliases.add(alias)
        erased.aliases = len(removed)
        gone_aliases = {alias for alias, _ in removed}
        remnants |= {k for k in map(alias_journey, gone_aliases) if named(k)}
        for key in gone:
            del redirects[key]
            identity.redirected_at.pop(key, None)
            identity.touched_redirects.add(key)
        erased.redirects = len(gone)
        kept = [
            (h.key, [alias for alias in h.aliases if alias not in gone_aliases])
            for h in shadows.values()
            if h.aliases and not gone_aliases.isdisjoint(h.aliases)
        ]
        for key, left in kept:
            h = shadows[key]
            h.aliases = left
            shadows[key] = h  # one read back from a store is kept until saved
            self._touched.add(key)
        self._drop_pending(names, named)
        seq = self._seq
        for key in sorted(forgotten):
            del shadows[key]
            self._touched.add(key)
        for key in sorted(forgotten | remnants):
            self._commands += [(p, Forget(seq, key)) for p in range(self.partitions)]
        erased.journeys = len(forgotten)
        for key in sorted(recount - forgotten):
            self._send(key, Contacts(seq, key, shadows[key].contacts))
        if event_ids:
            ids = tuple(event_ids)
            for key in sorted(k for k in targets - forgotten if k in shadows):
                self._send(key, Erase(seq, key, ids))
                erased.erased_in += 1
        return erased

    def rebuild(self, generation: int, rules: str) -> None:
        """Every journey partition derives its journeys again with `rules` as generation
        `generation` (`journeys rebuild`), at this point of the sequenced input."""
        self._seq += 1
        command = Rebuild(self._seq, generation, rules)
        self._commands += [(p, command) for p in range(self.partitions)]

    def _unlink(self, alias: str, root: str, forgotten: set[str], recount: set[str]) -> None:
        """Remove an alias; the surviving journey it counted as a contact counts one less."""
        identity = self.identity
        del identity.aliases[alias]
        identity.linked.pop(alias, None)
        identity.touched_aliases.add(alias)
        h = self.shadows.get(root)
        if alias[0] == "c" and h is not None and root not in forgotten and h.contacts > 0:
            h.contacts -= 1
            self._touched.add(root)
            recount.add(root)

    def _drop_pending(self, names: Names, named: Callable[[str], bool]) -> None:
        """Routes of the person's events and links of theirs not yet taken (made earlier in
        the same batch) are dropped: nothing of theirs leaves after the request."""
        self._commands = [
            (p, c)
            for p, c in self._commands
            if not (isinstance(c, Route) and _event_names(c.event, names))
        ]
        self._links = [
            link
            for link in self._links
            if not (names(link.kind, link.alias) or named(link.account_id) or named(link.alias))
        ]

    # ------------------------------------------------------------------ state

    def changes(self) -> dict[bytes, bytes | None]:
        """State changed since the last call, as key-value pairs (None: delete the key)."""
        out: dict[bytes, bytes | None] = {}
        shadows = self.shadows
        for key in self._touched:
            h = shadows.get(key)
            out[_SHADOW + key.encode()] = None if h is None else h.to_bytes()
        identity = self.identity
        for alias in identity.touched_aliases:
            target = identity.aliases.get(alias)
            at = identity.linked.get(alias)
            value = None if target is None else link_value(alias, target, at).encode()
            out[_ALIAS + alias.encode()] = value
        for key in identity.touched_redirects:
            target = identity.redirects.get(key)
            if target is None:  # erased
                out[_REDIRECT + key.encode()] = None
                continue
            at = identity.redirected_at.get(key)
            out[_REDIRECT + key.encode()] = redirect_value(target, at).encode()
        meta = {"clock": self.clock, "until": self._until, "seq": self._seq}
        meta["advanced"] = self._advanced
        out[META] = orjson.dumps(meta)
        self._touched = set()
        identity.touched_aliases, identity.touched_redirects = set(), set()
        if self._store is not None:
            self._store.write(out)
            for table in self._tables:
                table.saved()
        return out

    @classmethod
    def restore(
        cls, config: EngineConfig, state: dict[bytes, bytes], partitions: int = 1
    ) -> IdentityRouter:
        """A router continuing from its state (`changes()` applied in order)."""
        router = cls(config, partitions)
        identity = router.identity
        meta: dict[str, int] = {}
        for name, value in state.items():
            prefix, key = name[:2], name[2:].decode()
            if prefix == _SHADOW:
                router.shadows[key] = Shadow.from_bytes(key, value)
            elif prefix == _ALIAS:
                target, at = link_of(key, value.decode())
                identity.aliases[key] = target
                if at is not None:
                    identity.linked[key] = at
            elif prefix == _REDIRECT:
                target, at = redirect_of(value.decode())
                identity.redirects[key] = target
                if at is not None:
                    identity.redirected_at[key] = at
            elif name == META:
                meta = orjson.loads(value)
        router._resume(meta)
        for shadow in router.shadows.values():
            if shadow.rank < ACCOUNT_RANK:
                router._schedule(shadow)
        return router

    @classmethod
    def restore_stored(
        cls, config: EngineConfig, store: Store, partitions: int, capacity: int
    ) -> IdentityRouter:
        """A router continuing from its state written into `store` (by
        `Changelog.load_into`), keeping it there: only the visitors' timers are read
        into memory (a visitor's journey key starts with "?")."""
        router = cls(config, partitions, store, capacity)
        router._resume(orjson.loads(store.get(META) or b"{}"))
        skip = len(_SHADOW)
        for name, value in store.items(_SHADOW + b"?"):
            key = name[skip:].decode()
            shadow = Shadow.from_bytes(key, value)
            if shadow.rank < ACCOUNT_RANK:
                router._schedule(shadow)  # its wake is kept in the heap only: see `_wake`
        return router

    def _resume(self, meta: dict[str, int]) -> None:
        """Event time, sequence and the time last advanced, from the saved meta record."""
        self.clock = int(meta.get("clock", 0))
        self._until = int(meta.get("until", self.clock))
        self._seq = int(meta.get("seq", 0)) + RESTART_GAP
        self._advanced = int(meta.get("advanced", 0))
