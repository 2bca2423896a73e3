"""Which SQL a read-only entry point runs: one statement that only reads the project's data.

Two layers. `refusal(sql)` is a quick look at the text (strings, heredocs
and comments blanked out) that gives a clear message for the common
mistakes; `journeys query` uses it, on the user's own engine. The read
endpoint, which answers other programs, does not trust text: it has the
engine's own parser decide (`SELECT formatQuerySingleLine({q:String})`
refuses a second statement and gives the one statement in its canonical
spelling, which is what then runs), and `ast_refusal` walks that
statement's `EXPLAIN AST` and refuses table functions, the `file()`
function, `INTO OUTFILE`, `SETTINGS` clauses, statements other than
SELECT/SHOW/DESCRIBE/EXISTS/EXPLAIN and tables outside the project's
database and a few `system` tables BI tools introspect (`Policy`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Statements that only read.
READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})

_WORD = re.compile(r"[A-Za-z_]+")
_HEREDOC = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
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
        heredoc = _HEREDOC.match(sql, i) if ch == "$" else None
        if heredoc:
            end = sql.find(heredoc.group(0), heredoc.end())
            end = n if end < 0 else end + len(heredoc.group(0))
            out.append(" " * (end - i))
            i = end
        elif ch in "'\"`":
            end = _closing(sql, i + 1, ch)
            out.append(" " * (end - i))
            i = end
        elif sql.startswith("--", i) or ch == "#":
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif sql.startswith("/*", i):
            end = _comment_end(sql, i)
            out.append(" " * (end - i))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _comment_end(sql: str, i: int) -> int:
    """Index just past a `/* ... */` comment starting at `i`; ClickHouse nests them."""
    depth, i, n = 0, i, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if not depth:
                return i
        else:
            i += 1
    return n


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


#: Statements (the root of `EXPLAIN AST`) that only read.
READ_ROOTS = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "SelectQuery",
        "DescribeQuery",
        "ShowTables",
        "ShowFunctions",
        "ShowCreateTableQuery",
        "ShowCreateViewQuery",
        "ShowCreateDatabaseQuery",
        "ExistsTableQuery",
        "ExistsViewQuery",
        "ExistsDatabaseQuery",
        "Explain",
    }
)
#: Functions refused anywhere in a statement (lower case): they read files or load code;
#: they call a model over the network (the `ai*` functions, once a named collection
#: exists); or one call costs the square of its input's size within one block, where
#: neither the time limit nor a cancel can stop it (editDistance of two 64 KiB strings is
#: about 13 s of CPU per row).
DENIED_FUNCTIONS = frozenset(
    {
        "file",
        "catboostevaluate",
        "joinget",
        "joingetornull",
        "aigenerate",
        "aiembed",
        "aisimilarity",
        "aifilter",
        "aiclassify",
        "aiextract",
        "aitranslate",
        "airedact",
        "editdistance",
        "editdistanceutf8",
        "levenshteindistance",
        "levenshteindistanceutf8",
        "dameraulevenshteindistance",
        "jarosimilarity",
        "jarowinklersimilarity",
        "arraylevenshteindistance",
        "arraylevenshteindistanceweighted",
        "arraysimilarity",
        "arrayfold",
        "multifuzzymatchany",
        "multifuzzymatchanyindex",
        "multifuzzymatchallindices",
    }
)
#: Functions whose right side may name a table (`x IN db.table`).
IN_FUNCTIONS = frozenset(
    {
        "in",
        "notin",
        "globalin",
        "globalnotin",
        "nullin",
        "notnullin",
        "globalnullin",
        "globalnotnullin",
        "inignoreset",
        "notinignoreset",
        "globalinignoreset",
        "globalnotinignoreset",
        "nullinignoreset",
        "notnullinignoreset",
        "globalnullinignoreset",
        "globalnotnullinignoreset",
    }
)
#: The `system` tables BI tools (Grafana, Metabase, Superset, clickhouse-connect) read.
SYSTEM_TABLES = frozenset(
    {
        "one",
        "databases",
        "tables",
        "columns",
        "functions",
        "table_functions",
        "settings",
        "data_type_families",
        "table_engines",
        "formats",
        "time_zones",
        "collations",
        "keywords",
    }
)
#: Databases whose every table only describes metadata.
METADATA_DATABASES = frozenset({"information_schema", "INFORMATION_SCHEMA"})


@dataclass(frozen=True)
class Policy:
    """What a read endpoint's statements may name.

    `database` is the project's; `table_functions` are the names (lower
    case) the engine knows as table functions only (`system.table_functions`
    less `system.functions`), refused even outside FROM (`x IN numbers(10)`)."""

    database: str
    table_functions: frozenset[str] = frozenset()

    def table_refusal(self, name: str) -> str | None:
        """Why a statement may not read the table `name` (`t` or `db.t`), or None."""
        if "." not in name and "`" not in name:
            return None  # the current database: the project's, or a WITH name
        database, _, table = name.partition(".")
        if database == self.database:
            return None
        if database in METADATA_DATABASES:
            return None
        if database == "system" and table in SYSTEM_TABLES:
            return None
        return (
            f"{name} is not readable here: only the tables of {self.database} and "
            f"system.{{{','.join(sorted(SYSTEM_TABLES))}}}"
        )

    def database_refusal(self, name: str) -> str | None:
        """Why a statement may not look at the database `name`, or None."""
        if name in (self.database, "system") or name in METADATA_DATABASES:
            return None
        return f"database {name} is not readable here: only {self.database}"


@dataclass
class Node:
    """One line of `EXPLAIN AST`: the node's kind, the rest of its line and its children."""

    kind: str
    text: str
    children: list[Node] = field(default_factory=list)


