"""The real tracker SDKs (tests/sdk, installed by ``make sdk-deps``) against a real collector."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.processors.events import Event
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.settings import Settings
from tests.integration.collector.conftest import (
    Running,
    collector_settings,
    consume_since,
    end_offsets,
    make_collector,
    serve,
)

SDK = Path(__file__).resolve().parents[2] / "sdk"
SDK_PYTHON = SDK / ".venv" / "bin" / "python"
NODE_MODULES = SDK / "node_modules"
NODE = shutil.which("node")

needs_python_sdks = pytest.mark.skipif(
    not SDK_PYTHON.exists(), reason="tests/sdk/.venv missing: run `make sdk-deps`"
)
needs_node_sdks = pytest.mark.skipif(
    NODE is None or not (NODE_MODULES / "@segment").exists(),
    reason="node or tests/sdk/node_modules missing: run `make sdk-deps` (needs npm)",
)


@pytest.fixture(scope="module")
def sdk_collector(
    collector_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """A collector on the wall clock (the SDKs stamp real times), PII in plaintext."""
    plain = collector_settings.model_copy(update={"pii_encryption": False})
    keys = tmp_path_factory.mktemp("sdk") / "keys.json"
    collector, key = make_collector(plain, keys)
    with serve(collector) as url:
        yield Running(url, key, collector.settings, collector)


def run_driver(args: list[str], timeout: float = 120) -> dict[str, Any]:
    """Run an SDK driver script; return the JSON it prints last."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=SDK)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def new_run() -> str:
    return uuid.uuid4().hex[:12]


def stored_events(running: Running, before: dict[int, int], count: int) -> dict[str, Event]:
    """The ``count`` events written since ``before``, by event id."""
    codec = codec_from_settings(running.settings)
    out = {}
    for _key, value in consume_since(running.settings, before, count, timeout=60):
        event = codec.decode(value)
        assert isinstance(event, Event)
        out[event.event_id] = event
    return out


__all__ = ["collector_settings", "end_offsets"]
