"""Issue 19 (LOW): the collector had no read timeout or connection cap.

A client that connected and sent nothing, or trickled its headers or body, kept its
connection open forever. With uvicorn as ``leadflow collector`` runs it (the same options,
streams/collector/server.py): a request must arrive whole within the request timeout, and
beyond the connection cap new requests get 503 at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from leadflow.streams.settings import Settings
from tests.integration.collector.conftest import make_collector, serve


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 5)
    sock.settimeout(15)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) before our 15 s timeout."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextmanager
def _serving(settings: Settings, tmp_path: Path, **limits: object) -> Iterator[tuple[str, str]]:
    collector, key = make_collector(settings.model_copy(update=limits), tmp_path / "keys.json")
    with serve(collector) as url:
        yield url, key


def test_stalled_requests_are_closed_after_the_request_timeout(
    collector_settings: Settings, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        url, key = stack.enter_context(
            _serving(collector_settings, tmp_path, collector_request_timeout_seconds=1.0)
        )
        silent = stack.enter_context(_connect(url))
        headers = stack.enter_context(_connect(url))
        headers.sendall(b"POST /v1/track HTTP/1.1\r\nHost: c\r\nContent-Type: app")
        body = stack.enter_context(_connect(url))
        body.sendall(
            b"POST /v1/track HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"event": "Deal'
        )
        started = time.monotonic()
        assert _closed_by_server(silent)
        assert _closed_by_server(headers)
        assert _closed_by_server(body)
        assert time.monotonic() - started < 10
        # A request that arrives in time is served as always.
        deal = {"event": "Deal Won", "userId": "u1", "properties": {"amount": 1}}
        assert httpx.post(f"{url}/v1/track", json=deal, auth=(key, "")).status_code == 200


def test_beyond_the_connection_cap_requests_get_503_at_once(
    collector_settings: Settings, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        limits = {"collector_max_connections": 3, "collector_request_timeout_seconds": 30.0}
        url, _key = stack.enter_context(_serving(collector_settings, tmp_path, **limits))
        held = [stack.enter_context(_connect(url)) for _ in range(3)]
        assert len(held) == 3
        time.sleep(0.5)  # the server has accepted them
        answer = httpx.get(f"{url}/health", timeout=10)
        assert answer.status_code == 503
