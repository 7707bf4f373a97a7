"""Issue 19 (LOW): the worker's web port served lead state without authentication.

faust's web server answered ``GET /table/leads/<id>/`` with a lead's company, title, email
domain, owner and scores to anyone who could reach the port. The worker serves no HTTP now:
nothing listens on ``LEADFLOW_WORKER_WEB_PORT`` while a real worker runs.
"""

from __future__ import annotations

import socket

import pytest

from .conftest import WorkerProcess


def test_nothing_listens_on_the_worker_web_port(worker: WorkerProcess) -> None:
    assert not worker.exited()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", worker.web_port), timeout=5),
    ):
        pass