def parse_ast(dump: str) -> Node:
    """The tree of an `EXPLAIN AST` answer (TabSeparated, one node per line, indented)."""
    root = Node("", "")
    stack: list[tuple[int, Node]] = [(-1, root)]
    for raw in dump.splitlines():
        line = _unescape_tsv(raw)
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        kind, _, rest = line.strip().partition(" ")
        node = Node(kind, _CHILDREN.sub("", rest).strip())
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    if len(root.children) != 1:
        raise ValueError(f"EXPLAIN AST gave {len(root.children)} statements")
    return root.children[0]


_CHILDREN = re.compile(r"\s*\(children \d+\)\s*$")
_ALIAS = re.compile(r"\s*\(alias .*\)\s*$")


def _unescape_tsv(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n"}.get(m.group(1), m.group(1)), text)


def ast_refusal(canonical: str, root: Node, policy: Policy) -> str | None:
    """Why the canonical statement with this AST may not run on the read endpoint, or None."""
    if root.kind not in READ_ROOTS:
        return f"{root.kind} is not allowed here: this endpoint only reads"
    if root.kind == "Explain" and (not root.children or root.children[0].kind not in READ_ROOTS):
        return "EXPLAIN is allowed of reads only"
    if _OUTFILE.search(code_only(canonical)) or _has_outfile(root):
        return "INTO OUTFILE is not allowed here: results go back to the client"
    return _statement_refusal(root, policy) or _walk(root, None, policy)


def _has_outfile(node: Node) -> bool:
    """A Literal directly under a statement is its INTO OUTFILE target."""
    if any(child.kind == "Literal" for child in node.children):
        return True
    return node.kind == "Explain" and any(_has_outfile(child) for child in node.children)


def _statement_refusal(root: Node, policy: Policy) -> str | None:
    names = [c.text for c in root.children if c.kind == "Identifier"]
    if root.kind in ("ShowCreateTableQuery", "ShowCreateViewQuery", "ExistsTableQuery"):
        return policy.table_refusal(".".join(names[:2]))
    if root.kind in ("ShowCreateDatabaseQuery", "ExistsDatabaseQuery"):
        return policy.database_refusal(names[0]) if names else None
    if root.kind == "ShowTables" and names:
        # FROM db comes first; a trailing Identifier is the FORMAT.
        return (
            policy.database_refusal(names[0])
            if len(names) > 1 or not _is_format(names[0])
            else None
        )
    return None


def _is_format(name: str) -> bool:
    return name in FORMATS or name.startswith(FORMAT_PREFIXES)


def _walk(node: Node, parent: Node | None, policy: Policy) -> str | None:
    reason = _node_refusal(node, parent, policy)
    if reason:
        return reason
    for child in node.children:
        reason = _walk(child, node, policy)
        if reason:
            return reason
    return None


def _node_refusal(node: Node, parent: Node | None, policy: Policy) -> str | None:
    if node.kind == "Set":
        return "SETTINGS in a query are not allowed here: send allowed settings as URL parameters"
    if node.kind == "TableIdentifier":
        return policy.table_refusal(_ALIAS.sub("", node.text))
    if node.kind != "Function":
        return None
    name = _ALIAS.sub("", node.text).strip()
    if parent is not None and parent.kind == "TableExpression":
        return f"table function {name}() is not allowed here: read the tables of {policy.database}"
    if name.lower() in DENIED_FUNCTIONS or name.lower() in policy.table_functions:
        return f"{name}() is not allowed here"
    if name.lower() in IN_FUNCTIONS and node.children:
        arguments = node.children[0].children
        if len(arguments) == 2 and arguments[1].kind == "Identifier":
            return policy.table_refusal(_ALIAS.sub("", arguments[1].text))
    return None


#: Output formats the endpoint answers in (none reads a schema file or writes one).
FORMATS = frozenset(
    {"Native", "Values", "Vertical", "XML", "Markdown", "Null", "Parquet", "ORC", "Avro"}
)
FORMAT_PREFIXES = (
    "TabSeparated",
    "TSV",
    "CSV",
    "JSON",
    "RowBinary",
    "Pretty",
    "Arrow",
    "LineAsString",
    "Raw",
    "BSONEachRow",
    "Markdown",
)


def format_refusal(fmt: str) -> str | None:
    """Why the endpoint does not answer in `fmt` (formats that take schema files), or None."""
    return None if _is_format(fmt) else f"format {fmt} is not available here"
