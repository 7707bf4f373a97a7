"""ClickHouse's HTTP interface, served by the process that owns the embedded engine.

chdb allows one process per data directory, and that process is the projector. So the
projector also answers the protocol that clickhouse-connect, Grafana's ClickHouse data
source (HTTP mode), the JDBC driver (DBeaver), ``@clickhouse/client`` and ``curl`` speak,
on 127.0.0.1:8123 by default, from the same engine while it ingests. Read-only.

The protocol, as ClickHouse's server implements it (docs "HTTP Interface"):

* ``GET|POST /?query=...``; a POST body is (the rest of) the query; ``GET /ping`` is
  ``Ok.``; ``database`` / ``X-ClickHouse-Database``; ``default_format`` /
  ``X-ClickHouse-Format`` or a ``FORMAT`` clause; query parameters ``param_<name>``; every
  other URL parameter is a setting; ``query_id``; ``session_id`` (keeps ``USE``);
* users: basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key``, or ``user``/``password``;
* answers carry ``X-ClickHouse-Query-Id``, ``-Format``, ``-Timezone``, ``-Summary``,
  ``-Server-Display-Name``; errors are ``Code: N. DB::Exception: ... (NAME) (version V)``
  with ``X-ClickHouse-Exception-Code`` and ClickHouse's HTTP status for the code;
* compression: ``enable_http_compression=1`` with ``Accept-Encoding`` (gzip, deflate,
  zstd, lz4), ``compress=1`` (ClickHouse's own LZ4 blocks with CityHash128 checksums, the
  JDBC driver's default), and compressed request bodies (``Content-Encoding``,
  ``decompress=1``).

Why Starlette + uvicorn: both are already dependencies (the collector), Starlette gives
plain requests and responses without imposing a JSON API (FastAPI's validation and OpenAPI
would describe nothing here: the protocol is "a query in, bytes out"), and uvicorn runs in
a thread next to the projector's loop. Queries run in a small thread pool (chdb releases
the GIL), behind a concurrency limit and a bounded queue (:class:`Admission`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from leadflow.processors.errors import LeadflowError
from leadflow.sinks.analysts import Authenticator, Principal, check_exposure
from leadflow.sinks.query_runner import Outcome, QueryError, QueryRunner
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)

# ClickHouse's HTTP status per error code (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# every other code is 500.
_STATUS = {
    194: 401,
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 27, 38, 41, 72, 76, 441, 442, 443, 444, 15, 44, 16, 8, 47, 49, 50,
         167, 168, 62, 117, 53, 69, 62, 321), 400
    ),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 40, 63, 73, 82, 122, 511), 404),
    229: 413,
    48: 501,
    **dict.fromkeys((209, 76, 439), 503),
    381: 411,
    159: 408,
}  # fmt: skip
_CONTENT_TYPES = {
    "JSON": "application/json", "JSONCompact": "application/json",
    "JSONEachRow": "application/x-ndjson", "JSONCompactEachRow": "application/x-ndjson",
    "JSONStrings": "application/json", "JSONCompactStrings": "application/json",
    "CSV": "text/csv", "CSVWithNames": "text/csv", "CSVWithNamesAndTypes": "text/csv",
    "XML": "application/xml", "Markdown": "text/markdown",
}  # fmt: skip
_BINARY = ("Native", "RowBinary", "Parquet", "Arrow", "ArrowStream", "ORC", "Avro", "Protobuf")
SERVING_FILE = "clickhouse-http.json"
SESSION_SECONDS = 60.0


class ServeError(LeadflowError):
    """The HTTP interface cannot start (port taken, unsafe exposure)."""


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for an output format.

    Example:
        >>> content_type("JSONEachRow"), content_type("Native"), content_type("TSV")
        ('application/x-ndjson; charset=UTF-8', 'application/octet-stream', 'text/tab-separated-values; charset=UTF-8')
    """  # noqa: E501
    if fmt.startswith(_BINARY):
        return "application/octet-stream"
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt] + "; charset=UTF-8"
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    return "text/plain; charset=UTF-8"


