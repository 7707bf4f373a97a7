"""Runs one analyst query on the embedded engine, read-only and within limits.

The projector owns the engine (chdb: one process per data directory) and keeps inserting
through its own connection. Each analyst query gets a fresh connection handle to the same
engine (chdb allows many per process; opening one costs well under a millisecond), set up
in this order, so that nothing the analyst sends can undo it:

1. the server's limits: ``max_execution_time``, ``max_memory_usage``, ``max_threads``,
   ``max_result_bytes`` (engine-enforced, ClickHouse's own errors), ``os_thread_priority``
   = 10 so query threads yield the CPU to ingestion, and a ``log_comment`` marker by which
   a watchdog can ``KILL`` the query;
2. the client's settings (URL parameters), refused when they would raise a limit or touch
   a protected setting (ClickHouse's SETTING_CONSTRAINT_VIOLATION), then read back from
   the engine, which parses them, and checked again;
3. for a workspace analyst, ``additional_table_filters`` on every table of the readable
   databases that has a ``workspace_id`` column, and on the system tables that list
   databases, tables and columns: the engine applies them wherever a table is read,
   including inside views, the same effect as row policies on a server;
4. the query check (:mod:`leadflow.sinks.query_gate`), then ``readonly`` (1 when the query
   has a ``SETTINGS`` clause, so the engine refuses any change; else 2, so that
   ``system.settings`` shows clients which settings they may send);
5. the query, with its bound parameters.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import chdb

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.analysts import Principal
from leadflow.sinks.query_gate import (
    EXPLAIN_AST,
    FORMAT_QUERY,
    OUTPUT_FORMATS,
    SCHEMA_DATABASES,
    TABLE_FUNCTIONS,
    GateError,
    Scope,
    Verdict,
    check,
    parse_tree,
)
from leadflow.sinks.tables import check_identifier
from leadflow.sinks.workspaces import workspace_database
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)

ENGINE_FACTS = "SELECT version(), timezone(), hostName()"
EXISTING_DATABASES = "SELECT name FROM system.databases"
# Tables and materialized views (not plain views: they read tables, which are filtered)
# that carry a workspace, in the databases a workspace analyst may read.
WORKSPACE_TABLES = (
    "SELECT c.database, c.table FROM system.columns AS c "
    "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
    "WHERE c.name = 'workspace_id' AND c.database IN {dbs:Array(String)} AND t.engine != 'View'"
)
LIMIT_READBACK = (
    "SELECT getSetting('max_execution_time'), getSetting('max_memory_usage'), "
    "getSetting('max_threads'), getSetting('max_result_bytes')"
)
KILL = "KILL QUERY WHERE Settings['log_comment'] = {marker:String} ASYNC"

# URL parameters that belong to the HTTP exchange, not to the engine.
TRANSPORT = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout",
        "session_check", "compress", "decompress", "enable_http_compression",
        "http_zlib_compression_level", "wait_end_of_query", "buffer_size", "user", "password",
        "quota_key", "role", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "client_protocol_version", "add_http_cors_header", "http_response_buffer_size",
        "cancel_http_readonly_queries_on_client_close", "http_wait_end_of_query",
        "http_native_compression_disable_checksumming_on_decompress", "stacktrace",
    }
)  # fmt: skip
# Settings an analyst may not change at all: the workspace filter, the kill marker, the CPU
# priority that keeps ingestion first, and switches that open the engine up.
CONST = frozenset(
    {
        "additional_table_filters", "additional_result_filter", "log_comment",
        "os_thread_priority", "priority", "allow_introspection_functions", "allow_ddl",
        "profile", "max_concurrent_queries_for_user", "max_concurrent_queries_for_all_users",
    }
)  # fmt: skip
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# The limit settings, in LIMIT_READBACK's order.
LIMITED = ("max_execution_time", "max_memory_usage", "max_threads", "max_result_bytes")
KILL_GRACE_SECONDS = 5.0


class QueryError(LeadflowError):
    """A refused or failed query, with ClickHouse's error code and name."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass(frozen=True)
