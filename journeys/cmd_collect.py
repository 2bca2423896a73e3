"""`journeys collect`: the HTTP collector (Segment API, email and order webhooks → Kafka)."""

from __future__ import annotations

import sys

import click

from journeys.options import settings_options
from journeys.schemas.settings import Settings


@click.command()
@click.option("--host", default=None, help="Shorthand for --collect-host (listen address).")
@click.option("--port", default=None, type=int, help="Shorthand for --collect-port.")
@settings_options(
    "collect_host",
    "collect_port",
    "kafka_bootstrap",
    "topic_prefix",
    "write_keys",
    "collect_max_body",
    "collect_max_event",
    "collect_max_batch_items",
    "collect_max_inflight",
    "collect_read_timeout",
    "collect_skew_tolerance",
    "collect_signature_tolerance",
    "collect_public_url",
    "collect_rate_limit",
    "collect_trusted_proxies",
    "collect_truncate_ip",
    "collect_hash_emails",
    "sendgrid_public_key",
    "mandrill_webhook_key",
    "mandrill_webhook_url",
    "shopify_secret",
    "consent_category",
    "consent_mode",
    "admin_key",
    "privacy_salt",
    "data_dir",
    "clickhouse_url",
    "clickhouse_database",
)
def collect(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the Segment tracking API and email/order webhooks; events go to Kafka.

    Listens on 127.0.0.1 unless told otherwise; give --host 0.0.0.0 behind a
    load balancer or in a container. A request is answered 200 only once
    Kafka acknowledged its events (503 with Retry-After, at once, while Kafka
    is down). Websites using analytics.js set only `cdnURL` to the
    collector: it serves /v1/projects/{writeKey}/settings.
    """
    from aiohttp import web

    from journeys.producers.collect.app import create_app
    from journeys.producers.collect.publisher import KafkaPublisher

    # kafka-python's sender thread needs the GIL to see acknowledgements; the default 5 ms
    # switch interval behind a busy event loop adds up to that much to every request.
    sys.setswitchinterval(0.001)
    overrides = {k: v for k, v in (("collect_host", host), ("collect_port", port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    if not settings.write_key_set:
        click.echo(
            "warning: no write keys (JOURNEYS_WRITE_KEYS): Segment calls will get 401", err=True
        )
    click.echo(
        f"collecting on http://{settings.collect_host}:{settings.collect_port} "
        f"-> {settings.kafka_bootstrap} {settings.topic('events')}",
        err=True,
    )
    web.run_app(
        create_app(settings, KafkaPublisher(settings), follow_suppressions=True),
        host=settings.collect_host,
        port=settings.collect_port,
        print=None,
        access_log=None,
    )


COMMANDS: list[click.Command] = [collect]