# -- compression --------------------------------------------------------------------------


def native_compress(data: bytes) -> bytes:
    """ClickHouse's compressed-block format (``compress=1``): LZ4 blocks, CityHash128 each.

    Block: 16-byte CityHash128 (v1.0.2) of the rest, method 0x82 (LZ4), compressed size
    (header included) and raw size (little endian), LZ4 block data.

    Example:
        >>> native_decompress(native_compress(b"abc" * 1000)) == b"abc" * 1000
        True
    """
    import lz4.block
    from clickhouse_cityhash.cityhash import CityHash128

    out = []
    for start in range(0, max(len(data), 1), 1 << 20):
        raw = data[start : start + (1 << 20)]
        packed = lz4.block.compress(raw, store_size=False)
        block = struct.pack("<BII", 0x82, len(packed) + 9, len(raw)) + packed
        digest = CityHash128(block)
        out.append(struct.pack("<QQ", digest >> 64, digest & (2**64 - 1)) + block)
    return b"".join(out)


def native_decompress(data: bytes) -> bytes:
    """Read ClickHouse's compressed blocks (``decompress=1`` request bodies)."""
    import lz4.block

    out, pos = [], 0
    while pos < len(data):
        method, size, raw_size = struct.unpack_from("<BII", data, pos + 16)
        payload = data[pos + 25 : pos + 16 + size]
        if method == 0x82:
            out.append(lz4.block.decompress(payload, uncompressed_size=raw_size))
        elif method == 0x02:
            out.append(payload)
        else:
            raise QueryError(
                89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method {method}"
            )
        pos += 16 + size
    return b"".join(out)


# For a client that names its protocol revision, ClickHouse's Native output starts each block
# with the block info (is_overflows = 0, bucket_num = -1), and from this revision on carries a
# byte per column after its type: "has custom serialization". clickhouse-go (Grafana's data
# source) asks for revision 54460 over HTTP; the embedded engine writes Native as revision 0,
# so both are added here for such clients. (clickhouse-connect probes revision 54405 and,
# answered without block info, stays on revision 0: nothing to rewrite for it.)
CUSTOM_SERIALIZATION_REVISION = 54454
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"


def native_for_revision(data: bytes) -> bytes:
    """The engine's Native blocks with block info and the per-column serialization byte added.

    The column data is copied byte for byte; :class:`_NativeReader` only measures it.

    Example:
        >>> block = bytes([1, 2, 1]) + b"x" + bytes([5]) + b"UInt8" + bytes([7, 9])
        >>> native_for_revision(block) == _BLOCK_INFO + block[:10] + bytes([0, 7, 9])
        True
    """
    reader = _NativeReader(data)
    out = bytearray()
    while reader.pos < len(data):
        start = reader.pos
        columns, rows = reader.leb128(), reader.leb128()
        out += _BLOCK_INFO + data[start : reader.pos]
        for _ in range(columns):
            head = reader.pos
            reader.skip(reader.leb128())  # name
            kind = reader.string()
            out += data[head : reader.pos] + b"\x00"
            body = reader.pos
            if rows:
                reader.column(kind, rows, prefix=True)
            out += data[body : reader.pos]
    return bytes(out)


_FIXED = {
    "Int8": 1, "UInt8": 1, "Bool": 1, "Enum8": 1, "Int16": 2, "UInt16": 2, "Enum16": 2,
    "Date": 2, "Int32": 4, "UInt32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4,
    "BFloat16": 2, "Int64": 8, "UInt64": 8, "Float64": 8, "DateTime64": 8, "Time": 4,
    "Time64": 8, "Int128": 16, "UInt128": 16, "UUID": 16, "IPv6": 16, "Int256": 32,
    "UInt256": 32,
}  # fmt: skip


