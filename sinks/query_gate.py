"""What a query on the read-only HTTP interface may do, decided on ClickHouse's own parse tree.

The engine itself refuses writes and DDL (every analyst query runs with ``readonly`` set),
but a read-only ClickHouse still lets a query read files (``file()``), write one (``INTO
OUTFILE``: in chdb the client side of clickhouse-local writes it), kill other queries
(``KILL QUERY``) or read a table around a workspace filter (``merge()``). So before a query
runs, the engine parses it for us:

1. ``formatQuery({q:String})`` proves it is *one* statement (the text is a bound
   parameter, never pasted) and gives its canonical text, which is what runs;
2. ``EXPLAIN AST <canonical text>`` gives the tree (parsing only; nothing executes);
3. :func:`check` walks the tree: statement kinds, table functions, functions, databases and
   system tables the principal may read, ``INTO OUTFILE``, the output format, and whether
   the query carries its own ``SETTINGS`` (it then runs with ``readonly = 1``, where the
   engine refuses any setting that differs from the server's).

Errors have ClickHouse's codes and wording, so every client shows what a ClickHouse server
would have said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from leadflow.processors.errors import LeadflowError

# SQL run through the engine for the check (the query is always a bound parameter).
FORMAT_QUERY = "SELECT formatQuery({q:String})"
EXPLAIN_AST = "EXPLAIN AST "
TABLE_FUNCTIONS = "SELECT lower(name) FROM system.table_functions"
OUTPUT_FORMATS = "SELECT name FROM system.formats WHERE is_output"

# Statements a read-only user may run. The engine at readonly refuses writes and DDL too;
# this list is the first line, so nothing else (KILL, SYSTEM, SET, ...) even gets there.
READ_STATEMENTS = frozenset(
    {
        "SelectWithUnionQuery", "SelectIntersectExceptQuery", "Explain", "DescribeQuery",
        "ShowTables", "ShowColumns", "ShowCreateTableQuery", "ShowCreateDatabaseQuery",
        "ShowCreateViewQuery", "ShowCreateDictionaryQuery", "ExistsTableQuery",
        "ExistsDatabaseQuery", "ExistsViewQuery", "ExistsDictionaryQuery", "ShowEngineQuery",
        "ShowFunctions", "ShowProcesslistQuery", "UseQuery",
    }
)  # fmt: skip
# Nodes whose direct Literal children are ``INTO OUTFILE`` paths or their compression.
_WITH_OUTPUT = READ_STATEMENTS - {"UseQuery"}

# Table functions that read nothing but their arguments (``view`` wraps a subquery, which
# is checked like any other). Everything else reads files, URLs, other servers or tables
# around the workspace filter (``merge``, ``loop``, ``mergeTreeIndex``).
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
     "values", "view", "null", "generaterandom", "format", "primes"}
)  # fmt: skip
# Scalar functions that reach outside the database: files, AI providers, server config.
DENIED_FUNCTIONS = frozenset(
    {"file", "aiembed", "aisimilarity", "getserversetting", "generateserialid", "joinget",
     "joingetornull", "getmacro"}
)  # fmt: skip
# System tables a workspace analyst may read: metadata that is the same for every tenant
# (system.tables, columns and databases are filtered to the analyst's databases).
WORKSPACE_SYSTEM_TABLES = frozenset(
    {"one", "numbers", "numbers_mt", "zeros", "zeros_mt", "settings", "functions",
     "table_functions", "formats", "data_type_families", "table_engines", "database_engines",
     "collations", "time_zones", "build_options", "contributors", "keywords",
     "aggregate_function_combinators", "databases", "tables", "columns", "settings_changes",
     "data_skipping_indices", "current_roles", "enabled_roles", "licenses"}
)  # fmt: skip
SCHEMA_DATABASES = frozenset({"system", "information_schema", "INFORMATION_SCHEMA"})

_LINE = re.compile(r"^(?P<indent> *)(?P<kind>\S+)(?: (?P<rest>.*))?$")
_SUFFIX = re.compile(r"(?: \(alias .*\))?(?: \(children \d+\))?$")


class GateError(LeadflowError):
    """A query the HTTP interface refuses, with ClickHouse's error code and name."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


def readonly_error(user: str) -> GateError:
    """The error ClickHouse gives a read-only user for a write, DDL or other command."""
    return GateError(164, "READONLY", f"{user}: Cannot execute query in readonly mode")


def denied(user: str, what: str) -> GateError:
    """ClickHouse's ACCESS_DENIED for ``what``."""
    return GateError(497, "ACCESS_DENIED", f"{user}: Not enough privileges: {what}")


@dataclass
class Node:
    """One node of ``EXPLAIN AST`` output: its type, its name (if any) and its children."""

    kind: str
    name: str
    children: list[Node] = field(default_factory=list)

    def walk(self) -> list[tuple[Node, Node | None]]:
        """Every node with its parent, depth first."""
        out: list[tuple[Node, Node | None]] = [(self, None)]
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            for child in node.children:
                out.append((child, node))
                stack.append(child)
        return out


