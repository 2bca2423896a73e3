"""`journeys collect`: the HTTP collector (Segment API, email and order webhooks → Kafka)."""

from __future__ import annotations

import click

from journeys.options import settings_options
from schemas.settings import Settings


@click.command()
@settings_options(
    "collect_host", "collect_port", "kafka_bootstrap", "topic_prefix", "topic_partitions", "write_keys",
    "collect_max_body", "collect_rate_limit", "collect_truncate_ip", "collect_hash_emails",
    "sendgrid_public_key", "mandrill_webhook_key", "mandrill_webhook_url", "shopify_secret",
)
def collect(settings: Settings) -> None:
    """Serve the Segment tracking API and email/order webhooks; events go to Kafka."""
    from aiohttp import web

    from producers.collect.app import create_app
    from producers.collect.publisher import KafkaPublisher

    if not settings.write_key_set:
        click.echo("warning: no write keys (JOURNEYS_WRITE_KEYS): Segment calls will get 401", err=True)
    click.echo(f"collecting on http://{settings.collect_host}:{settings.collect_port} -> {settings.topic('events')}", err=True)
    web.run_app(
        create_app(settings, KafkaPublisher(settings)),
        host=settings.collect_host, port=settings.collect_port, print=None,
    )


COMMANDS: list[click.Command] = [collect]