class _NativeReader:
    """Walks Native column data to find where each column ends (the types the views use)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def leb128(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def skip(self, size: int) -> None:
        self.pos += size
        if self.pos > len(self.data):
            raise QueryError(1001, "STD_EXCEPTION", "truncated Native block")

    def string(self) -> str:
        size = self.leb128()
        self.skip(size)
        return self.data[self.pos - size : self.pos].decode()

    def uint64(self) -> int:
        self.skip(8)
        return int.from_bytes(self.data[self.pos - 8 : self.pos], "little")

    def column(self, kind: str, rows: int, *, prefix: bool = False) -> None:
        name, _, rest = kind.partition("(")
        args = _split_args(rest[:-1]) if rest else []
        if name in _FIXED:
            self.skip(_FIXED[name] * rows)
        elif name == "Decimal" or name.startswith("Decimal"):
            precision = int(args[0]) if name == "Decimal" else {"32": 9, "64": 18}.get(
                name[7:], 38 if name[7:] == "128" else 76
            )  # fmt: skip
            self.skip(
                rows
                * (4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32)
            )
        elif name in ("String", "JSON"):
            for _ in range(rows):
                self.skip(self.leb128())
        elif name == "FixedString":
            self.skip(int(args[0]) * rows)
        elif name == "Nullable":
            self.skip(rows)
            self.column(args[0], rows)
        elif name == "Array":
            if rows:
                self.skip(8 * (rows - 1))
                total = self.uint64()
            else:
                total = 0
            self.column(args[0], total)
        elif name == "Map":
            self.column(f"Array(Tuple({args[0]}, {args[1]}))", rows)
        elif name == "Tuple":
            for arg in args:
                self.column(arg.split(" ", 1)[-1] if _named(arg) else arg, rows)
        elif name == "LowCardinality":
            if prefix:
                self.skip(8)  # key serialization version
            flags = self.uint64()
            keys = self.uint64()
            inner = args[0][len("Nullable(") : -1] if args[0].startswith("Nullable(") else args[0]
            self.column(inner, keys)
            count = self.uint64()
            self.skip(count * (1 << (flags & 0xFF)))
        else:
            raise QueryError(
                48, "NOT_IMPLEMENTED", f"type {kind} in Native for protocol revision >= "
                f"{CUSTOM_SERIALIZATION_REVISION} (use another format)"
            )  # fmt: skip


def _named(arg: str) -> bool:
    head = arg.split(" ", 1)
    return len(head) == 2 and head[0].isidentifier() and not head[0][0].isupper()


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated type arguments.

    Example:
        >>> _split_args("String, Tuple(a UInt8, b Array(String)), DateTime64(3, 'UTC')")
        ['String', 'Tuple(a UInt8, b Array(String))', "DateTime64(3, 'UTC')"]
    """
    out: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and char == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if current:
        out.append("".join(current).strip())
    return out


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(body, 3)
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.compress(body))
    import lz4.frame

    return bytes(lz4.frame.compress(body))


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.decompress(body))
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    raise QueryError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding}")


def choose_encoding(accept: str) -> str | None:
    """The first encoding of ``Accept-Encoding`` this server writes, in the client's order.

    Example:
        >>> choose_encoding("br, gzip;q=0.9, deflate")
        'gzip'
    """
    for token in accept.split(","):
        name = token.split(";")[0].strip().lower()
        if name in ("gzip", "deflate", "zstd", "lz4"):
            return name
    return None


# -- admission ----------------------------------------------------------------------------


