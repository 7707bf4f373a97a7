"""A stand-in for a *writable* ClickHouse server (server mode), over the session's engine.

The projector writes to a ClickHouse server over HTTP when ``LEADFLOW_CLICKHOUSE_DSN`` is
``http://...``; test_projector_outage stops and restarts this stand-in to show the
projector backing off on the real clickhouse-connect HTTP path. It accepts inserts, which
the real interface of the embedded engine (:mod:`leadflow.sinks.clickhouse_http`, read-only,
what analysts and the contract suite use) never does. No auth, no compression.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# URL arguments that are about the HTTP exchange, not ClickHouse settings.
_HTTP_ONLY = {
    "query", "database", "default_format", "wait_end_of_query", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "enable_http_compression",
    "client_protocol_version", "user", "password", "quota_key",
}  # fmt: skip
_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$", re.I | re.S
)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)


def _handler(backend: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/ping":
                self._reply(200, b"Ok.\n", {})
                return
            self._execute(b"")

        def do_POST(self) -> None:
            self._execute(self._body())

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the chunk's CRLF
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _execute(self, body: bytes) -> None:
            args = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            query = args.get("query")
            data = body
            if query is None:
                line, _, rest = body.partition(b"\n")
                if _INSERT.match(line.decode(errors="replace")):
                    # clickhouse-connect sends "INSERT ... FORMAT Native\n" + the data;
                    # any other body (INSERT ... SELECT included) is the query itself.
                    query, data = line.decode(), rest
                else:
                    query, data = body.decode(), b""
            params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
            settings = {
                k: v for k, v in args.items() if k not in _HTTP_ONLY and not k.startswith("param_")
            }
            database = args.get("database") or None
            try:
                insert = _INSERT.match(query)
                if insert is not None:
                    out = self._insert(insert, data, settings, params, database)
                    fmt = "TabSeparated"
                else:
                    match = _FORMAT.search(query)
                    fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
                    result = backend._run_with_settings(
                        query, fmt, settings, params=params, database=database
                    )
                    out = result.bytes() or b""
            except Exception as exc:  # the client must see ClickHouse's error text
                text = str(exc)
                code = re.search(r"Code: (\d+)", text)
                self._reply(
                    500,
                    text.encode(),
                    {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"},
                )
                return
            self._reply(
                200,
                out,
                {
                    "X-ClickHouse-Format": fmt,
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Summary": json.dumps({"read_rows": "0", "written_rows": "0"}),
                    "X-ClickHouse-Query-Id": args.get("query_id", ""),
                },
            )

        @staticmethod
        def _insert(
            insert: re.Match[str],
            payload: bytes,
            settings: dict[str, str],
            params: dict[str, str],
            database: str | None,
        ) -> bytes:
            tmp = tempfile.NamedTemporaryFile(suffix=".data", delete=False)  # noqa: SIM115
            try:
                tmp.write(payload)
                tmp.close()
                clause = (
                    " SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items())
                    if settings
                    else ""
                )
                sql = (
                    f"INSERT INTO {insert.group('target')} FROM INFILE '{tmp.name}'{clause} "
                    f"FORMAT {insert.group('fmt')}"
                )
                result = backend._run(sql, "TabSeparated", params=params, database=database)
                return bytes(result.bytes() or b"")
            finally:
                os.unlink(tmp.name)

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
