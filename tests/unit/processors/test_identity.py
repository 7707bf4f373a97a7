import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.codec import decode, encode
from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import (
    EMAIL_LEAD_FIELD,
    MAX_BUFFERED,
    MAX_DEVICE_LEADS,
    IdentityState,
    decode_identity_state,
    derive_lead_id,
    encode_identity_state,
    identity_link,
    identity_route,
    identity_step,
    is_blocked,
    is_soft,
)
from leadflow.processors.pii import seal_event

from ._factory import HOUR, T0, WS, ev


def run(events: list[Event], state: IdentityState | None = None):
    out: list[Event] = []
    for e in events:
        state, emitted = identity_step(state, e)
        out.extend(emitted)
    return state, out


def test_touches_are_buffered_then_replayed_with_the_lead_id() -> None:
    visits = [ev(f"v{i}", Kind.VISIT, i, anon="a1", path="/pricing") for i in range(3)]
    state, out = run(visits)
    assert out == []
    assert state is not None
    assert len(state.buffer) == 3
    form = ev("f1", Kind.FORM_SUBMITTED, 4, anon="a1", email=" Ada@Acme.io ")
    state, out = run([form], state)
    lead = derive_lead_id(WS, "ada@acme.io")
    assert [e.event_id for e in out] == ["v0", "v1", "v2", "f1"]
    assert {e.lead_id for e in out} == {lead}
    assert state.lead_id == lead
    assert state.buffer == ()
    later = ev("v9", Kind.VISIT, 9, anon="a1")
    _, out = run([later], state)
    assert [(e.event_id, e.lead_id) for e in out] == [("v9", lead)]


def test_replay_is_in_event_time_order_even_if_buffered_out_of_order() -> None:
    events = [
        ev("late", Kind.VISIT, 5, anon="a"),
        ev("early", Kind.VISIT, 1, anon="a"),
        ev("id", Kind.IDENTIFY, 6, anon="a", lead="L"),
    ]
    _, out = run(events)
    assert [e.event_id for e in out] == ["early", "late", "id"]


def test_buffer_is_bounded_and_keeps_the_first_touch() -> None:
    events = [ev(f"v{i:03d}", Kind.VISIT, i, anon="a") for i in range(MAX_BUFFERED + 20)]
    state, _ = run(events)
    assert state is not None
    assert len(state.buffer) == MAX_BUFFERED
    assert state.dropped == 20
    ids = [e.event_id for e in state.buffer]
    assert ids[0] == "v000"
    assert ids[-1] == f"v{MAX_BUFFERED + 19:03d}"


def test_lead_only_events_pass_through_without_state() -> None:
    e = ev("x", Kind.EMAIL_OPENED, 1, lead="L")
    assert identity_step(None, e) == (None, [e])
    with pytest.raises(InvalidEvent):
        identity_step(None, ev("y", Kind.VISIT, 1))


def test_alias_of_this_device_links_it_and_other_aliases_reach_the_lead() -> None:
    state, _ = run([ev("v", Kind.VISIT, 1, anon="a")])
    state, out = run([ev("al", Kind.ALIAS, 2, anon="a", lead="L", previous_id="a")], state)
    assert [(e.event_id, e.lead_id) for e in out] == [("v", "L"), ("al", "L")]
    # alias of an older lead id: forwarded so the lead processor records the merge
    _, out = run([ev("al2", Kind.ALIAS, 3, anon="a", lead="L", previous_id="old-lead")], state)
    assert out[0].payload["previous_id"] == "old-lead"
    assert out[0].lead_id == "L"