class Limits:
    """The per-query limits, from the settings."""

    seconds: float
    memory: int
    threads: int
    result_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits ``settings`` configure."""
        return cls(
            settings.clickhouse_http_max_query_seconds,
            settings.clickhouse_http_max_query_memory,
            settings.clickhouse_http_max_threads,
            settings.clickhouse_http_max_result_bytes,
        )

    def values(self) -> tuple[float, int, int, int]:
        """In ``LIMITED`` order."""
        return (self.seconds, self.memory, self.threads, self.result_bytes)


@dataclass(frozen=True)
class Outcome:
    """A query's result as the engine wrote it, and what the HTTP headers report."""

    body: bytes
    output_format: str
    summary: dict[str, str]
    use_database: str | None = None


@dataclass
class EngineFacts:
    """What the engine says about itself, read once."""

    version: str
    timezone: str
    host: str
    table_functions: frozenset[str]
    formats: frozenset[str]


def quote(value: object) -> str:
    r"""A ClickHouse string literal.

    Example:
        >>> print(quote("it's"))
        'it\'s'
    """
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def error_of(exc: BaseException) -> QueryError:
    """The engine's exception as ClickHouse's (code, name, message).

    chdb wraps some messages twice ("Code: 164. DB::Exception: Code: 164. DB::Exception:
    ...(READONLY) (version ...). (READONLY)"); the innermost one is what a server sends.

    Example:
        >>> e = error_of(RuntimeError("Code: 164. DB::Exception: Code: 164. DB::Exception: "
        ...     "No. (READONLY) (version 26.9.2.1). (READONLY)"))
        >>> (e.code, e.name, str(e))
        (164, 'READONLY', 'No.')
    """
    if isinstance(exc, QueryError):
        return exc
    if isinstance(exc, GateError):
        return QueryError(exc.code, exc.name, str(exc))
    text = str(exc).strip()
    marker = "DB::Exception: "
    start = text.rfind("Code: ", 0, text.rfind(marker) if marker in text else len(text))
    code = 1000
    if start >= 0:
        head, _, text = text[start:].partition(marker)
        digits = "".join(c for c in head[len("Code: ") :] if c.isdigit())
        code = int(digits) if digits else code
    name = "STD_EXCEPTION"
    for suffix in (") (version", ")"):
        cut = text.rfind(" (", 0, text.rfind(suffix) + 1 if suffix in text else 0)
        candidate = text[cut + 2 : text.find(")", cut)] if cut >= 0 else ""
        if candidate and set(candidate) <= _NAME_OK and candidate.isupper():
            name = candidate
            text = text[:cut].rstrip()
            break
    return QueryError(code, name, text.rstrip(".") + "." if text else name)


