"""Privacy at the door: consent and the suppression list, decided for one event at a time.

Every entry point (the collector, the streaming ingest, `journeys replay`)
asks the same `PrivacyGate.screen(record)` before an event goes anywhere,
so the three can never disagree:

- **Suppressed** (the event carries an identifier of a person or company
  that `journeys forget` erased): dropped, whatever its consent says.
  Identifiers are compared as salted hashes (`identifier_hash`,
  HMAC-SHA256 of `kind:value` under a secret salt), so the list that every
  process holds names nobody. An email also stands for the account it
  implies (its domain, or itself at a free-mail provider), so a forgotten
  company stays forgotten when its people come back without an account id.
- **Consent denied** (`context.consent.categoryPreferences`, Segment's
  consent format, holds `false` for the configured category, compared
  without regard to case): dropped (`drop`), or reduced to an
  identifier-free event (`anonymise`, see `anonymise`). A category that is
  absent, or an event without consent information, counts as given: a site
  without a consent manager sends none.

Pure: no I/O here. The salt (`journeys.sinks.privacy_salt`), the list in
ClickHouse (`journeys.sinks.clickhouse.forget`) and on Kafka
(`journeys.producers.suppressions`) are the callers' business.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from journeys.schemas.identity import email_account
from journeys.schemas.record import EventRecord

ConsentMode = Literal["drop", "anonymise"]
#: What `forget` and the suppression list know an identifier as.
IdentifierKind = Literal["email", "contact_id", "anonymous_id", "account_id"]
IDENTIFIER_KINDS: tuple[IdentifierKind, ...] = ("email", "contact_id", "anonymous_id", "account_id")
#: Why an event was withheld, as counted in the metrics.
Reason = Literal["suppressed", "consent_dropped", "consent_anonymised"]

#: Context keys an anonymised event keeps: none of them names or locates a person.
KEPT_CONTEXT = frozenset({"consent", "library", "locale", "timezone", "campaign"})
#: Property keys an anonymised event loses: the ones SDKs and webhooks use for people.
PERSONAL_PROPERTIES = frozenset(
    {
        "email", "user_id", "userid", "anonymous_id", "anonymousid", "contact_id", "name",
        "first_name", "firstname", "last_name", "lastname", "phone", "address", "ip",
        "user_agent", "useragent", "referrer", "search", "company", "username",
    }
)  # fmt: skip
#: Property keys holding URLs: an anonymised event keeps their scheme, host and path only.
URL_PROPERTIES = frozenset({"url", "path"})


def normalise_identifier(kind: str, value: str) -> str:
    """The form an identifier is hashed in: emails and account ids are compared without
    regard to case or surrounding blanks (as the engine does), the others as given."""
    text = value.strip()
    return text.lower() if kind in ("email", "account_id") else text


def identifier_hash(salt: bytes, kind: str, value: str) -> str:
    """The salted hash (HMAC-SHA256, hex) the suppression list and the audit keep of one
    identifier: without the salt nobody can test a guessed email against it."""
    message = f"{kind}:{normalise_identifier(kind, value)}".encode()
    return hmac.new(salt, message, hashlib.sha256).hexdigest()


def identifiers_of(record: EventRecord) -> list[tuple[IdentifierKind, str]]:
    """Every identifier an event carries, with the account its email implies."""
    found: list[tuple[IdentifierKind, str]] = []
    for kind in IDENTIFIER_KINDS:
        value = getattr(record, kind)
        if value:
            found.append((kind, value))
    if record.email and not record.account_id:
        found.append(("account_id", email_account(record.email)))
    return found


def consent_denied(context: str, category: str) -> bool:
    """Whether an event's context (JSON text) denies `category` in
    `consent.categoryPreferences`; anything else (no consent, the category absent, a
    value that is not `false`) is not a denial."""
    if "categoryPreferences" not in context:
        return False  # the common case, without parsing
    try:
        body = orjson.loads(context)
    except orjson.JSONDecodeError:
        return False
    consent = body.get("consent") if isinstance(body, dict) else None
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(preferences, dict):
        return False
    wanted = category.strip().lower()
    return any(str(k).strip().lower() == wanted and v is False for k, v in preferences.items())


def anonymous_stand_in(event_id: str) -> str:
    """The anonymous id an anonymised event gets: derived from its own event_id, so a
    redelivery stays one event, and shared with no other event, so it links nothing."""
    return "anon-" + hashlib.sha256(b"journeys-consent:" + event_id.encode()).hexdigest()[:32]


def _bare_url(value: Any) -> Any:
    """A URL without its query, fragment or user info (they carry emails and tokens)."""
    if not isinstance(value, str):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _json_object(text: str) -> dict[str, Any]:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def anonymise(record: EventRecord) -> EventRecord:
    """The event without anything that identifies or locates a person: no email,
    contact, account, role or segment; the anonymous id replaced by
    `anonymous_stand_in`; context reduced to `KEPT_CONTEXT` (no IP, user agent,
    cookies, traits, device or page); properties without `PERSONAL_PROPERTIES` and
    with URLs cut to scheme, host and path. Type, channel, time and event_id stay,
    so the site still counts what happened."""
    context = {k: v for k, v in _json_object(record.context).items() if k in KEPT_CONTEXT}
    properties = {
        k: (_bare_url(v) if k.lower() in URL_PROPERTIES else v)
        for k, v in _json_object(record.properties).items()
        if k.lower() not in PERSONAL_PROPERTIES
    }
    return replace(
        record,
        anonymous_id=anonymous_stand_in(record.event_id),
        contact_id=None,
        email=None,
        account_id=None,
        dmu_role=None,
        segment=None,
        properties=orjson.dumps(properties, option=orjson.OPT_SORT_KEYS).decode(),
        context=orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode(),
    )


#: Where identifiers sit in raw input that failed validation (contract and Segment names).
PAYLOAD_KEYS: dict[str, IdentifierKind] = {
    "email": "email",
    "contact_id": "contact_id",
    "userId": "contact_id",
    "anonymous_id": "anonymous_id",
    "anonymousId": "anonymous_id",
    "previousId": "anonymous_id",
    "account_id": "account_id",
    "groupId": "account_id",
}
#: How deep into rejected input identifiers are looked for (traits, batch items).
PAYLOAD_DEPTH = 4


def payload_identifiers(payload: bytes) -> list[tuple[IdentifierKind, str]]:
    """Identifiers found in rejected input (JSON that broke the contract): the values of
    `PAYLOAD_KEYS` at any depth up to `PAYLOAD_DEPTH`; none when it is not JSON."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    found: list[tuple[IdentifierKind, str]] = []
    level: list[Any] = [body]
    for _ in range(PAYLOAD_DEPTH):
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                for key, value in item.items():
                    kind = PAYLOAD_KEYS.get(key)
                    if kind is not None and isinstance(value, str) and value:
                        found.append((kind, value))
                    children.append(value)
            elif isinstance(item, list):
                children.extend(item)
        level = children
    found += [("account_id", email_account(v)) for k, v in found if k == "email" and "@" in v]
    return found