class Admission:
    """At most ``running`` queries at once, ``queued`` more waiting up to ``wait`` seconds.

    A query beyond that gets ClickHouse's TOO_MANY_SIMULTANEOUS_QUERIES at once, so a
    burst of analyst queries can never pile up behind the projector's inserts.
    """

    def __init__(self, running: int, queued: int, wait: float) -> None:
        self.running = running
        self.queued = queued
        self.wait = wait
        self._slots = asyncio.Semaphore(running)
        self._waiting = 0

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def acquire(self) -> None:
        """Take a slot, or raise QueryError(202)."""
        if self._slots.locked() and self._waiting >= self.queued:
            raise QueryError(
                202,
                "TOO_MANY_SIMULTANEOUS_QUERIES",
                f"Too many simultaneous queries. Maximum: {self.running} running, "
                f"{self.queued} waiting",
            )
        with self._counted():
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self.wait)
            except TimeoutError:
                raise QueryError(
                    202,
                    "TOO_MANY_SIMULTANEOUS_QUERIES",
                    f"Too many simultaneous queries: no free slot within {self.wait:g} s "
                    f"(maximum {self.running} running)",
                ) from None

    def release(self) -> None:
        """Give the slot back."""
        self._slots.release()


# -- the application ----------------------------------------------------------------------


@dataclass
class _Request:
    """One parsed request: who, what and how."""

    principal: Principal
    sql: str
    params: dict[str, str]
    settings: dict[str, str]
    database: str | None
    default_format: str
    query_id: str
    session: tuple[str, str] | None


