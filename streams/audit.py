"""The audit trail: who did what, when, to whom (never a person's PII).

Erasures (through the API or ``leadflow erase``) and their dry runs are written to the topic
``leadflow.audit`` (one partition: one order; kept forever), twice each: ``requested`` before
anything is done and ``done`` (or ``failed``) after, so a crash in between still leaves a
trace. Key management (``leadflow keys``) is local to the collector's keys file and is audited
next to it, in ``audit.jsonl`` (append-only, ``0600``).

A record names the actor (``key:<key id>`` for an admin key, ``cli:<user>`` for a command),
the workspace, the action, its subject (a lead id and device ids, never an email: an email's
lead id is a hash of it) and what came of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from leadflow.processors.errors import LeadflowError
from leadflow.streams.acked_producer import AckedProducer
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end
from leadflow.streams.private_files import FILE_MODE, private_dir
from leadflow.streams.settings import Settings
from leadflow.streams.topics import AUDIT


class AuditError(LeadflowError):
    """The audit trail cannot be written or read (the audited action must not go on)."""


def _audit_error(message: Message) -> None:
    raise AuditError(f"reading {AUDIT.name}: {message.error()}")


def utc_iso(epoch_ms: int) -> str:
    """An epoch-ms time as ISO-8601 UTC with milliseconds.

    Example:
        >>> utc_iso(1_772_366_400_123)
        '2026-03-01T12:00:00.123Z'
    """
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit trail.

    Attributes:
        audit_id: the action's id (an erasure id; shared by its requested and done records).
        action: ``erasure``, ``erasure.preview``, ``key.created``, ``key.revoked`` ...
        status: ``requested``, ``done`` or ``failed``.
        workspace_id: whose data or keys.
        actor: who: ``key:<key id>`` or ``cli:<user>``.
        at: when, ISO-8601 UTC.
        details: what: lead id, devices, counts, event id, the requester's own words.
    """

    audit_id: str
    action: str
    status: str
    workspace_id: str
    actor: str
    at: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> bytes:
        """The record key (workspace-scoped, like every key leadflow writes).

        Example:
            >>> AuditRecord("e1", "erasure", "done", "acme", "cli:ops", "t").key()
            b'["acme","e1"]'
        """
        return json.dumps([self.workspace_id, self.audit_id], separators=(",", ":")).encode()

    def value(self) -> bytes:
        """The record as compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_value(cls, value: bytes) -> AuditRecord:
        """Inverse of :meth:`value`.

        Raises:
            AuditError: not an audit record.
        """
        try:
            data = json.loads(value)
            return cls(**{**data, "details": dict(data.get("details") or {})})
        except (ValueError, TypeError) as exc:
            raise AuditError(f"not an audit record: {exc}") from None


class AuditLog:
    """The ``leadflow.audit`` topic: write records (acknowledged) and look them up.

    Args:
        settings: Kafka connection settings.
        timeout: seconds a write or a lookup may take.
    """

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._producer = AckedProducer(settings, timeout)

    def write(self, record: AuditRecord) -> None:
        """Append ``record``; return once Kafka acknowledged it.

        Raises:
            AuditError: not acknowledged (the caller must not report the action as done).
        """
        try:
            self._producer.send([(AUDIT.name, record.key(), record.value())])
        except LeadflowError as exc:
            raise AuditError(f"audit record not written: {exc}") from exc

    def records(self) -> Iterator[AuditRecord]:
        """Every record of the trail, oldest first, up to the end it has when called.

        Raises:
            AuditError: the topic cannot be read to its end within the timeout.
        """
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": "leadflow-audit-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 3,
            }
        )
        try:
            _low, end = consumer.get_watermark_offsets(
                TopicPartition(AUDIT.name, 0), timeout=self.timeout, cached=False
            )
            consumer.assign([TopicPartition(AUDIT.name, 0, OFFSET_BEGINNING)])
            pending: dict[tuple[str, int], int | None] = {(AUDIT.name, 0): end} if end else {}
            for message in read_to_end(
                consumer,
                pending,
                deadline=time.monotonic() + self.timeout,
                on_error=_audit_error,
            ):
                yield AuditRecord.from_value(message.value() or b"")
        except EndNotReached as exc:
            raise AuditError(f"{AUDIT.name} not read to its end in {self.timeout} s") from exc
        except LeadflowError:
            raise
        except Exception as exc:  # the broker or the topic is missing
            raise AuditError(f"cannot read {AUDIT.name}: {exc}") from exc
        finally:
            consumer.close()

    def find(self, workspace_id: str, audit_id: str) -> list[AuditRecord]:
        """The records of one action of one workspace (another workspace's id finds none)."""
        return [
            r for r in self.records() if r.workspace_id == workspace_id and r.audit_id == audit_id
        ]

    def close(self) -> None:
        """Release the producer."""
        self._producer.close()


class FileAudit:
    """An append-only JSON-lines audit file (``0600``): key management beside its keys file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: AuditRecord) -> None:
        """Append ``record`` and fsync it.

        Example:
            >>> import tempfile
            >>> trail = FileAudit(Path(tempfile.mkdtemp()) / "audit.jsonl")
            >>> trail.write(AuditRecord("k1", "key.created", "done", "acme", "cli:ops", "t"))
            >>> [r.action for r in trail.records()]
            ['key.created']
        """
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(fd, record.value() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[AuditRecord]:
        """Every record, oldest first (none when the file does not exist yet)."""
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [AuditRecord.from_value(line) for line in lines if line.strip()]
