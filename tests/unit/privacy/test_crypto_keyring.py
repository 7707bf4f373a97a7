"""AES-GCM envelopes and the keyring's view of the key topic (no broker needed)."""

from __future__ import annotations

import doctest
import json

from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.pii import (
    Envelope,
    associated_data,
    open_event,
    parse_envelope,
    seal_event,
)
from leadflow.streams.pii import crypto, keyring
from leadflow.streams.pii.crypto import decrypt, encrypt, new_key, new_kid
from leadflow.streams.pii.keyring import (
    KeyringState,
    key_record_key,
    link_record_key,
    shred_records,
)

KEY = new_key()
KID = new_kid()


def test_doctests() -> None:
    for module in (crypto, keyring):
        assert doctest.testmod(module).failed == 0


@given(st.text(max_size=200), st.sampled_from(["email", "phone", "ip"]))
def test_roundtrip_and_no_plaintext_in_the_envelope(plain: str, field: str) -> None:
    sealed = encrypt(KEY, KID, "ws", "a1", field, plain)
    env = parse_envelope(sealed)
    assert env is not None
    assert env.kid == KID
    assert decrypt(KEY, "ws", "a1", field, env) == plain
    if len(plain) >= 4:
        assert plain not in sealed
        assert plain.encode() not in sealed.encode()


@given(st.text(min_size=1, max_size=100))
def test_without_the_key_nothing_opens(plain: str) -> None:
    env = parse_envelope(encrypt(KEY, KID, "ws", "a1", "email", plain))
    assert env is not None
    assert decrypt(None, "ws", "a1", "email", env) is None
    assert decrypt(new_key(), "ws", "a1", "email", env) is None  # any other key
    assert decrypt(KEY, "other-ws", "a1", "email", env) is None  # bound to its workspace
    assert decrypt(KEY, "ws", "a2", "email", env) is None  # to its person
    assert decrypt(KEY, "ws", "a1", "phone", env) is None  # and to its field


def sealed_event(state: KeyringState, email: str) -> Event:
    """What the vault does for one event: a key per subject, then seal."""
    kid, key = new_kid(), new_key()
    state.apply(key_record_key("ws", "a1", kid), key)
    state.apply(link_record_key("ws", "L", "a1"), b"1")
    event = Event("e", Kind.IDENTIFY, "ws", 1, 1, anonymous_id="a1", lead_id="L",
                  context=Context(ip="198.51.100.4"), payload={"email": email})  # fmt: skip
    return seal_event(event, lambda w, subject, f, t: encrypt(key, kid, w, subject, f, t))


def opener(state: KeyringState):  # type: ignore[no-untyped-def]
    def open_(w: str, subject: str | None, f: str, env: Envelope) -> str | None:
        owner = state.owner(env.kid)
        if owner is None or owner[0] != w or subject not in (None, owner[1]):
            return None
        return decrypt(state.key(env.kid), w, owner[1], f, env)

    return open_


@given(st.emails())
def test_after_shredding_no_plaintext_is_recoverable_and_erasure_is_idempotent(
    email: str,
) -> None:
    state = KeyringState()
    event = sealed_event(state, email)
    assert open_event(event, opener(state)).payload["email"] == email
    subjects, tombstones = shred_records(state, "ws", "L")
    assert subjects == ("L", "a1")
    assert len(tombstones) == 2  # the device's key and its link to the lead
    for record_key, value in tombstones:
        state.apply(record_key, value)
    opened = open_event(event, opener(state))
    assert opened.payload["email"] is None
    assert opened.context.ip is None
    assert email not in repr(event)
    assert shred_records(state, "ws", "L") == (("L",), [])
    # A late copy of the key record (e.g. replayed before compaction) does not revive it.
    kid = parse_envelope(event.payload["email"]).kid  # type: ignore[union-attr]
    state.apply(key_record_key("ws", "a1", kid), b"late" * 8)
    assert state.key(kid) is None


def test_keys_of_other_workspaces_and_leads_survive() -> None:
    state = KeyringState()
    for ws, subject, kid in [("ws", "L", "k1"), ("ws", "M", "k2"), ("other", "L", "k3")]:
        state.apply(key_record_key(ws, subject, kid), new_key())
    _, tombstones = shred_records(state, "ws", "L")
    for record_key, value in tombstones:
        state.apply(record_key, value)
    assert state.key("k1") is None
    assert state.key("k2") is not None
    assert state.key("k3") is not None


def test_unknown_records_are_ignored() -> None:
    state = KeyringState()
    state.apply(b"not json", b"x")
    state.apply(b'["key","ws"]', b"x")
    assert state.keys == {}


def test_a_ciphertext_copied_into_another_persons_event_does_not_open() -> None:
    # Issue 19 (LOW-MEDIUM): a ciphertext was bound to workspace, field and key only.
    # Now the associated data names the person too, and the opener checks the key's owner.
    state = KeyringState()
    victim = sealed_event(state, "victim@corp.example")
    injected = Event("x", Kind.IDENTIFY, "ws", 2, 2, anonymous_id="attacker-dev",
                     payload={"email": victim.payload["email"]})  # fmt: skip
    assert open_event(victim, opener(state)).payload["email"] == "victim@corp.example"
    assert open_event(injected, opener(state)).payload["email"] is None
    env = parse_envelope(victim.payload["email"])
    assert env is not None
    assert env.version == "v2"
    key = state.key(env.kid)
    assert decrypt(key, "ws", "a1", "email", env) == "victim@corp.example"
    assert decrypt(key, "ws", "attacker-dev", "email", env) is None


def test_v1_envelopes_written_before_the_binding_still_open() -> None:
    # Existing data: a v1 ciphertext (associated data without the subject) opens as before.
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    data = AESGCM(KEY).encrypt(nonce, b"ada@x.io", associated_data("v1", "ws", "", "email", KID))
    env = Envelope(KID, base64.urlsafe_b64encode(nonce + data).decode(), "v1")
    assert str(env).startswith("enc:v1:")
    assert parse_envelope(str(env)) == env
    assert decrypt(KEY, "ws", "a1", "email", env) == "ada@x.io"
    assert decrypt(KEY, "ws2", "a1", "email", env) is None


def test_erasing_a_person_in_one_workspace_leaves_the_same_ids_of_another_alone() -> None:
    # Issue 19: two workspaces with the same device and lead ids are two people; B's
    # erasure of its lead "crm-4711" (device "shared-dev-1") must not touch A's keys.
    state = KeyringState()
    for ws in ("A", "B"):
        state.apply(key_record_key(ws, "shared-dev-1", f"{ws.lower()}1aaaaaa"), new_key())
        state.apply(key_record_key(ws, "crm-4711", f"{ws.lower()}2aaaaaa"), new_key())
        state.apply(link_record_key(ws, "crm-4711", "shared-dev-1"), b"1")
    subjects, tombstones = shred_records(state, "B", "crm-4711")
    assert subjects == ("crm-4711", "shared-dev-1")
    assert all(json.loads(k)[1] == "B" for k, _ in tombstones)
    for record_key, value in tombstones:
        state.apply(record_key, value)
    assert state.key("a1aaaaaa") is not None
    assert state.key("a2aaaaaa") is not None
    assert state.key("b1aaaaaa") is None
    assert state.key("b2aaaaaa") is None
    assert state.subjects_of("A", "crm-4711") == ["crm-4711", "shared-dev-1"]
