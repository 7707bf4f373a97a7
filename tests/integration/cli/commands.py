"""The installed ``leadflow`` command on the local embedded engine, one process per call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def leadflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``leadflow ARGS`` with ``data_dir`` as its data dir (chdb under it), JSON logs.

    A fresh process each: chdb holds one engine (one data dir) per process.
    """
    env = {**os.environ, "LEADFLOW_DATA_DIR": str(data_dir), "LEADFLOW_LOG_FORMAT": "json"}
    env.pop("LEADFLOW_CLICKHOUSE_DSN", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "leadflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
