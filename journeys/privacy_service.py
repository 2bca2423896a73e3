"""One erasure request end to end, for the command line and the collector's endpoint.

`forget_and_publish` opens ClickHouse, runs `journeys.sinks.clickhouse.forget`
(find, suppress, erase, recompute, audit), then publishes the hashes on the
suppression topic so the running collector and workers drop the person's
events too. A broker that cannot be reached does not undo the erasure: the
outcome carries a warning saying that the running processes have not been
told (they learn it when the hashes are published again: re-run the request).
"""

from __future__ import annotations

from dataclasses import dataclass

from journeys.schemas.errors import BrokerError
from journeys.schemas.privacy import PrivacyGate
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.forget import ForgetRequest, ForgetResult


@dataclass(frozen=True)
class Outcome:
    """A finished request, the hashes it suppressed, and what could not be done."""

    result: ForgetResult
    hashes: frozenset[str]
    warning: str | None = None


def forget_and_publish(settings: Settings, request: ForgetRequest, kafka: bool) -> Outcome:
    """Erase and suppress (see the module docstring); `kafka` also publishes the list."""
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.forget import forget
    from journeys.sinks.clickhouse.migrate import migrate
    from journeys.sinks.privacy_salt import privacy_salt
    from journeys.streams.config import engine_config

    salt = privacy_salt(settings)
    client = connect(settings.clickhouse_dsn)
    migrate(client, settings.clickhouse_database)
    result, hashes = forget(
        client,
        settings.clickhouse_dsn,
        settings.clickhouse_database,
        engine_config(settings),
        salt,
        request,
    )
    warning = None
    if kafka:
        warning = _publish(settings, hashes, result.request_id)
    return Outcome(result, frozenset(hashes), warning)


def _publish(settings: Settings, hashes: set[str], request_id: str) -> str | None:
    from journeys.producers.suppressions import publish_suppressions

    try:
        publish_suppressions(settings, hashes, request_id)
    except BrokerError as exc:
        return (
            f"the data is erased, but the running collector and workers were not told to "
            f"drop this person's new events ({exc}); run the request again once Kafka is up"
        )
    return None


def replay_gate(settings: Settings) -> PrivacyGate:
    """The privacy gate of `journeys replay`: the consent settings and the suppression list
    of the database it writes (`privacy_suppressions`; the database must be set up)."""
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.forget import load_suppressions
    from journeys.sinks.privacy_salt import privacy_salt

    hashes = load_suppressions(connect(settings.clickhouse_dsn), settings.clickhouse_database)
    salt = privacy_salt(settings) if hashes else b""
    return PrivacyGate(settings.consent_category, settings.consent_mode, salt, hashes)
