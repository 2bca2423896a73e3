"""`journeys forget`: erase a person or a company (GDPR article 17) and suppress them.

The same work as the collector's `POST /v1/privacy/forget`
(`journeys.privacy_service`); see docs/privacy.md for what is erased where.
"""

from __future__ import annotations

import click

from journeys.options import settings_options
from journeys.schemas.privacy import IdentifierKind
from journeys.schemas.settings import Settings

#: The command's identifier options, by the kind they name.
KINDS: dict[str, IdentifierKind] = {
    "email": "email",
    "contact_id": "contact_id",
    "anonymous_id": "anonymous_id",
    "account_id": "account_id",
}


@click.command()
@click.option("--email", default=None, help="The person's email address.")
@click.option("--contact-id", default=None, help="The person's contact id (userId).")
@click.option("--anonymous-id", default=None, help="A visitor's anonymous id (cookie).")
@click.option("--account-id", default=None, help="A whole company: its account and its people.")
@click.option(
    "--kafka/--no-kafka",
    default=True,
    show_default=True,
    help="Also tell the collector and workers through Kafka: the suppression list, and "
    "the workers' engine state and changelogs erased (--no-kafka for a database built by "
    "`journeys replay` with no broker)",
)
@settings_options(
    "data_dir",
    "clickhouse_url",
    "clickhouse_database",
    "kafka_bootstrap",
    "topic_prefix",
    "privacy_salt",
    "rules_file",
    "cart_abandon_after",
    "deal_stall_after",
    "visitor_ttl",
    "dedupe_window",
    "reorder_factor",
)
def forget(
    email: str | None,
    contact_id: str | None,
    anonymous_id: str | None,
    account_id: str | None,
    kafka: bool,
    settings: Settings,
) -> None:
    """Erase everything stored about a person (or a company) and drop their future events.

    Give exactly one identifier. The person's other identifiers are found through
    the stored events; their events, identity links and dead letters are deleted,
    their account's journey is rebuilt without them, and every identifier's salted
    hash goes on the suppression list. Prints the rows erased per table; the request
    is recorded in `privacy_requests` (no personal data, a hash).
    """
    from journeys.privacy_service import forget_and_publish
    from journeys.sinks.clickhouse.forget import ForgetRequest

    given = {
        kind: value
        for kind, value in (
            ("email", email),
            ("contact_id", contact_id),
            ("anonymous_id", anonymous_id),
            ("account_id", account_id),
        )
        if value is not None and value.strip()
    }
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one of --email, --contact-id, --anonymous-id, --account-id"
        )
    [(kind, value)] = given.items()
    outcome = forget_and_publish(settings, ForgetRequest(KINDS[kind], value, "cli"), kafka)
    result = outcome.result
    erased = ", ".join(f"{table} {count}" for table, count in result.erased.items())
    click.echo(
        f"request {result.request_id}: {result.status}; {result.identifiers} identifiers "
        f"suppressed; rows erased: {erased}; accounts recomputed: {result.accounts_recomputed}"
    )
    if outcome.told:
        click.echo("the running workers were told to erase the person from their state")
    if outcome.warning:
        click.echo(f"warning: {outcome.warning}", err=True)


COMMANDS: list[click.Command] = [forget]