def test_without_tracking_consent_nothing_is_stitched_and_ip_is_stripped() -> None:
    state, _ = run([ev("v1", Kind.VISIT, 1, anon="a", ip="10.0.0.1")])
    state, out = run([ev("c", Kind.CONSENT_CHANGED, 2, anon="a", tracking=False)], state)
    assert out == []
    assert state is not None
    assert state.buffer == ()
    assert not state.tracking
    state, out = run([ev("v2", Kind.VISIT, 3, anon="a", ip="10.0.0.1")], state)
    assert out == []
    assert state.buffer == ()
    form = ev("f", Kind.FORM_SUBMITTED, 4, anon="a", ip="10.0.0.1", email="b@x.io")
    state, out = run([form], state)
    assert [e.event_id for e in out] == ["f"]  # declared data still reaches the lead
    assert out[0].context.ip is None
    assert out[0].context.user_agent is None
    assert state.lead_id is None  # but the device is not linked
    _, out = run([ev("v3", Kind.VISIT, 5, anon="a")], state)
    assert out == []


def test_consent_withdrawn_after_linking_unlinks_the_device() -> None:
    state, _ = run([ev("i", Kind.IDENTIFY, 1, anon="a", lead="L")])
    state, out = run([ev("c", Kind.CONSENT_CHANGED, 2, anon="a", tracking=False)], state)
    assert [e.lead_id for e in out] == ["L"]  # the lead hears about the consent change
    _, out = run([ev("v", Kind.VISIT, 3, anon="a", ip="1.2.3.4")], state)
    assert out == []


def test_a_write_key_withdrawal_pauses_stitching_without_deleting() -> None:
    visits = [ev(f"v{i}", Kind.VISIT, i, anon="a") for i in range(2)]
    state, _ = run(visits)
    pause = ev("c", Kind.CONSENT_CHANGED, 3, anon="a", tracking=False, forget=False)
    state, out = run([pause], state)
    assert out == []
    assert state is not None
    assert [e.event_id for e in state.buffer] == ["v0", "v1"]  # kept, not emitted
    state, out = run([ev("v9", Kind.VISIT, 4, anon="a")], state)
    assert out == []  # paused: nothing new is buffered or stitched
    assert [e.event_id for e in state.buffer] == ["v0", "v1"]
    resume = ev("c2", Kind.CONSENT_CHANGED, 5, anon="a", tracking=True, forget=False)
    state, _ = run([resume], state)
    _, out = run([ev("i", Kind.IDENTIFY, 6, anon="a", lead="L")], state)
    assert [(e.event_id, e.lead_id) for e in out] == [("v0", "L"), ("v1", "L"), ("i", "L")]


def test_a_paused_device_keeps_its_link() -> None:
    state, _ = run([ev("i", Kind.IDENTIFY, 1, anon="a", lead="L")])
    pause = ev("c", Kind.CONSENT_CHANGED, 2, anon="a", tracking=False, forget=False)
    state, out = run([pause], state)
    assert [e.lead_id for e in out] == ["L"]
    assert state is not None
    assert state.lead_id == "L"
    state, out = run([ev("v", Kind.VISIT, 3, anon="a")], state)
    assert out == []  # not stitched while paused
    resume = ev("c2", Kind.CONSENT_CHANGED, 4, anon="a", tracking=True, forget=False)
    state, _ = run([resume], state)
    _, out = run([ev("v2", Kind.VISIT, 5, anon="a")], state)
    assert [e.lead_id for e in out] == ["L"]


def test_identity_link_record_only_when_the_link_changes() -> None:
    before = IdentityState("a", WS)
    after, _ = identity_step(before, ev("i", Kind.IDENTIFY, 1, anon="a", lead="L"))
    link = identity_link(before, after, ev("i", Kind.IDENTIFY, 1, anon="a", lead="L"))
    assert link is not None
    assert (link.anonymous_id, link.lead_id) == ("a", "L")
    assert identity_link(after, after, ev("v", Kind.VISIT, 2, anon="a")) is None


def test_state_round_trips_through_the_codec() -> None:
    state, _ = run(
        [ev(f"v{i}", Kind.VISIT, i, anon="a", path="/p", ip="1.1.1.1") for i in range(5)]
    )
    assert decode(IdentityState, encode(state)) == state


