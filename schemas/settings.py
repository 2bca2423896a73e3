"""Settings, read once from `JOURNEYS_*` environment variables and `--flag` twins.

Build one `Settings` at the entry point (the CLI does) and pass it down; no
module reads the environment on its own.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from journeys.schemas.durations import parse_duration_ms

#: A duration such as `4h`, held as milliseconds.
DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]


def _networks(text: str) -> str:
    """`text` when every comma-separated entry is an IP address or CIDR network."""
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return text


class Settings(BaseSettings):
    """Every setting of every process type; each field is `JOURNEYS_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", frozen=True, extra="ignore")

    data_dir: Path = Field(default=Path(".journeys"), description="where local state lives")
    clickhouse_url: str | None = Field(
        default=None,
        description="chdb:///path for the embedded engine or http(s)://user:pass@host:8123",
    )
    clickhouse_database: str = Field(default="journeys", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    rules_file: Path | None = Field(default=None, description="phase rules (TOML)")
    cart_abandon_after: DurationMs = Field(default="4h", validate_default=True)
    deal_stall_after: DurationMs = Field(default="14d", validate_default=True)
    allowed_lateness: DurationMs = Field(
        default="30s",
        validate_default=True,
        description="how far event time trails the latest event seen before alerts fall due "
        "(a later event still counts: it corrects journeys and alerts)",
    )
    visitor_ttl: DurationMs = Field(
        default="90d",
        validate_default=True,
        description="forget anonymous visitors not seen for this long (event time)",
    )
    attribution_lookback: DurationMs = Field(
        default="90d",
        validate_default=True,
        description="an account's activity this long before a phase transition is its "
        "touchpoints (multi-touch attribution)",
    )
    attribution_half_life: DurationMs = Field(
        default="7d",
        validate_default=True,
        description="time_decay attribution: a touchpoint this long before the transition "
        "counts half as much as one at it",
    )
    reorder_factor: float = Field(
        default=1.5,
        gt=0,
        description="a loyal account's next order is due after its usual interval between "
        "orders (the median of the last five) times this",
    )
    dedupe_window: DurationMs = Field(
        default="3d",
        validate_default=True,
        description="how far behind event time a journey's events stay unpacked (cost only: "
        "an event_id counts once forever, and a late event of any age corrects journeys "
        "exactly, folding its journey again from its archive)",
    )

    state_cache: int = Field(
        default=50_000,
        ge=0,
        description="journeys a worker keeps in memory per journey partition, and identity "
        "entries per table of the identity stage; the others wait in RocksDB stores under "
        "the data dir, read back when their events come (0: everything in memory)",
    )

    kafka_bootstrap: str = Field(default="127.0.0.1:9092")
    topic_prefix: str = Field(default="")
    topic_partitions: int = Field(default=4, ge=1)
    journey_partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="partitions of the journey stage: how many workers can share it; set "
        "once before the first start (journeys are placed by key on them)",
    )
    replay_jobs: int = Field(
        default=1,
        ge=1,
        le=64,
        description="processes a replay runs the journey partitions in (the identity "
        "router stays in the replay's own); the tables are the same for any number",
    )
    kafka_home: Path | None = Field(default=None, description="cache of the broker's jars")
    kafka_version: str = Field(default="3.9.2")
    kafka_heap: str = Field(default="768m")
    kafka_controller_port: int = Field(default=9093)
    kafka_session_timeout: float = Field(
        default=20.0,
        ge=6.0,
        le=300.0,
        description="seconds a worker that stopped answering (killed, frozen) keeps its "
        "partitions before its group gives them to the others",
    )

    metrics_port: int = Field(
        default=0,
        ge=0,
        description="serve Prometheus metrics of a worker or the sink on this port (0: off)",
    )
    collect_port: int = Field(default=8080)
    collect_host: str = Field(default="127.0.0.1", description="address the collector listens on")
    collect_max_body: int = Field(
        default=512 * 1024, ge=1024, description="largest request body, bytes"
    )
    collect_max_event: int = Field(
        default=32 * 1024, ge=1024, description="largest single event (a batch item), bytes"
    )
    collect_max_batch_items: int = Field(
        default=2500, ge=1, description="most items in one batch request (more: 400)"
    )
    collect_max_inflight: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="request body bytes the collector holds at once (more: 503, retry)",
    )
    collect_read_timeout: DurationMs = Field(
        default="15s",
        validate_default=True,
        description="time to receive a request (headers and body); slower connections are closed",
    )
    collect_skew_tolerance: DurationMs = Field(
        default="5s",
        validate_default=True,
        description="correct an SDK's clock from sentAt only when it is off by more than this",
    )
    collect_signature_tolerance: DurationMs = Field(
        default="5m",
        validate_default=True,
        description="how far a signed webhook's timestamp may be from now (SendGrid)",
    )
    collect_public_url: str | None = Field(
        default=None,
        description="the collector's public URL for analytics.js (unset: the request's Host, "
        "answered private, never cached)",
    )
    collect_rate_limit: float = Field(
        default=1000, ge=0, description="events per second per write key, bursts of 2 s (0: off)"
    )
    collect_trusted_proxies: Annotated[str, AfterValidator(_networks)] = Field(
        default="",
        description="comma-separated proxy IPs/CIDRs whose X-Forwarded-For is believed "
        "(default none: the peer's address is the client's)",
    )
    collect_truncate_ip: bool = Field(
        default=False, description="drop the last octet of client IPs"
    )
    collect_hash_emails: bool = Field(
        default=False, description="store sha256 of the local part of emails (keeps the domain)"
    )
    write_keys: str = Field(default="", description="comma-separated Segment write keys")
    sendgrid_public_key: str | None = Field(
        default=None, description="SendGrid verification key (base64)"
    )
    mandrill_webhook_key: SecretStr | None = Field(default=None, description="Mandrill webhook key")
    mandrill_webhook_url: str | None = Field(
        default=None, description="the public URL Mandrill posts to (it is part of the signature)"
    )
    shopify_secret: SecretStr | None = Field(default=None, description="Shopify webhook secret")

    read_port: int = Field(
        default=8124,
        ge=0,
        le=65535,
        description="the sink serves read-only ClickHouse HTTP here for BI tools (0: off)",
    )
    read_host: str = Field(default="127.0.0.1", description="address of the read-only endpoint")
    read_user: str = Field(
        default="reader", min_length=1, description="user the read endpoint asks for"
    )
    read_password: SecretStr | None = Field(
        default=None,
        description="password of the read endpoint (unset: generated once, kept in "
        "<data dir>/read-password; `journeys read-credentials` prints it)",
    )
    read_max_memory: int = Field(
        default=1 << 30, ge=1 << 20, description="memory one read-endpoint query may use (bytes)"
    )
    read_max_execution_time: DurationMs = Field(
        default="30s", validate_default=True, description="a read-endpoint query stops after this"
    )
    read_max_result_rows: int = Field(
        default=10_000_000, ge=1, description="rows one read-endpoint answer may hold"
    )
    read_max_result_bytes: int = Field(
        default=512 << 20, ge=1 << 20, description="bytes one read-endpoint answer may hold"
    )
    read_max_queries: int = Field(
        default=4, ge=1, le=64, description="read-endpoint queries that run at once (then 503)"
    )
    read_max_connections: int = Field(
        default=64, ge=1, le=4096, description="open read-endpoint connections (then refused)"
    )
    alert_webhooks: str = Field(
        default="",
        description="where alerts go, per kind: kind=URL,...; *=URL for the rest; "
        "slack+https://... sends Slack messages",
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key that signs every webhook delivery"
    )
    alert_retry_max: DurationMs = Field(
        default="5m", validate_default=True, description="longest wait between delivery attempts"
    )
    alert_give_up_after: DurationMs = Field(
        default="1h",
        validate_default=True,
        description="after this long failing, a delivery goes to the dead letters",
    )
    alert_allow_private: bool = Field(
        default=False,
        description="let webhooks reach loopback, link-local and private addresses "
        "(metadata addresses stay refused)",
    )

    # Privacy (docs/privacy.md): consent, erasure requests, retention.
    admin_key: SecretStr | None = Field(
        default=None,
        description="bearer token of the collector's admin endpoints (POST /v1/privacy/forget); "
        "unset: they answer 403",
    )
    consent_category: str = Field(
        default="analytics",
        min_length=1,
        description="the context.consent.categoryPreferences category an event needs",
    )
    consent_mode: Literal["drop", "anonymise"] = Field(
        default="drop",
        description="an event denying that category is dropped, or kept without identifiers",
    )
    retention: str = Field(
        default="730d",
        pattern=r"^\s*(off|\d+(\.\d+)?\s*(ms|s|m|h|d|w))\s*$",
        description="events (after they happened or were stored, the later) and dead letters "
        "(after they arrived) are deleted from ClickHouse after this long (off: kept)",
    )
    topic_retention: DurationMs = Field(
        default="7d",
        validate_default=True,
        description="retention.ms of the raw events and dead-letter topics when created",
    )
    erase_within: DurationMs = Field(
        default="1d",
        validate_default=True,
        description="an erased person's identifiers leave the workers' compacted changelogs "
        "within about this long (the compaction settings of the stage changelogs)",
    )
    privacy_salt: SecretStr | None = Field(
        default=None,
        description="secret salt of the identifier hashes (unset: generated once, kept in "
        "<data dir>/privacy-salt); every process of a deployment needs the same",
    )

    @property
    def retention_ms(self) -> int | None:
        """`retention` in milliseconds; None when off."""
        text = self.retention.strip()
        return None if text == "off" else parse_duration_ms(text)

    @property
    def write_key_set(self) -> frozenset[str]:
        """The accepted write keys."""
        return frozenset(k.strip() for k in self.write_keys.split(",") if k.strip())

    @property
    def clickhouse_dsn(self) -> str:
        """The ClickHouse URL, defaulting to the embedded engine under the data dir."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def topic(self, name: str) -> str:
        """A public topic name (`events`, `transitions`, ...) with the configured prefix."""
        return f"{self.topic_prefix}journeys.{name}"