@dataclass(frozen=True)
class Verdict:
    """What to do with one event: `record` to pass on (None: drop it), and why it was
    changed or dropped (None: passed unchanged)."""

    record: EventRecord | None
    reason: Reason | None = None


@dataclass
class PrivacyGate:
    """The consent setting and the suppression list, applied to events as they enter.

    `suppressed` holds identifier hashes (`identifier_hash` under `salt`); it may
    grow while the gate is in use (`suppress`), as a follower of the list learns of
    new requests. With no salt the list is empty and only consent applies."""

    consent_category: str = "analytics"
    consent_mode: ConsentMode = "drop"
    salt: bytes = b""
    suppressed: set[str] = field(default_factory=set)

    def suppress(self, hashes: Iterable[str]) -> None:
        """Add hashes to the list."""
        self.suppressed.update(hashes)

    def is_suppressed(self, record: EventRecord) -> bool:
        """Whether the event carries an identifier on the list."""
        if not self.suppressed:
            return False
        return any(
            identifier_hash(self.salt, kind, value) in self.suppressed
            for kind, value in identifiers_of(record)
        )

    def payload_suppressed(self, payload: bytes) -> bool:
        """Whether rejected input (a would-be dead letter) names someone on the list: such
        input is dropped too, so nothing of a forgotten person is stored again."""
        if not self.suppressed:
            return False
        return any(
            identifier_hash(self.salt, kind, value) in self.suppressed
            for kind, value in payload_identifiers(payload)
        )

    def screen(self, record: EventRecord) -> Verdict:
        """The verdict on one event: suppression first, then consent."""
        if self.is_suppressed(record):
            return Verdict(None, "suppressed")
        if not consent_denied(record.context, self.consent_category):
            return Verdict(record)
        if self.consent_mode == "drop":
            return Verdict(None, "consent_dropped")
        return Verdict(anonymise(record), "consent_anonymised")

    def screen_all(
        self, records: Iterable[EventRecord], counts: dict[str, int] | None = None
    ) -> list[EventRecord]:
        """The events to pass on, in order; `counts` (when given) gains one per reason."""
        kept = []
        for record in records:
            verdict = self.screen(record)
            if verdict.reason is not None and counts is not None:
                counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
            if verdict.record is not None:
                kept.append(verdict.record)
        return kept


def open_gate() -> PrivacyGate:
    """A gate with an empty list and the default consent rule."""
    return PrivacyGate()