@given(
    n=st.integers(0, 30),
    dup=st.lists(st.integers(0, 29), max_size=5),
    trigger=st.sampled_from(["identify", "form", "lead_id"]),
)
def test_every_touch_is_emitted_once_with_the_lead_after_identification(n, dup, trigger) -> None:
    visits = [ev(f"v{i}", Kind.VISIT, i, anon="a") for i in range(n)]
    if trigger == "identify":
        ident = ev("id", Kind.IDENTIFY, n + 1, anon="a", lead="L")
    elif trigger == "form":
        ident = ev("id", Kind.FORM_SUBMITTED, n + 1, anon="a", email="p@q.io")
    else:
        ident = ev("id", Kind.EMAIL_CLICKED, n + 1, anon="a", lead="L")
    _, out = run([*visits, ident])
    lead = "L" if trigger != "form" else derive_lead_id(WS, "p@q.io")
    assert [e.event_id for e in out] == [*(f"v{i}" for i in range(n)), "id"]
    assert all(e.lead_id == lead for e in out)
    assert [e.occurred_at for e in out[:-1]] == sorted(e.occurred_at for e in visits)


@given(st.emails(), st.sampled_from(["", " ", "  "]), st.booleans())
def test_two_devices_submitting_the_same_email_merge_into_one_lead(email, pad, upper) -> None:
    typed = (email.upper() if upper else email) + pad
    _, out_a = run(
        [
            ev("va", Kind.VISIT, 1, anon="dev-a"),
            ev("fa", Kind.FORM_SUBMITTED, 2, anon="dev-a", email=email),
        ]
    )
    _, out_b = run(
        [
            ev("vb", Kind.VISIT, 3, anon="dev-b"),
            ev("fb", Kind.FORM_SUBMITTED, 4, anon="dev-b", email=typed),
        ]
    )
    assert {e.lead_id for e in out_a} == {e.lead_id for e in out_b} == {derive_lead_id(WS, email)}


def test_identity_state_bytes_round_trip() -> None:
    state, _ = run([ev(f"v{i}", Kind.VISIT, i, anon="a", path="/pricing") for i in range(3)])
    data = encode_identity_state(state)
    assert decode_identity_state(data) == state
    assert len(data) < 1024


def test_campaign_costs_belong_to_no_person_and_pass_by() -> None:
    cost = Event(
        "c1",
        Kind.CAMPAIGN_COST,
        "ws",
        1,
        1,
        payload={
            "date": "2026-01-01",
            "channel": "paid_search",
            "campaign": "brand",
            "amount": 10.0,
        },
    )
    assert identity_step(None, cost) == (None, [])


# -- merges (issue 14) ------------------------------------------------------------------


def route(events: list[Event], state: IdentityState | None = None):
    merges = []
    for e in events:
        state, routed = identity_route(state, e)
        merges.extend(routed.merges)
    return state, merges


def test_form_then_identify_merges_the_email_lead_into_the_user() -> None:
    soft = derive_lead_id(WS, "ada@acme.io")
    state, merges = route([
        ev("v1", Kind.VISIT, 0, anon="a1"),
        ev("f1", Kind.FORM_SUBMITTED, 1, anon="a1", email="ada@acme.io"),
        ev("i1", Kind.IDENTIFY, 2, anon="a1", lead="U"),
    ])  # fmt: skip
    assert state is not None
    assert state.lead_id == "U"
    assert [(m.lead_id, m.absorbed_id, m.survivor_id, m.reason) for m in merges] == [
        (soft, soft, "U", "identify"),
        ("U", soft, "U", "identify"),
    ]
    assert len({m.merge_id for m in merges}) == 1
    # Asked once: the same identify again (an SDK retry) asks nothing.
    _, again = route([ev("i1", Kind.IDENTIFY, 2, anon="a1", lead="U")], state)
    assert again == []