class QueryRunner:
    """Runs analyst queries on the engine at ``path`` (the one the projector writes)."""

    def __init__(self, path: str, settings: Settings, database: str) -> None:
        self.path = path
        self.limits = Limits.of(settings)
        self.database = check_identifier(database, "database")
        self._facts: EngineFacts | None = None
        self._overdue: dict[str, bool] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn = chdb.connect(self.path)  # type: ignore[no-untyped-call]
        try:
            yield conn
        finally:
            conn.close()

    def facts(self) -> EngineFacts:
        """Version, timezone, host, table functions and output formats (cached)."""
        with self._lock:
            if self._facts is None:
                with self._connection() as conn:
                    version, tz, host = _rows(conn.query(ENGINE_FACTS, "TSVRaw"))[0]
                    self._facts = EngineFacts(
                        version,
                        tz,
                        host,
                        frozenset(r[0] for r in _rows(conn.query(TABLE_FUNCTIONS, "TSVRaw"))),
                        frozenset(r[0] for r in _rows(conn.query(OUTPUT_FORMATS, "TSVRaw"))),
                    )
            return self._facts

    def readable_databases(self, principal: Principal) -> frozenset[str] | None:
        """The databases ``principal`` may read (``None``: all)."""
        if principal.workspace_id is None:
            return None
        own = workspace_database(self.database, principal.workspace_id)
        return frozenset({self.database, own})

    def run(
        self,
        principal: Principal,
        sql: str,
        *,
        params: Mapping[str, str] | None = None,
        settings: Mapping[str, str] | None = None,
        database: str | None = None,
        default_format: str = "TabSeparated",
        marker: str | None = None,
    ) -> Outcome:
        """Run ``sql`` for ``principal``; raise :class:`QueryError` as ClickHouse would."""
        facts = self.facts()
        marker = marker or f"leadflow:{uuid.uuid4()}"
        watchdog = threading.Timer(
            self.limits.seconds + KILL_GRACE_SECONDS, self._kill_overdue, (marker,)
        )
        watchdog.daemon = True
        try:
            with self._connection() as conn:
                watchdog.start()
                verdict, canonical = self._prepare(
                    conn, principal, sql, params or {}, settings or {}, database, marker, facts
                )
                if verdict.use_database is not None:
                    return Outcome(b"", default_format, {}, verdict.use_database)
                fmt = verdict.output_format or default_format
                result = conn.query(canonical, fmt, params=dict(params or {}))
                return Outcome(bytes(result.bytes() or b""), fmt, _summary(result))
        except Exception as exc:  # every engine failure becomes ClickHouse's error shape
            error = error_of(exc)
            if error.code == 394 and self._overdue.pop(marker, False):
                # Killed by the watchdog: the client's error is the limit it ran past.
                error = QueryError(
                    159,
                    "TIMEOUT_EXCEEDED",
                    f"Timeout exceeded: the query ran past max_execution_time "
                    f"({self.limits.seconds:g} s) and was cancelled",
                )
            raise error from None
        finally:
            watchdog.cancel()
            self._overdue.pop(marker, None)

    def _kill_overdue(self, marker: str) -> None:
        # ClickHouse checks max_execution_time between blocks; a query starved of CPU or
        # stuck where it cannot check (merging aggregation states) is stopped here.
        self._overdue[marker] = True
        self.kill(marker, overdue=True)

    def kill(self, marker: str, *, overdue: bool = False) -> None:
        """Cancel the query carrying ``marker``: past its limit (``overdue``) or client gone.

        A failure is logged at warning: the query goes on, holding an engine thread and its
        memory, past its limit when ``overdue`` (a query that ended meanwhile is no failure:
        ``KILL QUERY`` then matches nothing and succeeds).
        """
        try:
            with self._connection() as conn:
                conn.query(KILL, "TSVRaw", params={"marker": marker})
            log.warning("clickhouse_http.killed", marker=marker)
        except Exception as exc:  # the engine refused the KILL itself
            log.warning(
                "clickhouse_http.kill_failed", marker=marker, overdue=overdue, error=str(exc)
            )

    def _prepare(
        self,
        conn: Any,
        principal: Principal,
        sql: str,
        params: Mapping[str, str],
        settings: Mapping[str, str],
        database: str | None,
        marker: str,
        facts: EngineFacts,
    ) -> tuple[Verdict, str]:
        seconds, memory, threads, result_bytes = self.limits.values()
        server = {
            "max_execution_time": seconds,
            "max_memory_usage": memory,
            "max_threads": threads,
            "max_result_bytes": result_bytes,
            "result_overflow_mode": "throw",
            "timeout_overflow_mode": "throw",
            "os_thread_priority": 10,
            "log_comment": marker,
            # The attribution views need this plan setting (see sinks/reports.py); set here,
            # a query's own "SETTINGS query_plan_merge_expression_into_join = 0" is a no-op
            # that readonly = 1 allows.
            "query_plan_merge_expression_into_join": 0,
        }
        conn.query(set_statement(server), "TSVRaw")
        wanted = {k: v for k, v in settings.items() if k not in TRANSPORT}
        if wanted:
            self._apply_client_settings(conn, wanted)
        readable = self.readable_databases(principal)
        current = database or (self.database if readable is not None else "default")
        existing = frozenset(r[0] for r in _rows(conn.query(EXISTING_DATABASES, "TSVRaw")))
        scope = Scope(principal.name, readable, current, existing)
        if readable is not None:
            if current not in readable | SCHEMA_DATABASES:
                raise QueryError(
                    497,
                    "ACCESS_DENIED",
                    f"{principal.name}: Not enough privileges: database "
                    f"{current} is not readable by this user",
                )
            conn.query(set_statement({"additional_table_filters": self._filters(conn, principal,
                                                                                readable)}),
                       "TSVRaw")  # fmt: skip
        conn.query(f"USE {check_identifier(current, 'database')}", "TSVRaw")
        try:
            formatted = conn.query(FORMAT_QUERY, "TSVRaw", params={"q": escaped(sql)})
        except Exception as exc:  # the query does not parse: ClickHouse's syntax error
            error = error_of(exc)
            text = str(error).split(": In scope SELECT formatQuery(")[0]
            raise QueryError(error.code, error.name, text) from None
        canonical = _rows(formatted, raw=True)
        dump = conn.query(EXPLAIN_AST + canonical, "TSVRaw", params=dict(params))
        verdict = check(parse_tree(bytes(dump.bytes()).decode()), scope,
                        facts.table_functions, facts.formats)  # fmt: skip
        conn.query(f"SET readonly = {1 if verdict.has_settings else 2}", "TSVRaw")
        return verdict, canonical

    def _apply_client_settings(self, conn: Any, wanted: Mapping[str, str]) -> None:
        for name in wanted:
            if name in CONST:
                raise QueryError(
                    452, "SETTING_CONSTRAINT_VIOLATION", f"Setting {name} should not be changed"
                )
            if name == "readonly" and wanted[name] not in ("1", "2"):
                raise QueryError(
                    164, "READONLY", "Cannot modify 'readonly' setting in readonly mode"
                )
        conn.query(set_statement({k: v for k, v in wanted.items() if k != "readonly"}), "TSVRaw")
        got = _rows(conn.query(LIMIT_READBACK, "TSVRaw"))[0]
        for name, value, limit in zip(LIMITED, got, self.limits.values(), strict=True):
            number = float(value)
            if number == 0 or number > limit:
                shown = int(limit) if float(limit).is_integer() else limit
                raise QueryError(
                    452,
                    "SETTING_CONSTRAINT_VIOLATION",
                    f"Setting {name} shouldn't be greater than {shown}"
                    + (" (0 means no limit, which is not allowed)" if number == 0 else ""),
                )

    def _filters(self, conn: Any, principal: Principal, readable: frozenset[str]) -> str:
        """The ``additional_table_filters`` map literal for a workspace analyst."""
        assert principal.workspace_id is not None
        predicate = f"workspace_id = {quote(principal.workspace_id)}"
        rows = _rows(conn.query(WORKSPACE_TABLES, "TSVRaw", params={"dbs": _array(readable)}))
        listed = sorted(readable | SCHEMA_DATABASES)
        in_list = "(" + ", ".join(quote(d) for d in listed) + ")"
        entries = {f"{db}.{table}": predicate for db, table in rows}
        entries["system.databases"] = f"name IN {in_list}"
        for table in ("tables", "columns", "data_skipping_indices"):
            entries[f"system.{table}"] = f"database IN {in_list}"
        return "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in entries.items()) + "}"


