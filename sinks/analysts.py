"""Who may query the embedded engine's HTTP interface, and what each one may see.

Two kinds of user (both read-only):

* the **operator's user** (``LEADFLOW_CLICKHOUSE_HTTP_USER``, ``default`` by default, with
  ``LEADFLOW_CLICKHOUSE_HTTP_PASSWORD``): every database, every workspace, the system tables.
  ``leadflow report`` / ``leadflow sql`` use it when the projector owns the engine.
* **workspace analysts** (``leadflow workspace user add ACME``): one workspace only. They
  see the ``leadflow`` tables and views filtered to their workspace (as row policies do on a
  server), their own ``leadflow_ws_<workspace>`` views, and the harmless system tables;
  nothing else (see :mod:`leadflow.sinks.query_gate`).

Analyst passwords are generated (256 random bits), printed once and stored as SHA-256 in
a JSON file (mode 0600) that the serving process re-reads when it changes, like the
collector's write keys: a fast hash is enough when there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from leadflow.processors.errors import LeadflowError
from leadflow.processors.evolve import evolve
from leadflow.sinks.workspaces import check_workspace
from leadflow.streams.settings import Settings

PASSWORD_PREFIX = "lfa_"  # noqa: S105 - a marker in front of generated passwords, not one
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class AnalystError(LeadflowError):
    """The users file is unreadable, or a user operation names an unknown or taken user."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user of the HTTP interface.

    Attributes:
        name: the user name (as ClickHouse errors show it).
        workspace_id: the one workspace this user sees, or ``None`` for every workspace.
    """

    name: str
    workspace_id: str | None = None


@dataclass(frozen=True, slots=True)
class AnalystRecord:
    """One workspace analyst as stored (never the password itself)."""

    user: str
    workspace_id: str
    sha256: str
    created_at: str
    revoked_at: str | None = None


def users_path(settings: Settings) -> Path:
    """Where workspace analysts are stored.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> str(users_path(load_settings(data_dir="/tmp/lf")))
        '/tmp/lf/clickhouse-users.json'
    """
    return settings.clickhouse_http_users_file or settings.data_dir / "clickhouse-users.json"


def default_user_name(workspace_id: str) -> str:
    """The analyst user name for a workspace: ``analyst_<id>`` with other characters as ``_``.

    Example:
        >>> default_user_name("acme-eu")
        'analyst_acme_eu'
    """
    return "analyst_" + re.sub(r"[^A-Za-z0-9_]", "_", check_workspace(workspace_id))[:55]


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class AnalystStore:
    """The users file (JSON), read lazily and re-read when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[AnalystRecord] = []

    def records(self) -> list[AnalystRecord]:
        """Every analyst, active and revoked, oldest first."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._records = None, []
            return []
        # Writes replace the file, so a new inode means new content within one mtime tick.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
                self._records = [AnalystRecord(**item) for item in data["users"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise AnalystError(f"users file {self.path} is unreadable: {exc}") from exc
            self._stamp = stamp
        return list(self._records)

    def active(self, user: str) -> AnalystRecord | None:
        """The active record of ``user``, or ``None``."""
        return next((r for r in self.records() if r.user == user and not r.revoked_at), None)

    def _write(self, records: list[AnalystRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"version": 1, "users": [asdict(r) for r in records]}, out, indent=2)
        tmp.replace(self.path)  # atomic: the serving process never reads half a file
        self._stamp = None

    def add(
        self,
        workspace_id: str,
        now: Callable[[], datetime],
        user: str | None = None,
        token: Callable[[], str] | None = None,
        reserved: tuple[str, ...] = (),
    ) -> tuple[str, str]:
        """Create an analyst for ``workspace_id``; return ``(user, password)`` (shown once)."""
        name = user or default_user_name(workspace_id)
        if not _USER.match(name):
            raise AnalystError(f"user name {name!r} must match {_USER.pattern}")
        if name in reserved or self.active(name) is not None:
            raise AnalystError(f"user {name!r} exists; use rotate to give it a new password")
        password = PASSWORD_PREFIX + (token or (lambda: secrets.token_urlsafe(32)))()
        record = AnalystRecord(name, check_workspace(workspace_id), _digest(password), _iso(now))
        self._write([*self.records(), record])
        return name, password

    def rotate(
        self, user: str, now: Callable[[], datetime], token: Callable[[], str] | None = None
    ) -> str:
        """Give ``user`` a new password (the old one stops working at once); return it."""
        found = self.active(user)
        if found is None:
            raise AnalystError(f"no active user {user!r}")
        password = PASSWORD_PREFIX + (token or (lambda: secrets.token_urlsafe(32)))()
        updated = evolve(found, sha256=_digest(password), created_at=_iso(now))
        self._write([updated if r is found else r for r in self.records()])
        return password

    def revoke(self, user: str, now: Callable[[], datetime]) -> AnalystRecord:
        """Revoke ``user``: its next query is refused."""
        found = self.active(user)
        if found is None:
            raise AnalystError(f"no active user {user!r}")
        done = evolve(found, revoked_at=_iso(now))
        self._write([done if r is found else r for r in self.records()])
        return done


def _iso(now: Callable[[], datetime]) -> str:
    return now().isoformat()


class Authenticator:
    """Checks a user name and password against the operator's user and the analysts file."""

    def __init__(self, settings: Settings) -> None:
        self.operator = settings.clickhouse_http_user
        secret = settings.clickhouse_http_password
        self._operator_digest = _digest(secret.get_secret_value()) if secret else None
        self.store = AnalystStore(users_path(settings))

    def authenticate(self, user: str, password: str) -> Principal | None:
        """The principal, or ``None`` when the user is unknown or the password wrong."""
        given = _digest(password)
        if user == self.operator:
            # No password configured: the operator's user takes none (ClickHouse's default
            # user does the same); serve() refuses that on a non-loopback address.
            expected = self._operator_digest or _digest("")
            return Principal(user) if hmac.compare_digest(given, expected) else None
        record = self.store.active(user)
        if record is None or not hmac.compare_digest(given, record.sha256):
            return None
        return Principal(user, record.workspace_id)


def check_exposure(settings: Settings) -> None:
    """Refuse to serve every workspace without a password on a non-loopback address.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> check_exposure(load_settings(clickhouse_http_host="0.0.0.0"))
        Traceback (most recent call last):
        ...
        leadflow.sinks.analysts.AnalystError: LEADFLOW_CLICKHOUSE_HTTP_HOST=0.0.0.0 is not ...
    """
    host = settings.clickhouse_http_host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and settings.clickhouse_http_password is None:
        raise AnalystError(
            f"LEADFLOW_CLICKHOUSE_HTTP_HOST={host} is not a loopback address: set "
            "LEADFLOW_CLICKHOUSE_HTTP_PASSWORD, or every workspace is readable without one"
        )
