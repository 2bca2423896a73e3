"""One erasure request end to end, for the command line and the collector's endpoint.

`forget_and_publish` opens ClickHouse, notes the stored events it is about
to erase (`erased_events`), runs `journeys.sinks.clickhouse.forget` (find,
suppress, erase, recompute, audit), then, with Kafka, publishes the hashes
on the suppression topic so the running collector and workers' ingest drop
the person's events too, and a `forget` control message on the identity
stage's ordered topic so the workers erase the person from their engine
state and changelogs (`journeys.streams.erasure`). Kafka is reached before
anything is erased: a broker that cannot be reached stops the request with
nothing erased (`BrokerError`; the endpoint answers 503), to be run again once
it is up. One lost between the erasure and the publishing does not undo the
erasure: the outcome carries a warning saying that the running processes have
not been told (they learn it when the request is run again, which finds
nothing more to erase in ClickHouse but publishes the hashes; the workers'
journeys then lose only what `forget` erased the second time, see
docs/privacy.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from journeys.schemas.errors import BrokerError
from journeys.schemas.privacy import PrivacyGate, identifier_hash
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.forget import ForgetRequest, ForgetResult

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


@dataclass(frozen=True)
class Outcome:
    """A finished request, the hashes it suppressed, and what could not be done."""

    result: ForgetResult
    hashes: frozenset[str]
    warning: str | None = None
    #: `forget` control messages put on the ordered topic for the workers.
    told: int = 0


@dataclass(frozen=True)
class ErasedEvents:
    """The stored events a request erases: their ids, and the accounts they were stored
    under (the engine's and the event's own), for the workers' journeys."""

    event_ids: frozenset[str] = frozenset()
    accounts: frozenset[str] = field(default_factory=frozenset)

    def account_hashes(self, salt: bytes) -> set[str]:
        """The accounts as salted hashes (kind `account_id`): no account id in clear."""
        return {identifier_hash(salt, "account_id", account) for account in self.accounts}


def erased_events(client: Client, db: str, request: ForgetRequest) -> ErasedEvents:
    """The events `forget` will erase for this request (looked up before it does)."""
    from journeys.sinks.clickhouse.client import select
    from journeys.sinks.clickhouse.forget import _CONDITIONS, find_identifiers

    found = find_identifiers(client, db, request)
    rows = select(
        client,
        f"SELECT event_id, engine_account_id, account_id FROM {db}.events "
        f"WHERE {_CONDITIONS['events']}",
        found.parameters(),
    )
    return ErasedEvents(
        frozenset(row[0] for row in rows),
        frozenset(account for row in rows for account in row[1:] if account),
    )


def forget_and_publish(settings: Settings, request: ForgetRequest, kafka: bool) -> Outcome:
    """Erase and suppress (see the module docstring); `kafka` also publishes the list."""
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.forget import forget
    from journeys.sinks.clickhouse.migrate import migrate
    from journeys.sinks.privacy_salt import privacy_salt
    from journeys.streams.config import engine_config

    if kafka:
        from journeys.producers.suppressions import check_publishable

        check_publishable(settings)  # before anything is erased
    salt = privacy_salt(settings)
    client = connect(settings.clickhouse_dsn)
    migrate(client, settings.clickhouse_database)
    events = erased_events(client, settings.clickhouse_database, request) if kafka else None
    result, hashes = forget(
        client,
        settings.clickhouse_dsn,
        settings.clickhouse_database,
        engine_config(settings),
        salt,
        request,
    )
    if events is None:
        return Outcome(result, frozenset(hashes))
    version = published_version(client, settings.clickhouse_database, events.accounts)
    warning, told = _publish(settings, hashes, result.request_id, events, salt, version)
    return Outcome(result, frozenset(hashes), warning, told)


def published_version(client: Client, db: str, accounts: Iterable[str]) -> int:
    """The highest version of the accounts' journey, transition and alert rows (what the
    recompute wrote): the workers' rows for them must come above it."""
    from journeys.sinks.clickhouse.client import select

    names = sorted(accounts)
    if not names:
        return 0
    parts = " UNION ALL ".join(
        f"SELECT max(version) AS v FROM {db}.{table} WHERE account_id IN {{a:Array(String)}}"
        for table in ("journeys", "phase_transitions", "alerts")
    )
    return int(select(client, f"SELECT max(v) FROM ({parts})", {"a": names})[0][0] or 0)


def _publish(
    settings: Settings,
    hashes: set[str],
    request_id: str,
    events: ErasedEvents,
    salt: bytes,
    version: int,
) -> tuple[str | None, int]:
    """The suppression list first (new events stop at the door), then the workers' erasure;
    a warning when Kafka could not take them, and how many control messages went."""
    from journeys.producers.suppressions import publish_forget, publish_suppressions

    try:
        publish_suppressions(settings, hashes, request_id)
        told = publish_forget(
            settings, request_id, hashes, events.account_hashes(salt), events.event_ids, version
        )
    except BrokerError as exc:
        return (
            f"the data is erased, but the running collector and workers were not told "
            f"to drop this person's new events and engine state ({exc}); run the request "
            "again once Kafka is up"
        ), 0
    return None, told


def replay_gate(settings: Settings) -> PrivacyGate:
    """The privacy gate of `journeys replay`: the consent settings and the suppression list
    of the database it writes (`privacy_suppressions`; the database must be set up)."""
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.forget import load_suppressions
    from journeys.sinks.privacy_salt import privacy_salt

    hashes = load_suppressions(connect(settings.clickhouse_dsn), settings.clickhouse_database)
    salt = privacy_salt(settings) if hashes else b""
    return PrivacyGate(settings.consent_category, settings.consent_mode, salt, hashes)
