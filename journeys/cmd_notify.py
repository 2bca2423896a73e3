"""`journeys notify`: deliver alerts from Kafka to HTTP webhooks (a process of its own)."""

from __future__ import annotations

import click

from journeys.options import settings_options
from journeys.schemas.settings import Settings

NOTIFY_SETTINGS = (
    "kafka_bootstrap",
    "topic_prefix",
    "alert_webhooks",
    "alert_webhook_secret",
    "alert_retry_max",
    "alert_give_up_after",
    "alert_allow_private",
)


@click.command()
@settings_options(*NOTIFY_SETTINGS)
def notify(settings: Settings) -> None:
    """Deliver journeys.alerts to webhooks, signed, retried, at least once, until stopped.

    Routes per alert kind, `*` for the rest, `slack+` for Slack messages:

    \b
      --alert-webhooks "cart_abandoned=https://crm.example/hook,*=slack+https://hooks.slack.com/..."

    Webhooks to loopback, link-local, private or cloud-metadata addresses are
    refused (also when a name resolves to one at connect time) unless
    --alert-allow-private; redirects are never followed.

    Withdrawn alerts arrive as corrections. Offsets are committed only after
    delivery; what cannot be delivered goes to the dead letters with the
    reason. docs/alerts.md has the receiver's side.
    """
    from journeys.schemas.errors import ConfigError
    from journeys.sinks.alert_webhooks import check_routes, parse_routes
    from journeys.sinks.notifier import run_notifier

    try:
        routes = parse_routes(settings.alert_webhooks)
        check_routes(routes, settings.alert_allow_private)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if not routes:
        raise click.UsageError(
            "no alert webhooks: set --alert-webhooks / JOURNEYS_ALERT_WEBHOOKS "
            '(e.g. "*=https://ops.example/hook")'
        )
    kinds = ", ".join(f"{kind} → {len(t)}" for kind, t in sorted(routes.by_kind.items()))
    click.echo(
        f"delivering {settings.topic('alerts')} to webhooks ({kinds}); Ctrl-C to stop", err=True
    )
    progress = run_notifier(settings)
    click.echo(
        f"stopped: {progress.delivered} deliveries, {progress.dead_letters} dead letters",
        err=True,
    )


COMMANDS: list[click.Command] = [notify]
