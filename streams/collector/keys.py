"""Write and admin keys: which workspace a request belongs to, stored only as hashes.

A write key (``lfw_``) sits in every web page that runs the tracker, so it is a routing token
more than a secret: it may only add ordinary events. An admin key (``lfa_``) is a secret for
servers (never a browser): it erases people through the collector's admin API. A leaked keys
file must not let anyone post as a workspace. The
file keeps the SHA-256 of each key (keys are 256 random bits, so a fast hash is enough:
there is nothing to brute-force), the workspace, and when it was created or revoked.
A new key is printed once, at creation. Rotation makes a new key and revokes the old
ones of the workspace; the running collector picks the change up on its next request
(it re-reads the file when its modification time changes).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from leadflow.processors.errors import LeadflowError
from leadflow.processors.evolve import evolve
from leadflow.processors.workspace_id import InvalidWorkspaceId, check_workspace_id, is_workspace_id
from leadflow.streams.logs import get_logger
from leadflow.streams.private_files import write_private

log = get_logger(__name__)

KEY_PREFIX = "lfw_"
WRITE, ADMIN = "write", "admin"
PREFIXES = {WRITE: KEY_PREFIX, ADMIN: "lfa_"}


class KeyStoreError(LeadflowError):
    """The keys file is unreadable, or a key operation names an unknown workspace or key."""


def hash_key(write_key: str) -> str:
    """The stored form of a write key.

    Example:
        >>> hash_key("abc")[:16]
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(write_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One write key as stored.

    Attributes:
        key_id: a short public id (for lists and logs; the hash's first 12 hex digits).
        workspace_id: the tenant the key selects.
        sha256: hash of the key.
        created_at: ISO-8601 UTC creation time.
        revoked_at: ISO-8601 UTC revocation time, or ``None`` while active.
        role: ``write`` (public: adds events) or ``admin`` (secret: erasure); files written
            before roles existed hold write keys only.
    """

    key_id: str
    workspace_id: str
    sha256: str
    created_at: str
    revoked_at: str | None = None
    role: str = WRITE


class KeyStore:
    """The keys file (JSON), read lazily and re-read when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[KeyRecord] = []
        self._by_hash: dict[str, KeyRecord] = {}

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None:
                # Every key it held stops working: each request now gets "unknown write key".
                log.error("collector.keys.file_gone", path=str(self.path), keys=len(self._records))
            self._stamp, self._records, self._by_hash = None, [], {}
            return
        # Writes replace the file, so a new inode means new content even within one mtime tick.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text())
            records = [KeyRecord(**item) for item in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"keys file {self.path} is unreadable: {exc}") from exc
        self._stamp, self._records = stamp, records
        bad = {r.key_id for r in records if not is_workspace_id(r.workspace_id)}
        if bad:
            # Written before ids were checked whole ("wsA\n" passed): such a key must not
            # select a workspace whose id breaks keys and DDL downstream. Loud, not fatal
            # for every other workspace.
            log.error("collector.keys.invalid_workspace", key_ids=sorted(bad))
        self._by_hash = {
            r.sha256: r for r in records if r.revoked_at is None and r.key_id not in bad
        }

    def records(self) -> list[KeyRecord]:
        """Every key, active and revoked, oldest first."""
        self._refresh()
        return list(self._records)

    def lookup(self, write_key: str) -> KeyRecord | None:
        """The active key record of ``write_key``, or ``None`` (unknown or revoked)."""
        self._refresh()
        return self._by_hash.get(hash_key(write_key))

    def _write(self, records: list[KeyRecord]) -> None:
        data = json.dumps({"version": 1, "keys": [asdict(r) for r in records]}, indent=2)
        write_private(self.path, data.encode())  # atomic: a collector never reads half a file
        self._stamp = None

    def create(
        self,
        workspace_id: str,
        now: Callable[[], datetime],
        token: Callable[[], str] | None = None,
        role: str = WRITE,
    ) -> str:
        """Add a ``role`` key for ``workspace_id`` and return it (the only time it is visible)."""
        try:
            check_workspace_id(workspace_id)
        except InvalidWorkspaceId as exc:
            raise KeyStoreError(str(exc)) from None
        if role not in PREFIXES:
            raise KeyStoreError(f"unknown key role {role!r} (write or admin)")
        new_key = PREFIXES[role] + (token or (lambda: secrets.token_urlsafe(32)))()
        digest = hash_key(new_key)
        record = KeyRecord(digest[:12], workspace_id, digest, now().isoformat(), role=role)
        self._write([*self.records(), record])
        return new_key

    def rotate(
        self,
        workspace_id: str,
        now: Callable[[], datetime],
        token: Callable[[], str] | None = None,
        role: str = WRITE,
    ) -> str:
        """Revoke every active ``role`` key of ``workspace_id`` and return a new one."""
        records = self.records()
        if not any(r.workspace_id == workspace_id and r.role == role for r in records):
            raise KeyStoreError(f"workspace {workspace_id!r} has no {role} keys to rotate")
        stamp = now().isoformat()
        revoked = [
            evolve(r, revoked_at=stamp)
            if r.workspace_id == workspace_id and r.role == role and r.revoked_at is None
            else r
            for r in records
        ]
        self._write(revoked)
        return self.create(workspace_id, now, token, role)

    def revoke(self, key_id: str, now: Callable[[], datetime]) -> KeyRecord:
        """Revoke one key by its public id."""
        records = self.records()
        matches = [r for r in records if r.key_id == key_id and r.revoked_at is None]
        if not matches:
            raise KeyStoreError(f"no active key with id {key_id!r}")
        done = evolve(matches[0], revoked_at=now().isoformat())
        self._write([done if r is matches[0] else r for r in records])
        return done
