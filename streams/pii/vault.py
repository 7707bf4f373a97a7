"""Seal, open and shred: the keyring plus a producer for ``leadflow.pii-keys``.

One :class:`Vault` per process. The collector seals events before producing them (keys
it creates are acknowledged by Kafka before any event that uses them); the worker opens
events only to derive what scoring needs (the email domain); downstream consumers open
the hand-off's contact (:meth:`Vault.open_handoff`); ``leadflow erase`` and the
collector (on an ``erasure_requested`` event) shred a lead's keys.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from leadflow.processors.derived import BecameSQL, Contact
from leadflow.processors.events import Event, Kind
from leadflow.processors.evolve import evolve
from leadflow.processors.pii import (
    Envelope,
    Sealer,
    has_pii,
    open_contact,
    open_event,
    seal_event,
    subject_of,
)
from leadflow.streams.acked_producer import AckedProducer, NotAcknowledged
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.crypto import decrypt, encrypt, new_key, new_kid
from leadflow.streams.pii.keyring import (
    Keyring,
    KeyringError,
    key_record_key,
    link_record_key,
    shred_records,
)
from leadflow.streams.settings import Settings
from leadflow.streams.topics import PII_KEYS

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Shredded:
    """What an erasure deleted: the subjects (lead and devices) and how many keys."""

    workspace_id: str
    lead_id: str
    subjects: tuple[str, ...]
    keys: int
    links: int


class Vault:
    """Per-subject PII keys: create on first use, open while they exist, shred on erasure.

    Args:
        settings: Kafka connection settings.
        keyring: the key view to use (default: a new :class:`Keyring`).
        refresh_seconds: how stale the view may get before sealing re-reads the topic
            (keys shredded by another process are noticed within this time).
        timeout: seconds to wait for Kafka to acknowledge key records.
    """

    def __init__(
        self,
        settings: Settings,
        keyring: Keyring | None = None,
        *,
        refresh_seconds: float = 5.0,
        timeout: float = 15.0,
    ) -> None:
        self.keyring = keyring or Keyring(settings)
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self._producer = AckedProducer(settings, timeout)
        self._lock = threading.RLock()
        self._missing: set[str] = set()
        # Keys whose values did not open for another reason than an erasure (logged once per
        # key, counted per value): the values read as None, as an erased person's would.
        self._broken: set[tuple[str, str]] = set()
        self.unknown_keys = 0
        self.unopenable = 0

    # -- writing -----------------------------------------------------------------------

    def _publish(self, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        try:
            self._producer.send([(PII_KEYS.name, key, value) for key, value in records])
        except NotAcknowledged as exc:
            raise KeyringError(str(exc)) from exc
        for key, value in records:  # acknowledged: our own view need not wait for a refresh
            self.keyring.state.apply(key, value)

    def seal(self, events: Sequence[Event]) -> list[Event]:
        """The events with their PII sealed, creating (and publishing) keys as needed.

        Also records which devices belong to which lead (an event naming both, or an
        alias), so erasure of the lead finds the devices' keys.

        Raises:
            KeyringError: Kafka did not acknowledge a new key (nothing may be produced).
        """
        if not any(_needs_keyring(e) for e in events):
            return list(events)  # nothing personal: no key topic round trip
        with self._lock:
            self.keyring.refresh_if_older(self.refresh_seconds)
            state = self.keyring.state
            new_records: list[tuple[bytes, bytes | None]] = []
            out: list[Event] = []
            for event in events:
                if event.kind is Kind.CAMPAIGN_COST:
                    out.append(event)
                    continue
                subject = subject_of(event)
                ws = event.workspace_id
                if has_pii(event):
                    current = state.current(ws, subject)
                    if current is None:
                        kid, key = new_kid(), new_key()
                        record = (key_record_key(ws, subject, kid), key)
                        new_records.append(record)
                        state.apply(*record)
                        current = (kid, key)
                    event = seal_event(event, _sealer(*current, subject))
                for device in _devices(event):
                    lead = event.lead_id
                    if lead and device != lead and device not in state.links.get((ws, lead), ()):
                        record = (link_record_key(ws, lead, device), b"1")
                        new_records.append(record)
                        state.apply(*record)
                out.append(event)
            try:
                self._publish(new_records)
            except KeyringError:
                for key_bytes, _ in new_records:  # not durable: forget them again
                    state.apply(key_bytes, None)
                raise
            return out

    def shred(self, workspace_id: str, lead_id: str, devices: Sequence[str] = ()) -> Shredded:
        """Delete every key of the lead and of its devices (tombstones, acknowledged).

        Idempotent: shredding again deletes nothing more and reports zero keys.

        Raises:
            KeyringError: the tombstones were not acknowledged.
        """
        with self._lock:
            plan, tombstones = self._plan(workspace_id, lead_id, devices)
            self._publish(tombstones)
            log.info("pii.shredded", workspace=workspace_id, subjects=len(plan.subjects),
                     keys=plan.keys)  # fmt: skip
            return plan

    def preview_shred(
        self, workspace_id: str, lead_id: str, devices: Sequence[str] = ()
    ) -> Shredded:
        """What :meth:`shred` would delete now, deleting nothing (an erasure's dry run).

        Raises:
            KeyringError: the key topic cannot be read.
        """
        with self._lock:
            return self._plan(workspace_id, lead_id, devices)[0]

    def _plan(
        self, workspace_id: str, lead_id: str, devices: Sequence[str]
    ) -> tuple[Shredded, list[tuple[bytes, None]]]:
        self.keyring.refresh()
        subjects, tombstones = shred_records(self.keyring.state, workspace_id, lead_id, devices)
        keys = sum(1 for k, _ in tombstones if k.startswith(b'["key"'))
        plan = Shredded(workspace_id, lead_id, tuple(subjects), keys, len(tombstones) - keys)
        return plan, tombstones

    # -- reading -----------------------------------------------------------------------

    def open(self, event: Event) -> Event:
        """The event with its sealed PII decrypted; shredded or unknown keys read as None.

        An erasure request makes the view re-read the key topic at once, so events the
        processor sees after it no longer open with the shredded keys.
        """
        if event.kind is Kind.ERASURE_REQUESTED and self.keyring.refreshed_at is not None:
            self.keyring.refresh()
        return open_event(event, self._open_value)

    def open_contact(self, workspace_id: str, contact: Contact) -> Contact:
        """A hand-off's contact with its sealed fields opened; erased ones read as None.

        Plaintext contact fields (PII encryption off) pass through unchanged.
        """
        return open_contact(contact, workspace_id, self._open_value)

    def open_handoff(self, handoff: BecameSQL) -> BecameSQL:
        """The hand-off with its contact opened (see :meth:`open_contact`).

        What a downstream consumer built on leadflow calls on every record of
        ``leadflow.lead-became-sql``; after ``leadflow erase`` the contact's email,
        names and phone read as None in every past hand-off of that person.
        """
        contact = self.open_contact(handoff.workspace_id, handoff.contact)
        return handoff if contact is handoff.contact else evolve(handoff, contact=contact)

    def _open_value(
        self, workspace_id: str, subject: str | None, field: str, envelope: Envelope
    ) -> str | None:
        kid = envelope.kid
        self.keyring.refresh_if_older(self.refresh_seconds)  # notice other processes' shreds
        state = self.keyring.state
        key = state.key(kid)
        if key is None and kid not in state.shredded and kid not in self._missing:
            # A key younger than our view: the collector published it before the event.
            self.keyring.refresh()
            key = state.key(kid)
            if key is None:
                self._missing.add(kid)
        if key is None:
            if kid not in state.shredded:
                # No key and no tombstone on the topic read to its end (a key is published
                # before its event): an erasure whose tombstone compaction has removed
                # (older than the topic's delete.retention.ms), or a lost key topic.
                self.unknown_keys += 1
                self._say_once(kid, "pii.key_unknown", workspace_id, field)
            return None
        owner = state.owner(kid)
        if owner is None or owner[0] != workspace_id:
            self.unopenable += 1
            self._say_once(kid, "pii.foreign_workspace", workspace_id, field)
            return None
        if subject is not None and owner[1] != subject:
            # Another person's key: a ciphertext copied into this event (the associated
            # data of v2 envelopes would refuse it too; v1 ones rely on this check).
            log.warning("pii.foreign_ciphertext", workspace=workspace_id, field=field)
            return None
        plain = decrypt(key, workspace_id, owner[1], field, envelope)
        if plain is None:  # a damaged ciphertext, or one bound to another field or subject
            self.unopenable += 1
            self._say_once(kid, "pii.unopenable", workspace_id, field)
        return plain

    def _say_once(self, kid: str, event: str, workspace_id: str, field: str) -> None:
        """Log a value that did not open, once per key and cause (it is counted per value)."""
        if (kid, event) not in self._broken:
            self._broken.add((kid, event))
            log.warning(
                event,
                kid=kid,
                workspace=workspace_id,
                field=field,
                result="the value reads as None (as an erased one)",
                see='docs/privacy.md, "When a value does not open"',
            )

    def counts(self) -> dict[str, int]:
        """Sealed values that read as None for another reason than an erasure."""
        return {"pii_unknown_keys": self.unknown_keys, "pii_unopenable": self.unopenable}

    def close(self) -> None:
        """Flush and release the Kafka clients."""
        self._producer.close()
        self.keyring.close()


def _needs_keyring(event: Event) -> bool:
    if event.kind is Kind.CAMPAIGN_COST:
        return False
    return has_pii(event) or bool(event.lead_id and _devices(event))


def _sealer(kid: str, key: bytes, owner: str) -> Sealer:
    def seal(workspace_id: str, subject: str, field: str, plaintext: str) -> str:
        if subject != owner:  # the key was picked for this subject: anything else is a bug
            raise KeyringError(f"key {kid} belongs to another subject")
        return encrypt(key, kid, workspace_id, subject, field, plaintext)

    return seal


def _devices(event: Event) -> list[str]:
    """Devices this event says belong to its lead (its own, and an alias's previous id)."""
    devices = [event.anonymous_id] if event.anonymous_id else []
    if event.kind is Kind.ALIAS:
        previous = event.payload.get("previous_id")
        if isinstance(previous, str) and previous:
            devices.append(previous)
    return devices
