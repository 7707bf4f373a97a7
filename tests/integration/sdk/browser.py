"""Serving a test page with an SDK's published bundle, and Debian's headless Chromium."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SITE = Path(__file__).parent / "site"
# Flags for a quiet browser in a container: no sandbox (root), no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class _Site(http.server.SimpleHTTPRequestHandler):
    """The test pages, and each SDK bundle under its prefix (read-only files)."""

    mounts: Mapping[str, Path] = {}

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        for prefix, folder in self.mounts.items():
            if clean.startswith(prefix):
                return str(folder / clean.removeprefix(prefix))
        return str(SITE / clean.lstrip("/"))

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def serve_site(port: int, mounts: Mapping[str, Path]) -> Iterator[str]:
    """Serve tests/integration/sdk/site on ``port``, bundles under ``mounts``; yield its URL."""
    handler = type("Site", (_Site,), {"mounts": dict(mounts)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
