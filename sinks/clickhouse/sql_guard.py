"""Which SQL a read-only entry point runs: one statement that only reads.

The read endpoint and `journeys query` let people type SQL against the
pipeline's database. ClickHouse's own `readonly=1` refuses writes, DDL and
settings changes; it does not refuse a second statement after `;` nor
`INTO OUTFILE` (the embedded engine writes that file), so both are checked
here, outside string literals and comments.
"""

from __future__ import annotations

import re

#: Statements that only read.
READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})

_WORD = re.compile(r"[A-Za-z_]+")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FORMAT = re.compile(
    r"\bFORMAT\s+([A-Za-z0-9_]+)\s*(?:\bSETTINGS\b.*)?$", re.IGNORECASE | re.DOTALL
)


def code_only(sql: str) -> str:
    """The SQL with string literals, quoted identifiers and comments blanked out."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            end = _closing(sql, i + 1, ch)
            out.append(" " * (end - i))
            i = end
        elif sql.startswith("--", i) or ch == "#":
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(" " * (end - i))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _closing(sql: str, i: int, quote: str) -> int:
    """Index just past the quote that closes a literal opened before `i`."""
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:  # doubled quote inside the literal
                i += 2
                continue
            return i + 1
        i += 1
    return n


def refusal(sql: str) -> str | None:
    """Why `sql` may not run on a read-only entry point, or None if it may."""
    code = code_only(sql).strip().rstrip(";").rstrip()
    if not code:
        return "empty query"
    if ";" in code:
        return "one statement per query"
    word = _WORD.search(code.lstrip("( \t\r\n"))
    first = word.group(0).upper() if word else ""
    if first not in READ_STATEMENTS:
        shown = first or code.split()[0]
        return (
            f"{shown} is not allowed here: this entry point only reads "
            "(SELECT, SHOW, DESCRIBE, EXISTS)"
        )
    if _OUTFILE.search(code):
        return "INTO OUTFILE is not allowed here: results go back to the client"
    return None


def without_format(sql: str) -> str:
    """The statement without its trailing `FORMAT` clause (and what follows it)."""
    code = code_only(sql)
    found = _FORMAT.search(code.strip().rstrip(";").rstrip())
    if not found:
        return sql.strip().rstrip(";")
    start = len(code) - len(code.lstrip()) + found.start()
    return sql[:start].rstrip()


def output_format(sql: str) -> str | None:
    """The format a query's own trailing `FORMAT` clause asks for, if it has one."""
    found = _FORMAT.search(code_only(sql).strip().rstrip(";").rstrip())
    return found.group(1) if found else None
