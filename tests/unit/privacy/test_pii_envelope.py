"""The pure PII layer: field list, envelope, seal/open/blank, consent rule (no Kafka)."""

from __future__ import annotations

import dataclasses
import doctest
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors import pii
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import EMAIL_LEAD_FIELD, derive_lead_id, identity_step
from leadflow.processors.pii import (
    PII_CONTEXT_FIELDS,
    PII_PAYLOAD_FIELDS,
    Envelope,
    blank_event,
    open_event,
    parse_envelope,
    seal_event,
    tracking_consent,
)
from leadflow.sinks.projection import event_rows

text = st.text(min_size=1, max_size=40)


def reversing(ws: str, subject: str, field: str, plain: str) -> str:
    """A toy cipher that is obviously not the plaintext (the real one is in streams.pii)."""
    return str(Envelope("0123abcd", plain[::-1].encode().hex() or "00"))


def unreversing(ws: str, subject: str | None, field: str, env: Envelope) -> str | None:
    return bytes.fromhex(env.blob).decode()[::-1]


def person(email: str, name: str, ip: str, lead: str | None = None) -> Event:
    return Event(
        "e1",
        Kind.FORM_SUBMITTED,
        "ws",
        1,
        1,
        anonymous_id="a1",
        lead_id=lead,
        context=Context(ip=ip, user_agent="UA " + name, path="/p"),
        payload={
            "email": email,
            "first_name": name,
            "company": "Acme",
            "answers": {},
            # What the form sent beyond its fields (free-form, so sealed like the email).
            "extra_json": json.dumps({"properties": {"linkedin": f"in/{name}"}}),
        },
    )


def test_doctests() -> None:
    assert doctest.testmod(pii, optionflags=doctest.ELLIPSIS).failed == 0


@given(text, text, text)
def test_seal_then_open_is_the_identity_and_sealed_holds_no_plaintext(
    email: str, name: str, ip: str
) -> None:
    event = person(email, name, ip, lead="L")
    sealed = seal_event(event, reversing)
    for f in ("email", "first_name", "extra_json"):
        assert parse_envelope(sealed.payload[f]) is not None
    assert sealed.context.ip is not None
    assert sealed.context.ip.startswith("enc:v2:")
    assert sealed.payload["company"] == "Acme"
    assert sealed.context.path == "/p"
    # Sealing adds the email's lead id (no PII: the pseudonymous id a form gets) for identity.
    linked = {EMAIL_LEAD_FIELD: derive_lead_id("ws", email)} if "@" in email else {}
    assert open_event(sealed, unreversing) == dataclasses.replace(
        event, payload={**event.payload, **linked}
    )


@given(text, text)
def test_a_client_value_that_looks_sealed_is_sealed_as_plaintext(email: str, name: str) -> None:
    # Issue 19: only the collector seals. A sealed-looking value from a client (a copied
    # ciphertext, or a malformed one such as "enc:v9:x") is plaintext and is sealed again,
    # never stored as if the collector had sealed it, and never an error.
    once = seal_event(person(email, name, "1.2.3.4"), reversing)
    for injected in (once.payload["email"], "enc:v9:x", "enc:v1:0123abcd:AAAA"):
        client = dataclasses.replace(once, payload={**once.payload, "email": injected})
        twice = seal_event(client, reversing)
        assert twice.payload["email"] != injected
        assert open_event(twice, unreversing).payload["email"] == injected


@given(text, text, text)
def test_a_shredded_key_opens_to_none_and_equals_the_blanked_event(
    email: str, name: str, ip: str
) -> None:
    sealed = seal_event(person(email, name, ip, lead="L"), reversing)
    opened = open_event(sealed, lambda ws, subject, f, env: None)
    assert opened == blank_event(sealed)
    assert all(opened.payload.get(f) is None for f in PII_PAYLOAD_FIELDS)
    assert all(getattr(opened.context, f) is None for f in PII_CONTEXT_FIELDS)
    assert blank_event(opened) == opened  # erasing again changes nothing


def test_sealing_keeps_the_lead_id_identity_would_derive_from_the_email() -> None:
    plain = person("Ada@Example.com", "Ada", "1.2.3.4")
    sealed = seal_event(plain, reversing)
    assert sealed.lead_id == derive_lead_id("ws", "Ada@Example.com")
    # Identity now stitches the device to the same lead without seeing the email.
    _, out_plain = identity_step(None, plain)
    _, out_sealed = identity_step(None, sealed)
    assert [e.lead_id for e in out_sealed] == [e.lead_id for e in out_plain]


def test_erasure_request_without_user_id_names_its_lead_by_email() -> None:
    erase = Event("x", Kind.ERASURE_REQUESTED, "ws", 1, 1, anonymous_id="a9",
                  payload={"subject_email": "ada@example.com", "requested_by": "dpo"})  # fmt: skip
    sealed = seal_event(erase, reversing)
    assert sealed.lead_id == derive_lead_id("ws", "ada@example.com")
    assert sealed.payload["requested_by"] == "dpo"
    assert "ada" not in str(sealed)


@pytest.mark.parametrize(
    "bad", ["enc:", "enc:v1:", "enc:v1:zz:abc", "enc:v3:00ff00ff:abc", "enc:v2:00ff00ff:abc\n"]
)
def test_malformed_envelopes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_envelope(bad)
    event = dataclasses.replace(person("a@b.c", "A", "1.1.1.1"), payload={"email": bad})
    with pytest.raises(InvalidEvent):
        open_event(event, unreversing)


@given(st.booleans() | st.none(), st.booleans())
def test_consent_stated_on_the_call_wins_over_the_default(
    stated: bool | None, default: bool
) -> None:
    visit = Event("v", Kind.VISIT, "ws", 1, 1, "a")
    assert tracking_consent(stated, visit, default) is (default if stated is None else stated)
    change = Event("c", Kind.CONSENT_CHANGED, "ws", 1, 1, "a", payload={"tracking": not default})
    assert tracking_consent(stated, change, default) is (not default)


def test_the_kept_extra_fields_never_reach_clickhouse() -> None:
    # ClickHouse holds no sealed value (erasure must not need to rewrite it): extra_json is
    # left out of payload_json like the email.
    sealed = seal_event(person("a@b.example", "Ada", "1.2.3.4", lead="L"), reversing)
    (row,) = event_rows(sealed).by_table["events"]
    assert json.loads(row[-1]) == {"answers": {}, "company": "Acme"}
