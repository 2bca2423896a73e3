"""ClickHouse driver errors, translated where they enter the project.

    SinkUnavailable          (journeys.schemas.errors) ClickHouse could not be used now;
    │                        the same request may succeed later (server down, busy,
    │                        out of memory or disk, merges behind): retry with backoff
    └── SinkRejected         ClickHouse understood the request and refused it: it will be
        │                    refused again until someone fixes the cause (credentials,
        │                    grants, a schema that needs `journeys migrate`, a bug)
        └── RowsRejected     ClickHouse refused rows for what they hold (a value that does
                             not fit its column, a broken table constraint): the same rows
                             are refused again, other rows pass. The writer isolates them
                             and stores them as dead letters (`sinks.clickhouse.writer`)

`clickhouse_errors(dsn, doing)` is the one place a driver exception becomes
one of these, the way httpx's `map_httpcore_exceptions` maps its transport's.
A ClickHouse error is explained by its numeric code (`exc.code`, set by
clickhouse-connect for both the server and the embedded engine), never by
searching its text; the text is quoted, shortened, after the explanation.
An embedded path that cannot be opened has no code: whether another process
holds it is read from the lock on its status file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clickhouse_connect.driver.exceptions import ClickHouseError

from journeys.schemas.errors import SinkUnavailable

#: How much of the driver's own message a translated error quotes.
QUOTE_CHARS = 300

MIGRATE = "run `journeys migrate` against JOURNEYS_CLICKHOUSE_URL and JOURNEYS_CLICKHOUSE_DATABASE"


class SinkRejected(SinkUnavailable):
    """ClickHouse refused the request for a reason that retrying will not remove."""


class RowsRejected(SinkRejected):
    """ClickHouse refused rows of an insert for what they hold; other rows would pass.

    Retrying the same rows never helps; the writer splits the insert to find them
    and dead-letters them with this error as the reason.
    """


#: code -> (retrying may help, what it means and what to do).
ADVICE: dict[int, tuple[bool, str]] = {
    # Credentials and grants.
    192: (False, "ClickHouse does not know the user: check the user in JOURNEYS_CLICKHOUSE_URL"),
    193: (False, "ClickHouse refused the password: check JOURNEYS_CLICKHOUSE_URL"),
    194: (False, "ClickHouse needs a password: put it in JOURNEYS_CLICKHOUSE_URL"),
    516: (
        False,
        "ClickHouse refused the credentials: check the user and password in "
        "JOURNEYS_CLICKHOUSE_URL",
    ),
    497: (
        False,
        "the ClickHouse user lacks a grant for this: grant it (see deploy/clickhouse) "
        "or use another user",
    ),
    164: (False, "the ClickHouse user is read-only: the sink needs a user that may write"),
    # A schema that is missing or older than the code.
    81: (False, f"the database does not exist: {MIGRATE}"),
    60: (False, f"a table or view is missing: {MIGRATE}"),
    16: (False, f"a column is missing, the schema is older than this version: {MIGRATE}"),
    47: (False, f"a column is missing, the schema is older than this version: {MIGRATE}"),
    # Statements or data ClickHouse cannot take: a bug, or a schema that disagrees.
    62: (False, "ClickHouse could not parse a statement: a bug in journeys, please report it"),
    53: (False, f"a value does not fit its column; if the schema is old, {MIGRATE}"),
    6: (False, f"a value does not fit its column; if the schema is old, {MIGRATE}"),
    27: (False, f"a value does not fit its column; if the schema is old, {MIGRATE}"),
    117: (False, "ClickHouse refused the data as incorrect: a bug in journeys, please report it"),
    349: (False, f"a NULL reached a column that takes none; if the schema is old, {MIGRATE}"),
    70: (False, f"a value does not fit its column; if the schema is old, {MIGRATE}"),
    131: (False, "a value is larger than its column allows"),
    321: (False, "a value is out of its column's range"),
    469: (False, "a row breaks a constraint set on the table"),
    # Too many parts or partitions (both are code 252).
    252: (
        True,
        "too many parts: a single insert touched more partitions than "
        "max_partitions_per_insert_block allows, or inserts come faster than merges. "
        f"Tables partitioned by event month (schemas before 0002) break on backfills: "
        f"{MIGRATE}; otherwise write fewer, larger batches",
    ),
    # Resources: retrying after a while may help, someone may have to act.
    241: (True, "ClickHouse ran out of memory: write smaller batches or give it more memory"),
    173: (True, "ClickHouse ran out of memory: write smaller batches or give it more memory"),
    243: (True, "ClickHouse ran out of disk space: free some, then the write is retried"),
    202: (True, "ClickHouse runs too many queries at once: the write is retried"),
    159: (True, "the query took too long: the write is retried"),
    209: (True, "the connection to ClickHouse timed out: the write is retried"),
    210: (True, "the network to ClickHouse failed: the write is retried"),
    242: (True, "a ClickHouse replica is read-only (Keeper unreachable?): the write is retried"),
    285: (True, "too few ClickHouse replicas are live: the write is retried"),
    319: (True, "ClickHouse lost track of an insert: the write is retried (writes are idempotent)"),
    999: (True, "ClickHouse Keeper failed: the write is retried"),
    394: (True, "the query was cancelled: the write is retried"),
}


#: Codes that blame the rows of an insert, not the request: `RowsRejected`.
ROW_CODES = frozenset({6, 27, 53, 70, 117, 131, 321, 349, 469})


def where(dsn: str | None) -> str:
    """The database a DSN names, for messages: a server without its password, or a path."""
    if dsn is None:
        return "ClickHouse"
    if dsn.startswith("chdb://"):
        return f"the embedded ClickHouse at {embedded_path(dsn)}"
    return f"ClickHouse at {dsn.split('://', 1)[-1].split('@')[-1]}"


def embedded_path(dsn: str) -> str:
    """The data directory of a `chdb://` DSN."""
    return dsn.removeprefix("chdb://").split("?", 1)[0]


def quote(exc: BaseException) -> str:
    """The first line of a driver message, shortened."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def translate(dsn: str | None, exc: BaseException, doing: str) -> SinkUnavailable:
    """The project's error for a driver error met while `doing` something with `dsn`."""
    code = getattr(exc, "code", None)
    place = where(dsn)
    if isinstance(code, int) and code:
        name = getattr(exc, "name", None) or "error"
        retry, advice = ADVICE.get(code, (True, "see the ClickHouse message"))
        message = f"{place} could not {doing} (code {code} {name}): {advice}. ClickHouse said: "
        message += quote(exc)
        if retry:
            return SinkUnavailable(message)
        return RowsRejected(message) if code in ROW_CODES else SinkRejected(message)
    if dsn is not None and dsn.startswith("chdb://"):
        path = embedded_path(dsn)
        # Only an engine that failed to open can be held by another process; once open,
        # this process holds the lock itself.
        if doing == "open" and held_elsewhere(path):
            return SinkUnavailable(
                f"another process holds the embedded database at {path} (only one process may "
                "open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a ClickHouse "
                "server"
            )
        return SinkUnavailable(f"{place} could not {doing}: {quote(exc)}")
    return SinkUnavailable(
        f"{place} is unavailable ({doing}): {quote(exc)}; check JOURNEYS_CLICKHOUSE_URL, the "
        "credentials and that the server is up"
    )


@contextmanager
def clickhouse_errors(dsn: str | None, doing: str) -> Iterator[None]:
    """Translate driver and connection errors raised inside into `SinkUnavailable`."""
    try:
        yield
    except SinkUnavailable:
        raise
    except (ClickHouseError, OSError) as exc:
        raise translate(dsn, exc, doing) from exc


def held_elsewhere(path: str) -> bool:
    """Whether a running ClickHouse holds the lock on the data directory at `path`.

    ClickHouse keeps an exclusive `flock` on `<path>/status` while it runs; the
    embedded engine reports a held path only as a failed start.
    """
    status = Path(path) / "status"
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False