def test_a_second_user_on_an_identified_device_is_not_merged() -> None:
    state, merges = route([
        ev("i1", Kind.IDENTIFY, 1, anon="a1", lead="U1"),
        ev("i2", Kind.IDENTIFY, 2, anon="a1", lead="U2"),
    ])  # fmt: skip
    assert merges == []
    assert state is not None
    assert state.lead_id == "U2"


def test_declared_emails_and_explicit_aliases_merge_into_the_user() -> None:
    _, merges = route([ev("i1", Kind.IDENTIFY, 1, lead="U", email="Ada@Acme.io")])
    assert {(m.absorbed_id, m.reason) for m in merges} == {
        (derive_lead_id(WS, "ada@acme.io"), "email")
    }
    # Server-side alias of an old user id: explicit, merged even though it is identified.
    _, merges = route([ev("al", Kind.ALIAS, 1, lead="U", previous_id="old-user")])
    assert {(m.absorbed_id, m.survivor_id, m.reason) for m in merges} == {
        ("old-user", "U", "alias")
    }


def _sealed(event: Event) -> Event:
    """The event as the collector stores it with PII encryption on (a stand-in cipher)."""
    return seal_event(event, lambda ws, subject, field, text: "enc:v2:00000001:" + text[::-1])


@pytest.mark.parametrize("kind", [Kind.IDENTIFY, Kind.FORM_SUBMITTED])
def test_a_sealed_email_declared_with_a_user_id_still_merges_its_lead(kind: Kind) -> None:
    """Issue 14: with PII encryption the email's lead used to stay apart from the user."""
    declared = ev("i1", kind, 1, anon="phone", lead="U", email="Ada@Acme.io")
    _, plain = route([declared])
    _, sealed = route([_sealed(declared)])
    assert sealed == plain
    assert {(m.absorbed_id, m.survivor_id, m.reason) for m in sealed} == {
        (derive_lead_id(WS, "ada@acme.io"), "U", "email")
    }


def test_a_sealed_record_from_before_email_lead_id_links_nothing() -> None:
    """Records sealed before Identify/FormSubmitted v3 carry no email lead: no merge, no error."""
    old = _sealed(ev("i1", Kind.IDENTIFY, 1, anon="phone", lead="U", email="ada@acme.io"))
    payload = {k: v for k, v in old.payload.items() if k != EMAIL_LEAD_FIELD}
    _, merges = route([dataclasses.replace(old, payload=payload)])
    assert merges == []


def test_a_form_without_user_id_on_an_identified_device_belongs_to_the_user() -> None:
    soft = derive_lead_id(WS, "ada@acme.io")
    state, merges = route([
        ev("i1", Kind.IDENTIFY, 1, anon="a1", lead="U"),
        ev("f1", Kind.FORM_SUBMITTED, 2, anon="a1", email="ada@acme.io"),
    ])  # fmt: skip
    assert {(m.absorbed_id, m.survivor_id, m.reason) for m in merges} == {(soft, "U", "form")}
    assert state is not None
    assert state.lead_id == "U"


def test_placeholder_ids_never_merge_or_link() -> None:
    assert is_blocked("undefined")
    assert is_blocked("00000000-0000")
    state, merges = route([
        ev("f1", Kind.FORM_SUBMITTED, 1, anon="a1", email="ada@acme.io"),
        ev("i1", Kind.IDENTIFY, 2, anon="a1", lead="null"),
        ev("al", Kind.ALIAS, 3, lead="U", previous_id="anonymous"),
    ])  # fmt: skip
    assert merges == []
    assert state is not None
    assert is_soft(state.lead_id or "")


def test_two_email_leads_on_one_anonymous_device_do_not_merge() -> None:
    state, merges = route([
        ev("f1", Kind.FORM_SUBMITTED, 1, anon="a1", email="ada@acme.io"),
        ev("f2", Kind.FORM_SUBMITTED, 2, anon="a1", email="bob@acme.io"),
    ])  # fmt: skip
    assert merges == []
    assert state is not None
    assert state.lead_id == derive_lead_id(WS, "bob@acme.io")