def set_statement(values: Mapping[str, object]) -> str:
    """``SET a = 'x', b = ...`` with every name checked and every value quoted.

    Values are quoted even when numeric: ClickHouse converts a quoted literal to the
    setting's type, and a string setting given a bare number would be refused. A map
    value (``{...}``) is passed as written (it is built here, never taken from a client).

    Example:
        >>> set_statement({"max_threads": 1, "additional_table_filters": "{'a': 'b'}"})
        "SET max_threads = '1', additional_table_filters = {'a': 'b'}"
    """
    parts = []
    for name, value in values.items():
        if not name or not set(name) <= _NAME_OK or name[0].isdigit():
            raise QueryError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        text = str(value)
        literal = text if name == "additional_table_filters" else quote(text)
        parts.append(f"{name} = {literal}")
    return "SET " + ", ".join(parts)


def escaped(text: str) -> str:
    r"""``text`` as a query parameter value (parameters are read in TabSeparated escaping).

    Example:
        >>> print(escaped("a\tb\\c"))
        a\tb\\c
    """
    return (
        text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
        .replace("\r", "\\r").replace("\0", "\\0")
    )  # fmt: skip


def _array(values: frozenset[str]) -> str:
    return "[" + ", ".join(quote(v) for v in sorted(values)) + "]"


def _rows(result: Any, *, raw: bool = False) -> Any:
    text = bytes(result.bytes() or b"").decode()
    if raw:
        return text[:-1] if text.endswith("\n") else text
    return [line.split("\t") for line in text.splitlines()]


def _summary(result: Any) -> dict[str, str]:
    """Chdb's statistics in the keys of ClickHouse's ``X-ClickHouse-Summary`` header."""
    try:
        return {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
    except Exception:  # an older chdb without statistics: the header stays minimal
        return {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
