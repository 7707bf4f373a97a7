"""The demo site, served on loopback and instrumented with leadflow.js.

A landing page with a lead-magnet form, a pricing page and a case study; the tracker sends
page views, identify and the form submit to the collector.
"""

from __future__ import annotations

import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

SITE_DIR = Path(str(resources.files("leadflow.infra") / "demo-site"))


class _SiteHandler(SimpleHTTPRequestHandler):
    """Static files, with the write key and collector URL filled into the HTML pages."""

    def __init__(self, *args: Any, write_key: str, collector_url: str, **kwargs: Any) -> None:
        self.write_key = write_key
        self.collector_url = collector_url
        super().__init__(*args, directory=str(SITE_DIR), **kwargs)

    def do_GET(self) -> None:
        """Serve HTML with placeholders replaced; everything else as static files."""
        path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        if not path.endswith(".html"):
            super().do_GET()
            return
        file = (SITE_DIR / path).resolve()
        if SITE_DIR.resolve() not in file.parents or not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = (
            file.read_text()
            .replace("__WRITE_KEY__", self.write_key)
            .replace("__COLLECTOR__", self.collector_url)
            .encode()
        )
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the collector logs what matters."""


def serve_site(host: str, port: int, write_key: str, collector_url: str) -> ThreadingHTTPServer:
    """Start the site in a daemon thread and return the server (call ``shutdown()`` to stop)."""
    handler = partial(_SiteHandler, write_key=write_key, collector_url=collector_url)
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="demo-site", daemon=True).start()
    return server