def test_a_device_past_the_cap_is_shared() -> None:
    events = [
        ev(f"i{i}", Kind.IDENTIFY, i, anon="kiosk", lead=f"U{i}", email=f"p{i}@acme.io")
        for i in range(MAX_DEVICE_LEADS + 1)
    ]
    state, merges = route(events)
    assert state is not None
    assert state.shared
    assert len({m.merge_id for m in merges}) == MAX_DEVICE_LEADS
    _, routed = identity_route(state, ev("v", Kind.VISIT, 99, anon="kiosk"))
    assert routed.events == []  # a shared device's anonymous events are nobody's
    assert state.dropped == 0


def test_a_late_identify_resends_the_in_flight_records_to_the_survivor() -> None:
    """The form's records that sort after the identify's merge go to the user as well.

    D = 2 h. A visit at 0.5 h (received at 1 h, buffered), then one request at R' = 4.5 h
    with a visit at 3 h and a form at 4 h; the identify that happened at 2.5 h arrives at
    R' = 5 h, so its merge sorts at 3 h: after the first visit (replayed at R' 4.5 h, so at
    2.5 h) but before the other two, which the email lead would get after it merged away.
    """
    d = 2 * HOUR
    soft = derive_lead_id(WS, "ada@acme.io")
    sent = [
        (ev("v0", Kind.VISIT, 0.5, anon="a1"), 1),
        (ev("v1", Kind.VISIT, 3, anon="a1"), 4.5),
        (ev("f1", Kind.FORM_SUBMITTED, 4, anon="a1", email="ada@acme.io"), 4.5),
    ]
    state = None
    for e, r in sent:
        state, _ = identity_route(state, e, received=T0 + int(r * HOUR), lateness_ms=d)
    assert state is not None
    assert state.lead_id == soft
    assert [s.event.event_id for s in state.recent] == ["v0", "v1", "f1"]
    ident = ev("i1", Kind.IDENTIFY, 2.5, anon="a1", lead="U")
    state, routed = identity_route(state, ident, received=T0 + 5 * HOUR, lateness_ms=d)
    assert state is not None
    assert state.lead_id == "U"
    assert state.recent == ()
    assert [(m.lead_id, m.resent) for m in routed.merges] == [
        (soft, ("v1", "f1")),
        ("U", ("v1", "f1")),
    ]
    assert [(e.event_id, e.lead_id) for e in routed.events] == [
        ("i1", "U"), ("v1", "U"), ("f1", "U")
    ]  # fmt: skip
    # A record that sorts before R' - D of a later request is forgotten.
    later = ev("v2", Kind.VISIT, 9, anon="a2")
    kept, _ = identity_route(None, ev("f2", Kind.FORM_SUBMITTED, 1, anon="a2", email="x@y.io"),
                             received=T0 + HOUR, lateness_ms=d)  # fmt: skip
    kept, _ = identity_route(kept, later, received=T0 + 9 * HOUR, lateness_ms=d)
    assert kept is not None
    assert [s.event.event_id for s in kept.recent] == ["v2"]
    # Without R' (callers that do not order) nothing is remembered or re-sent.
    plain, _ = identity_route(None, sent[2][0])
    assert plain is not None
    assert plain.recent == ()


def test_an_identify_in_order_resends_nothing() -> None:
    state = None
    for e in (
        ev("v1", Kind.VISIT, 1, anon="a1"),
        ev("f1", Kind.FORM_SUBMITTED, 2, anon="a1", email="ada@acme.io"),
        ev("i1", Kind.IDENTIFY, 3, anon="a1", lead="U"),
    ):
        state, routed = identity_route(
            state, e, received=e.occurred_at + 1000, lateness_ms=2 * HOUR
        )
    assert [m.resent for m in routed.merges] == [(), ()]
    assert [e.event_id for e in routed.events] == ["i1"]
