"""How the collector is served: uvicorn with a deadline per request and a connection cap.

uvicorn bounds the idle time between two requests of a connection (keep-alive) but nothing
else: a client that connects and sends nothing, or trickles a header or a body one byte at a
time, holds its connection (and a file descriptor, and an app task waiting on the body)
forever; a few hundred such clients take the collector down. Two bounds fix that:

- :class:`RequestDeadlineProtocol`: a request (headers and body) must arrive whole within
  ``LEADFLOW_COLLECTOR_REQUEST_TIMEOUT_SECONDS`` of the connection opening or of the previous
  response; otherwise the connection is closed (logged, counted). The deadline ends when the
  request is in: waiting for Kafka's acknowledgement is bounded by the delivery timeout.
- ``limit_concurrency`` (``LEADFLOW_COLLECTOR_MAX_CONNECTIONS``): beyond that many open
  connections or requests in flight, uvicorn answers 503 at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings

log = get_logger(__name__)

_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each whole request.

    A module-level class (uvicorn's worker processes import it by name); the deadline is a
    class attribute set from the settings at the entry point of each process
    (:func:`uvicorn_options`, ``cli/collector.py``'s worker factory).
    """

    request_timeout: float = 10.0
    timed_out = 0  # connections closed by the deadline, per process (logged each time)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the deadline with the connection: sending nothing is not waiting forever."""
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def handle_events(self) -> None:
        """Parse what arrived; once the whole request is in, the deadline is met."""
        super().handle_events()
        if self.conn.their_state in _RECEIVED:
            self._disarm()

    def on_response_complete(self) -> None:
        """The next request on this connection gets a deadline of its own."""
        self._arm()  # before: a pipelined request handled inside may meet it at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        type(self).timed_out += 1
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("collector.request_timeout", client=client, seconds=self.request_timeout)
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings every collector process runs with (also used by the tests).

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> opts = uvicorn_options(load_settings(collector_max_connections=50))
        >>> opts["limit_concurrency"], opts["http"].__name__
        (50, 'RequestDeadlineProtocol')
    """
    RequestDeadlineProtocol.request_timeout = settings.collector_request_timeout_seconds
    return {
        "http": RequestDeadlineProtocol,
        "limit_concurrency": settings.collector_max_connections,
        "timeout_keep_alive": settings.collector_keep_alive_seconds,
        "log_config": None,  # logging is structlog's, configured at the entry point
        "access_log": False,
    }


def server_config(app: Any, settings: Settings, host: str, port: int) -> Config:
    """A uvicorn ``Config`` for ``app`` with the collector's bounds."""
    return Config(app, host=host, port=port, **uvicorn_options(settings))