class ClickHouseHttp:
    """The Starlette app and the state behind it (runner, users, sessions, admission)."""

    def __init__(self, settings: Settings, runner: QueryRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.auth = Authenticator(settings)
        self.admission: Admission | None = None  # made on the server's event loop
        self.executor = ThreadPoolExecutor(
            max_workers=settings.clickhouse_http_max_concurrent,
            thread_name_prefix="clickhouse-http",
            initializer=_lower_priority,
        )
        self.sessions: dict[tuple[str, str], tuple[str | None, float]] = {}
        self.app = Starlette(
            routes=[
                Route("/ping", self.ping, methods=["GET", "HEAD"]),
                Route("/replicas_status", self.ping, methods=["GET", "HEAD"]),
                Route("/", self.handle, methods=["GET", "POST"]),
                Route("/{path:path}", self.handle, methods=["GET", "POST"]),
            ]
        )

    async def ping(self, _request: Request) -> Response:
        """``Ok.`` (health checks)."""
        return Response(b"Ok.\n", media_type="text/plain; charset=UTF-8")

    async def handle(self, request: Request) -> Response:
        """Run one query and answer as ClickHouse does."""
        query_id = request.query_params.get("query_id") or str(uuid.uuid4())
        try:
            parsed = await self._parse(request, query_id)
            if parsed is None:  # GET / with no query
                return Response(b"Ok.\n", media_type="text/plain; charset=UTF-8")
            outcome = await self._execute(request, parsed)
        except QueryError as exc:
            return self._error(exc, query_id)
        if outcome.use_database is not None and parsed.session is not None:
            self.sessions[parsed.session] = (outcome.use_database, time.monotonic())
        return self._answer(request, parsed, outcome)

    async def _execute(self, request: Request, parsed: _Request) -> Outcome:
        if self.admission is None:
            self.admission = Admission(
                self.settings.clickhouse_http_max_concurrent,
                self.settings.clickhouse_http_max_queued,
                self.settings.clickhouse_http_queue_seconds,
            )
        admission = self.admission
        await admission.acquire()
        marker = f"leadflow:{uuid.uuid4()}"
        try:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self.executor, self._run, parsed, marker)
            gone: asyncio.Future[None] = asyncio.ensure_future(_disconnected(request))
            waiting: set[asyncio.Future[Any]] = {work, gone}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                # The client hung up: stop the query now (ClickHouse's
                # cancel_http_readonly_queries_on_client_close), not at its time limit.
                self.runner.kill(marker)
                with suppress(QueryError):
                    await work
                raise QueryError(394, "QUERY_WAS_CANCELLED", "Query was cancelled")
            gone.cancel()
            return await work
        finally:
            admission.release()

    def _run(self, parsed: _Request, marker: str) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self.runner.run(
                parsed.principal,
                parsed.sql,
                params=parsed.params,
                settings=parsed.settings,
                database=parsed.database,
                default_format=parsed.default_format,
                marker=marker,
            )
        except QueryError as exc:
            log.info(
                "clickhouse_http.refused",
                user=parsed.principal.name,
                code=exc.code,
                error=str(exc)[:300],
                query_id=parsed.query_id,
            )
            raise
        log.debug(
            "clickhouse_http.query",
            user=parsed.principal.name,
            ms=round((time.monotonic() - started) * 1000),
            bytes=len(outcome.body),
            query_id=parsed.query_id,
        )
        return outcome

    async def _parse(self, request: Request, query_id: str) -> _Request | None:
        args = dict(request.query_params)
        body = await request.body()
        encoding = request.headers.get("content-encoding")
        if encoding:
            body = _decode(body, encoding.strip().lower())
        if args.get("decompress") == "1":
            body = native_decompress(body)
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = _multipart(kind, body)
            args.update(form)
            body = b""
        sql = args.get("query", "")
        if request.method == "POST" and body:
            sql = f"{sql}\n{body.decode()}" if sql else body.decode()
        principal = self._authenticate(request, args)
        if not sql.strip():
            if request.method == "GET" and "query" not in args:
                return None
            raise QueryError(62, "SYNTAX_ERROR", "Empty query")
        session = None
        database = args.get("database") or request.headers.get("x-clickhouse-database") or None
        if args.get("session_id"):
            session = (principal.name, args["session_id"])
            self._expire_sessions()
            if session in self.sessions:
                if database is None:
                    database = self.sessions[session][0]
                self.sessions[session] = (self.sessions[session][0], time.monotonic())
            elif args.get("session_check") == "1":
                raise QueryError(
                    372, "SESSION_NOT_FOUND", f"Session {args['session_id']} not found"
                )
            else:
                self.sessions[session] = (None, time.monotonic())
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        settings = {k: v for k, v in args.items() if not k.startswith("param_")}
        fmt = args.get("default_format") or request.headers.get("x-clickhouse-format")
        return _Request(
            principal, sql, params, settings, database, fmt or "TabSeparated", query_id, session
        )

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for key, (_db, seen) in list(self.sessions.items()):
            if now - seen > SESSION_SECONDS:
                del self.sessions[key]

    def _authenticate(self, request: Request, args: dict[str, str]) -> Principal:
        user, password = "default", ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise QueryError(
                    516, "AUTHENTICATION_FAILED", "Invalid basic authentication header"
                ) from None
        elif "x-clickhouse-user" in request.headers:
            user = request.headers["x-clickhouse-user"]
            password = request.headers.get("x-clickhouse-key", "")
        elif "user" in args:
            user, password = args["user"], args.get("password", "")
        principal = self.auth.authenticate(user, password)
        if principal is None:
            raise QueryError(
                516,
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user "
                "with such name",
            )
        return principal

    def _headers(self, query_id: str) -> dict[str, str]:
        facts = self.runner.facts()
        return {
            "X-ClickHouse-Server-Display-Name": facts.host,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": facts.timezone,
        }

    def _answer(self, request: Request, parsed: _Request, outcome: Outcome) -> Response:
        headers = self._headers(parsed.query_id)
        headers["X-ClickHouse-Format"] = outcome.output_format
        summary = {**outcome.summary, "result_bytes": str(len(outcome.body))}
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        headers["Content-Type"] = content_type(outcome.output_format)
        body = outcome.body
        revision = parsed.settings.get("client_protocol_version", "0")
        modern = revision.isdigit() and int(revision) >= CUSTOM_SERIALIZATION_REVISION
        if outcome.output_format == "Native" and modern and body:
            body = native_for_revision(body)
        if parsed.settings.get("compress") == "1":
            body = native_compress(body)
        elif parsed.settings.get("enable_http_compression") == "1":
            encoding = choose_encoding(request.headers.get("accept-encoding", ""))
            if encoding is not None:
                body = _encode(body, encoding)
                headers["Content-Encoding"] = encoding
        return Response(body, headers=headers)

    def _error(self, exc: QueryError, query_id: str) -> Response:
        version = self.runner.facts().version
        message = str(exc).rstrip()
        message += "" if message.endswith(".") else "."
        text = f"Code: {exc.code}. DB::Exception: {message} ({exc.name}) (version {version})\n"
        headers = {**self._headers(query_id), "X-ClickHouse-Exception-Code": str(exc.code)}
        return Response(
            text.encode(),
            status_code=_STATUS.get(exc.code, 500),
            headers=headers,
            media_type="text/plain; charset=UTF-8",
        )


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _multipart(content_type_header: str, body: bytes) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (clickhouse-connect's form mode)."""
    message = BytesParser().parsebytes(
        f"Content-Type: {content_type_header}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_filename() is not None:
            raise QueryError(48, "NOT_IMPLEMENTED", "external data is not supported here")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode()
    return fields


def _lower_priority() -> None:
    """Run query threads at nice 10: the projector's threads get the CPU first."""
    with suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


# -- serving ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """A running HTTP interface."""

    url: str
    app: ClickHouseHttp


def engine_path(settings: Settings) -> str | None:
    """The embedded engine's directory, or ``None`` when ClickHouse is a server."""
    url = settings.clickhouse_url
    if not url.startswith("chdb://"):
        return None
    return os.path.realpath(url[len("chdb://") :])


def serving_file(settings: Settings) -> Path:
    """Where the owner announces the interface (read by ``leadflow report``/``sql``)."""
    return settings.data_dir / SERVING_FILE


def served_url(settings: Settings) -> str | None:
    """The URL a running owner of the local engine serves, or ``None``.

    A file left by a process that died (kill -9) names a pid that is gone: ignored.
    """
    try:
        data = json.loads(serving_file(settings).read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(data["url"])


@contextmanager
def serve(settings: Settings, database: str) -> Iterator[Serving | None]:
    """Serve the HTTP interface for the embedded engine while the block runs.

    Yields ``None`` (and serves nothing) when ClickHouse is a server or the interface is
    switched off. Raises :class:`ServeError` when the port is taken or the settings would
    expose every workspace without a password.
    """
    import uvicorn

    path = engine_path(settings)
    if path is None or not settings.clickhouse_http:
        yield None
        return
    try:
        check_exposure(settings)
    except LeadflowError as exc:
        raise ServeError(str(exc)) from None
    host, port = settings.clickhouse_http_host, settings.clickhouse_http_port
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ServeError(
            f"cannot serve ClickHouse's HTTP interface on {host}:{port}: {exc.strerror}; set "
            "LEADFLOW_CLICKHOUSE_HTTP_PORT to a free port (or LEADFLOW_CLICKHOUSE_HTTP=false)"
        ) from None
    app = ClickHouseHttp(settings, QueryRunner(path, settings, database))
    config = uvicorn.Config(
        app.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=10
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="clickhouse-http", daemon=True
    )
    thread.start()
    bound = sock.getsockname()[1]
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - recognising it, not binding to it
    url = f"http://{'127.0.0.1' if wildcard else host}:{bound}"
    announce = serving_file(settings)
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        if not thread.is_alive():
            raise ServeError("the ClickHouse HTTP interface stopped at start (see the log)")
        announce.parent.mkdir(parents=True, exist_ok=True)
        announce.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        log.info("clickhouse_http.serving", url=url, database=database)
        yield Serving(url, app)
    finally:
        with suppress(FileNotFoundError):
            announce.unlink()
        server.should_exit = True
        thread.join(timeout=10)
        app.executor.shutdown(wait=False, cancel_futures=True)
        sock.close()
