"""The secret salt of identifier hashes: from `JOURNEYS_PRIVACY_SALT`, or kept on disk.

Every hash the suppression list and the audit keep is an HMAC under this
salt (`journeys.schemas.privacy.identifier_hash`), so the list names nobody
to whoever lacks it. Unset, it is generated once (32 random bytes, hex) and
kept in `<data dir>/privacy-salt`, mode 0600, as the read endpoint's
password is. Every process of a deployment (collector, workers, sink,
`journeys forget`) must hash with the same salt: on several machines, give
each the same `JOURNEYS_PRIVACY_SALT`. Losing the salt loses the list's
meaning (nothing would match any more), so back it up with the data.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from journeys.schemas.errors import ConfigError
from journeys.schemas.settings import Settings
from journeys.sinks.secret_file import kept_secret

SALT_FILE = "privacy-salt"


def privacy_salt(settings: Settings) -> bytes:
    """The configured salt, else the kept (or a new) one."""
    if settings.privacy_salt is not None:
        value = settings.privacy_salt.get_secret_value().strip()
        if len(value) < 16:
            raise ConfigError("JOURNEYS_PRIVACY_SALT must be at least 16 characters")
        return value.encode()
    return kept_salt(settings.data_dir)


def kept_salt(data_dir: Path) -> bytes:
    """The salt in `<data_dir>/privacy-salt`, generated there (0600) the first time."""
    return kept_secret(
        data_dir / SALT_FILE,
        "the privacy salt",
        lambda: secrets.token_hex(32),
        "restore it from a backup (a new salt makes the suppression list match nothing)",
    ).encode()
