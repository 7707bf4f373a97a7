"""`leadflow keys` and `leadflow collector` as an operator runs them (subprocesses, env vars)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from leadflow.streams.settings import Settings
from tests.conftest import free_port

DEAL = {"event": "Deal Won", "userId": "u1", "properties": {"amount": 5}}


def leadflow(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "leadflow", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_keys_cli_and_a_served_collector(
    collector_settings: Settings, tmp_path: Path, workers: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "LEADFLOW_DATA_DIR": str(tmp_path),
        "LEADFLOW_KAFKA_BOOTSTRAP": collector_settings.bootstrap,
        "LEADFLOW_COLLECTOR_PORT": str(port),
        "LEADFLOW_LOG_FORMAT": "json",
    }
    key = leadflow(env, "keys", "create", "acme").strip()
    assert key.startswith("lfw_")
    listing = leadflow(env, "keys", "list")
    assert "acme" in listing
    assert key not in listing
    assert key not in (tmp_path / "collector" / "keys.json").read_text()

    server = subprocess.Popen(
        [sys.executable, "-m", "leadflow", "collector", "--workers", workers],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "collector exited"
            assert time.monotonic() < deadline, "collector did not come up"
            time.sleep(0.2)
        assert (
            httpx.post(f"{url}/v1/track", json=DEAL, auth=(key, ""), timeout=30).status_code == 200
        )
        new_key = leadflow(env, "keys", "rotate", "acme").strip()
        # The running collector sees the rotation on its next request.
        assert (
            httpx.post(f"{url}/v1/track", json=DEAL, auth=(key, ""), timeout=30).status_code == 401
        )
        assert (
            httpx.post(f"{url}/v1/track", json=DEAL, auth=(new_key, ""), timeout=30).status_code
            == 200
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
