"""The lead step on sealed PII: same decisions as on plaintext, no plaintext in its state.

The worker hands ``lead_step`` the event with its PII still sealed plus the facts it
derived from the opened values (``keep_sealed``); these tests fold the same journey both
ways and compare everything but the sealed strings.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.processors.derived import BecameSQL, Contact, Stage
from leadflow.processors.events import Event, Kind
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState, decode_lead_state, encode_lead_state
from leadflow.processors.pii import (
    Envelope,
    PiiFacts,
    Sealer,
    keep_sealed,
    open_contact,
    open_event,
    pii_facts,
    seal_event,
)
from leadflow.processors.policy_load import load_default_policy
from leadflow.sinks.projection import rows_for_all
from tests.unit.processors._factory import ICP_FORM, ev

P = load_default_policy()
LIVE, DEAD = "0123abcd", "dead0000"


def sealer(kid: str) -> Sealer:
    def seal(ws: str, subject: str, field: str, plain: str) -> str:
        # A toy cipher (base64 is not encryption; the real AES-GCM is in streams.pii): the
        # kid decides whether it still opens, as a shredded key would.
        blob = base64.urlsafe_b64encode(f"{ws}|{subject}|{field}|{plain}".encode()).decode()
        return str(Envelope(kid, blob))

    return seal


def opener(ws: str, subject: str | None, field: str, env: Envelope) -> str | None:
    if env.kid == DEAD:
        return None
    text = base64.urlsafe_b64decode(env.blob).decode()
    sealed_ws, sealed_subject, sealed_field, plain = text.split("|", 3)
    if subject is not None and subject != sealed_subject:
        return None
    return plain if (sealed_ws, sealed_field) == (ws, field) else None


def journey(email: str) -> list[Event]:
    form = {**ICP_FORM, "email": email, "phone": "+1 555 0100"}
    return [
        ev("v1", Kind.VISIT, 0, lead="L", path="/pricing", channel="paid_search"),
        ev("f1", Kind.FORM_SUBMITTED, 6, lead="L", ip="203.0.113.7", **form),
        ev("o1", Kind.EMAIL_OPENED, 10, lead="L"),
        ev("k1", Kind.EMAIL_CLICKED, 11, lead="L"),
        ev("w1", Kind.WEBINAR_ATTENDED, 30, lead="L", minutes_attended=40),
        ev("d1", Kind.DEMO_REQUESTED, 40, lead="L"),
    ]


def fold_plain(events: list[Event]) -> tuple[LeadState, list[Any]]:
    state: LeadState | None = None
    out: list[Any] = []
    for e in events:
        state, derived = lead_step(state, e, P, None)
        out.extend(derived)
    assert state is not None
    return state, out


def fold_sealed(events: list[Event], kid: str = LIVE) -> tuple[LeadState, list[Any]]:
    """What the worker does: seal at the collector, keep sealed + facts at the lead agent."""
    state: LeadState | None = None
    out: list[Any] = []
    for e in events:
        sealed = seal_event(e, sealer(kid))
        kept, facts = keep_sealed(sealed, open_event(sealed, opener))
        state, derived = lead_step(state, kept, P, None, facts=facts)
        out.extend(derived)
    assert state is not None
    return state, out


def opened(obj: Any) -> Any:
    if isinstance(obj, BecameSQL):
        return dataclasses.replace(obj, contact=open_contact(obj.contact, obj.workspace_id, opener))
    return obj


def test_keep_sealed_blanks_only_values_that_no_longer_open() -> None:
    e = ev("f", Kind.FORM_SUBMITTED, 1, anon="a1", ip="203.0.113.7", **ICP_FORM)
    sealed = seal_event(e, sealer(LIVE))
    kept, facts = keep_sealed(sealed, open_event(sealed, opener))
    assert kept == sealed  # nothing shredded: the sealed values go on untouched
    assert facts == PiiFacts(email_domain="acme.io")
    assert "ada" not in repr(kept).lower()

    dead = seal_event(e, sealer(DEAD))
    kept, facts = keep_sealed(dead, open_event(dead, opener))
    assert (kept.payload["email"], kept.payload["first_name"], kept.context.ip) == (None,) * 3
    assert (kept.payload["company"], kept.context.path) == ("Acme", None)
    assert facts == PiiFacts(email_domain=None)


def test_keep_sealed_with_plaintext_is_the_event_itself() -> None:
    e = ev("f", Kind.IDENTIFY, 1, lead="L", email="Ada@Gmail.com")
    kept, facts = keep_sealed(e, open_event(e, opener))
    assert kept is e
    assert facts.email_domain == "gmail.com"
    assert pii_facts(ev("v", Kind.VISIT, 1, anon="a")).email_domain is None


@settings(max_examples=25, deadline=None)
@given(
    domain=st.sampled_from(
        ["acme.io", "gmail.com", "snowflake.com", "cs.mit.edu", "uni.ac.uk", "EXAMPLE.org"]
    ),
    local=st.from_regex(r"[a-z][a-z0-9.]{0,12}", fullmatch=True),
)
def test_sealed_fold_decides_exactly_like_the_plaintext_fold(domain: str, local: str) -> None:
    email = f"{local}@{domain}"
    plain_state, plain_out = fold_plain(journey(email))
    sealed_state, sealed_out = fold_sealed(journey(email))

    # Fit rules on the email domain (free mail, competitor, student) fire the same way.
    assert sealed_state.fit == plain_state.fit
    assert sealed_state.fit_hits == plain_state.fit_hits
    assert sealed_state.segments == plain_state.segments
    assert [opened(o) for o in sealed_out] == plain_out
    contact = sealed_state.contact
    assert open_contact(contact, "ws-1", opener) == plain_state.contact
    assert dataclasses.replace(sealed_state, contact=plain_state.contact) == plain_state

    # No plaintext PII in what the worker stores (the changelog) or hands off.
    stored = encode_lead_state(sealed_state)
    handoffs = [o for o in sealed_out if isinstance(o, BecameSQL)]
    for secret in (email, "Ada", "Lovelace", "+1 555 0100"):
        assert secret.encode() not in stored
        assert all(secret not in repr(h.contact) for h in handoffs)
    assert decode_lead_state(stored) == sealed_state
    assert str(contact.email).startswith("enc:v2:")


def test_sealed_journey_reaches_sql_with_a_sealed_contact() -> None:
    state, out = fold_sealed(journey("ada@acme.io"))
    (handoff,) = [o for o in out if isinstance(o, BecameSQL)]
    assert state.email_domain == "acme.io"
    assert str(handoff.contact.email).startswith("enc:v2:")
    assert handoff.contact.company == "Acme"  # firmographics stay plaintext
    contact = open_contact(handoff.contact, handoff.workspace_id, opener)
    assert (contact.email, contact.first_name, contact.phone) == (
        "ada@acme.io",
        "Ada",
        "+1 555 0100",
    )


def test_a_shredded_email_neither_identifies_nor_overwrites() -> None:
    """A late form sealed with an erased key reads as absent, as opening made it before."""
    first = journey("ada@gmail.com")[:2]
    state, _ = fold_sealed(first)
    later = ev("f2", Kind.IDENTIFY, 50, lead="L", email="ada@snowflake.com")
    sealed = seal_event(later, sealer(DEAD))
    kept, facts = keep_sealed(sealed, open_event(sealed, opener))
    after, _ = lead_step(state, kept, P, None, facts=facts)
    assert after.contact.email == state.contact.email
    assert after.email_domain == "gmail.com"

    # An identify whose email was erased leaves no contact behind.
    s2, _ = fold_sealed([ev("v", Kind.VISIT, 0, lead="L2", path="/pricing")])
    dead = ev("i", Kind.IDENTIFY, 1, lead="L2", email="x@acme.io", first_name="X")
    kept, facts = keep_sealed(*_both(dead, DEAD))
    s2, _ = lead_step(s2, kept, P, None, facts=facts)
    assert s2.contact == Contact()
    assert s2.stage == Stage.LEAD  # an identify is a known kind: the lead is still a lead


def test_erasure_clears_the_domain_with_the_contact() -> None:
    state, _ = fold_sealed(journey("ada@gmail.com")[:2])
    assert state.email_domain == "gmail.com"
    erase = ev("x", Kind.ERASURE_REQUESTED, 60, lead="L", requested_by="dpo")
    after, _ = lead_step(state, erase, P, None, facts=PiiFacts())
    assert (after.contact.email, after.email_domain) == (None, None)
    assert "free_mail_domain" not in [h.rule for h in after.fit_hits]


def _both(e: Event, kid: str) -> tuple[Event, Event]:
    sealed = seal_event(e, sealer(kid))
    return sealed, open_event(sealed, opener)


def test_no_envelope_reaches_a_clickhouse_row() -> None:
    """The projection keeps contact PII out of ClickHouse, sealed or not (docs/privacy.md)."""
    events = [seal_event(e, sealer(LIVE)) for e in journey("ada@acme.io")]
    _, out = fold_sealed(journey("ada@acme.io"))
    rows = rows_for_all([*events, *out])
    assert rows.by_table["handoffs"]  # the sealed hand-off was projected
    values = [v for table in rows.by_table.values() for row in table for v in row]
    assert not [v for v in values if "enc:v2:" in str(v)]
    assert "Acme" in values  # firmographics stay