def parse_tree(dump: str) -> Node:
    r"""The tree of an ``EXPLAIN AST`` dump (one node a line, one space of indent per level).

    Literals are printed escaped on one line, so indentation alone gives the structure.

    Example:
        >>> tree = parse_tree("SelectWithUnionQuery (children 1)\n ExpressionList\n"
        ...                   "  TableIdentifier db.t (alias x)")
        >>> tree.children[0].children[0].name
        'db.t'
    """
    root: Node | None = None
    path: list[Node] = []
    for line in dump.splitlines():
        found = _LINE.match(line)
        if found is None or not line.strip():
            continue
        depth = len(found.group("indent"))
        rest = _SUFFIX.sub("", found.group("rest") or "")
        node = Node(found.group("kind"), rest.strip())
        if root is None:
            root, path = node, [node]
            continue
        del path[depth:]
        if not path:
            raise GateError(62, "SYNTAX_ERROR", "cannot read the query's parse tree")
        path[-1].children.append(node)
        path.append(node)
    if root is None:
        raise GateError(62, "SYNTAX_ERROR", "Empty query")
    return root


@dataclass(frozen=True)
class Scope:
    """What one principal may read.

    Attributes:
        user: the user name (for error messages).
        databases: databases the principal may read, or ``None`` for every database.
        current_database: the database unqualified names resolve to.
        existing_databases: every database of the engine (to tell ``db.table`` from
            ``alias.column`` in the tree, which prints both as ``Identifier a.b``).
    """

    user: str
    databases: frozenset[str] | None
    current_database: str
    existing_databases: frozenset[str] = frozenset()

    @property
    def restricted(self) -> bool:
        """Whether this principal sees only some databases (a workspace analyst)."""
        return self.databases is not None


@dataclass(frozen=True)
class Verdict:
    """What the checked query needs: its output format, readonly level and ``USE``."""

    output_format: str | None
    has_settings: bool
    use_database: str | None = None


def check(
    tree: Node, scope: Scope, table_functions: frozenset[str], formats: frozenset[str]
) -> Verdict:
    """Refuse what ``scope`` may not run; else say how to run it.

    Raises:
        GateError: with ClickHouse's code: 164 READONLY for anything but a read, 358 for
            ``INTO OUTFILE``, 497 ACCESS_DENIED for a table function, function, database or
            system table the principal may not use.
    """
    if tree.kind not in READ_STATEMENTS:
        raise readonly_error(scope.user)
    if tree.kind == "Explain":
        inner = [c for c in tree.children if c.kind not in ("Identifier", "Set")]
        if not inner or inner[0].kind not in READ_STATEMENTS - {"UseQuery"}:
            raise readonly_error(scope.user)
    if tree.kind == "ShowProcesslistQuery" and scope.restricted:
        raise denied(scope.user, "SHOW PROCESSLIST shows every user's queries")
    has_settings = False
    for node, parent in tree.walk():
        if node.kind == "Set":
            has_settings = True
        elif node.kind == "Literal" and parent is not None and parent.kind in _WITH_OUTPUT:
            raise GateError(358, "INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed")
        elif node.kind == "Function":
            _check_function(node, parent, scope, table_functions)
        elif node.kind in ("TableIdentifier", "Identifier"):
            _check_name(node.name, scope, table=node.kind == "TableIdentifier")
    use = None
    if tree.kind in ("UseQuery", "ExistsDatabaseQuery", "ShowCreateDatabaseQuery"):
        use = tree.name.split()[0] if tree.name.split() else None
        if use is not None:
            _check_database(use, scope)
    elif tree.kind.startswith(("ShowCreate", "Exists")):
        parts = tree.name.split()
        if len(parts) == 2:
            _check_name(".".join(parts), scope, table=True)
        elif parts:
            _check_name(parts[0], scope, table=True)
    elif tree.kind in ("ShowTables", "ShowColumns"):
        for child in tree.children:
            if child.kind == "Identifier" and child.name not in formats:
                _check_database(child.name, scope)
    fmt = next(
        (c.name for c in tree.children if c.kind == "Identifier" and c.name in formats), None
    )
    return Verdict(fmt, has_settings, use if tree.kind == "UseQuery" else None)


def _check_function(
    node: Node, parent: Node | None, scope: Scope, table_functions: frozenset[str]
) -> None:
    name = node.name
    if parent is not None and parent.kind == "TableExpression":
        if "." in name:  # db.view(...): a parameterized view in that database
            _check_name(name, scope, table=True)
        elif name.lower() in table_functions:
            if name.lower() not in SAFE_TABLE_FUNCTIONS:
                raise denied(scope.user, f"table function {name} reads outside the database")
        else:  # a parameterized view in the current database
            _check_name(name, scope, table=True)
    elif name.lower() in DENIED_FUNCTIONS:
        raise denied(scope.user, f"function {name} reaches outside the database")


def _check_name(name: str, scope: Scope, *, table: bool) -> None:
    """Check a (possibly qualified) name the tree shows against the principal's databases."""
    if not scope.restricted:
        return
    parts = name.split(".")
    if table and len(parts) == 1:
        _check_table(scope.current_database, parts[0], scope)
    elif len(parts) >= 2 and (table or parts[0] in scope.existing_databases):
        # An Identifier "a.b" is a column of alias a, or table b of database a (IN a.b,
        # joinGet(a.b, ...)): when a names a database, it is the latter.
        _check_table(parts[0], parts[1], scope)


def _check_table(database: str, table: str, scope: Scope) -> None:
    _check_database(database, scope)
    if database == "system" and table not in WORKSPACE_SYSTEM_TABLES:
        raise denied(scope.user, f"system.{table} is not readable by workspace analysts")


def _check_database(database: str, scope: Scope) -> None:
    if scope.databases is None or database in scope.databases or database in SCHEMA_DATABASES:
        return
    raise denied(scope.user, f"database {database} is not readable by this user")
