"""Issue 14: one person, one lead, one history, whatever order the partitions answer in.

The worker is simulated in-process (leadflow.demo.inprocess): inbound partitions, the
identity stage, the release buffers of events.by-lead, holds for merges, direct records
between lead partitions. A *schedule* drives every choice the broker and the machine make
(which partition answers next, when a transfer arrives); outputs must not depend on it.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.demo.inprocess import InProcess, Result, partition_of
from leadflow.processors.derived import (
    BecameMQL,
    BecameSQL,
    LeadMerged,
    LeadScored,
    OwnerAssigned,
    Stage,
    StageChanged,
)
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import MAX_DEVICE_LEADS, derive_lead_id
from leadflow.processors.pii import seal_event
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.scoring import DAY_MS
from leadflow.schemas.codec import SingleObjectCodec

from . import journey

POLICY = load_default_policy()
CODEC = SingleObjectCodec()


def encoded(result: Result) -> dict[str, list[bytes]]:
    """Every lead's derived events as wire bytes, in the order the lead emitted them."""
    return {lead: [CODEC.encode(d) for d in ds] for lead, ds in result.by_lead().items()}


def schedules(events: list[Event], partitions: int) -> list[list[int]]:
    """One schedule per order in which the inbound partitions hand over their records.

    Each schedule drains one partition after another; the direct records (merge
    transfers) are delivered as late as possible (the lowest pick is always inbound).
    """
    used = sorted({partition_of(e.person_key, partitions) for e in events})
    out = []
    for order in itertools.permutations(range(len(used))):
        picks: list[int] = []
        remaining = list(range(len(used)))
        for chosen in order:
            position = remaining.index(chosen)
            count = sum(1 for e in events if partition_of(e.person_key, partitions) == used[chosen])
            picks.extend([position] * count)
            remaining.remove(chosen)
        out.append(picks)
    return out


def test_the_journey_lands_on_several_partitions() -> None:
    events = journey.events()
    assert len({partition_of(e.person_key, 4) for e in events}) == 2
    assert len({e.received_at for e in events}) == 1  # one request


@pytest.mark.parametrize("partitions", [1, 2, 4, 12])
def test_the_journey_in_every_arrival_order_is_one_lead_with_identical_derived_events(
    partitions: int,
) -> None:
    events = journey.events()
    runs = [InProcess(POLICY, partitions).run(events, s) for s in schedules(events, partitions)]
    # Transfers delivered at the first chance instead of the last.
    runs += [InProcess(POLICY, partitions).run(events, [len(events)] * 40)]
    first = encoded(runs[0])
    assert all(encoded(r) == first for r in runs[1:])
    result = runs[0]
    assert result.dead_letters == []
    assert result.live_leads() == {journey.USER}
    merges = {(m.merged_lead_id, m.reason, m.adopted_history) for m in result.merged()}
    soft = derive_lead_id(journey.WORKSPACE, journey.EMAIL)
    assert merges == {(soft, "identify", True)}
    # The old CRM id had no history: it redirects to the user, announced once it is used.
    assert result.redirects() == {soft: journey.USER, journey.OLD_CRM_ID: journey.USER}
    handoff = next(d for d in result.by_lead()[journey.USER] if isinstance(d, BecameSQL))
    # The form's firmographics and the pages count for the survivor ...
    assert handoff.contact.company_size == 1200
    assert handoff.first_touch is not None
    assert handoff.first_touch.event_id == "m01-page-pricing"
    # ... and the hand-off is the state as of its own time: the webinar came before it.
    assert handoff.last_touch is not None
    assert handoff.last_touch.event_id == "m07-webinar"
    assert handoff.last_touch.occurred_at <= handoff.became_sql_at
    assert [s.stage for s in handoff.stage_history] == [
        Stage.VISITOR,
        Stage.LEAD,
        Stage.MQL,
        Stage.SQL,
    ]


def test_the_journey_with_sealed_pii_is_one_lead_too() -> None:
    """With PII encryption the collector seals the email and names the form's lead itself."""

    def fake(ws: str, subject: str, field: str, text: str) -> str:
        return "enc:v2:00000001:" + text[::-1]

    events = [seal_event(e, fake) for e in journey.events()]
    form = next(e for e in events if e.event_id == "m03-form")
    assert form.lead_id == derive_lead_id(journey.WORKSPACE, journey.EMAIL)
    runs = [InProcess(POLICY, 4).run(events, s) for s in schedules(events, 4)]
    assert all(encoded(r) == encoded(runs[0]) for r in runs[1:])
    assert runs[0].live_leads() == {journey.USER}
    assert {m.merged_lead_id for m in runs[0].merged()} == {form.lead_id}


def test_the_journey_gives_the_same_lead_history_on_any_worker_count() -> None:
    events = journey.events()
    one = encoded(InProcess(POLICY, 1).run(events))
    for partitions in (2, 3, 7, 12):
        assert encoded(InProcess(POLICY, partitions).run(events)) == one


def test_the_journey_with_duplicates_gives_the_same_derived_events() -> None:
    events = journey.events()
    plain = encoded(InProcess(POLICY, 4).run(events))
    # The SDK retried the whole batch (a lost response): same message ids, a later request.
    retried = journey.events(received_at=events[0].received_at + 5_000)
    for schedule in schedules(events + retried, 4):
        assert encoded(InProcess(POLICY, 4).run(events + retried, schedule)) == plain
    # A producer retry duplicated single records inside the log.
    doubled = [e for event in events for e in (event, event)]
    assert encoded(InProcess(POLICY, 4).run(doubled, [1, 0] * 20)) == plain


def test_before_ordering_the_arrival_order_decided_the_history() -> None:
    """The faust worker applied records as they arrived: the issue's 12-of-16 finding."""
    events = journey.events()
    histories = {
        tuple(map(tuple, encoded(InProcess(POLICY, 4, ordered=False).run(events, s)).values()))
        for s in schedules(events, 4)
    }
    assert len(histories) > 1


def test_form_then_identify_from_one_device_is_one_lead() -> None:
    events = [
        e
        for e in journey.events()
        if e.event_id in ("m01-page-pricing", "m02-page-product", "m03-form", "m04-identify")
    ]
    for schedule in schedules(events, 4):
        result = InProcess(POLICY, 4).run(events, schedule)
        assert result.live_leads() == {journey.USER}
        assert len(result.merged()) == 1
        survivor = result.states[f'["{journey.WORKSPACE}","{journey.USER}"]']
        assert survivor.summary.visits == 2
        assert survivor.contact.company == "BigCorp"


def test_two_identified_users_on_one_shared_device_stay_two() -> None:
    base = journey.events()[0]
    one = dataclasses.replace(base, event_id="id-1", kind=base.kind)

    def ev(event_id: str, minute: int, **kw: Any) -> Event:
        return dataclasses.replace(
            one, event_id=event_id, occurred_at=journey.T0 + minute * journey.MINUTE, **kw
        )

    events = [
        ev("p1", 0),
        ev("i1", 1, kind=Kind.IDENTIFY, lead_id="user-a", payload={"email": "a@x.io"}),
        ev("p2", 2, lead_id="user-a"),
        ev("i2", 3, kind=Kind.IDENTIFY, lead_id="user-b", payload={"email": "b@x.io"}),
        ev("p3", 4, lead_id="user-b"),
        ev("p4", 5),  # anonymous again: the device follows the last user
    ]
    for schedule in schedules(events, 4):
        result = InProcess(POLICY, 4).run(events, schedule)
        assert result.live_leads() == {"user-a", "user-b"}
        # Only each user's own email joins them; the two users never merge.
        assert result.merged() == []
        assert result.redirects() == {
            derive_lead_id(journey.WORKSPACE, "a@x.io"): "user-a",
            derive_lead_id(journey.WORKSPACE, "b@x.io"): "user-b",
        }
        # The anonymous page before the first login is user-a's, the one after, user-b's.
        touched = {
            d.cause_event_id: d.lead_id for d in result.all_derived() if isinstance(d, LeadScored)
        }
        assert (touched["p1"], touched["p4"]) == ("user-a", "user-b")


def test_a_device_shared_by_more_users_than_the_cap_stops_merging_and_stitching() -> None:
    base = journey.events()[0]
    users = MAX_DEVICE_LEADS + 2
    events = []
    for i in range(users):  # a kiosk: one person after the other logs in with their email
        at = journey.T0 + i * 10 * journey.MINUTE
        events.append(
            dataclasses.replace(
                base,
                event_id=f"i{i}",
                kind=Kind.IDENTIFY,
                occurred_at=at,
                lead_id=f"user-{i}",
                payload={"email": f"p{i}@x.io"},
            )
        )
    events.append(dataclasses.replace(base, event_id="later", occurred_at=journey.T0 + DAY_MS))
    result = InProcess(POLICY, 3).run(events)
    assert result.live_leads() == {f"user-{i}" for i in range(users)}
    # Each email links to its user, until the device has asked for as many merges as the cap.
    assert len(result.redirects()) == MAX_DEVICE_LEADS
    # Past the cap the device is shared: its anonymous page view is nobody's.
    assert all(
        d.lead_id != f"user-{users - 1}" or "later" not in str(d) for d in result.all_derived()
    )
    assert not any(getattr(d, "cause_event_id", None) == "later" for d in result.all_derived())


# -- the property ------------------------------------------------------------------------


@st.composite
def journeys(
    draw: st.DrawFn, crowded: bool = False, other_keys: bool = False
) -> tuple[list[Event], int]:
    """A few people, each a mix of anonymous pages, forms, identify, alias and user events,
    sent in requests (one ``received_at`` each) that may arrive late.

    ``crowded``: mostly one shared device, people back to back, more requests overtaken by
    later ones (where a late identify's in-flight records come from; session 4's sweeps).
    ``other_keys``: records that reach a merged lead from keys other than the device that
    asked the merge: a second device with the same email (form, pages, an identify as the
    old id), events keyed by the old id an alias absorbs.
    """
    lateness = draw(st.sampled_from([0, 120_000, 120_000] if crowded else [0, 120_000]))
    people = draw(st.integers(1, 4 if crowded else 3))
    requests: list[list[Event]] = []
    clock = journey.T0
    n = 0
    shared = draw(st.sampled_from([True, True, False])) if crowded else draw(st.booleans())

    def event(kind: Kind, at: int, **kw: Any) -> Event:
        nonlocal n
        n += 1
        return Event(
            f"e{n:03d}", kind, "ws", at, at, context=Context(path=kw.pop("path", None)), **kw
        )

    for person in range(people):
        device = "dev-shared" if shared else f"dev-{person}"
        user = f"user-{person}"
        email = f"p{person}@co{person}.io"
        steps: list[Event] = []
        gap = st.sampled_from([0, 0, 1]) if crowded else st.integers(0, 5)
        at = clock + draw(gap) * journey.MINUTE
        for _ in range(draw(st.integers(0, 3))):
            at += draw(st.integers(1, 30)) * 1000
            steps.append(event(Kind.VISIT, at, anonymous_id=device, path="/pricing"))
        if draw(st.booleans()):
            at += 1000
            steps.append(
                event(
                    Kind.FORM_SUBMITTED,
                    at,
                    anonymous_id=device,
                    payload={
                        "email": email,
                        "company_size": 500,
                        "title": "VP Sales",
                        "industry": "software",
                    },
                )
            )
        if draw(st.booleans()):
            at += 1000
            steps.append(
                event(
                    Kind.IDENTIFY,
                    at,
                    anonymous_id=device,
                    lead_id=user,
                    payload={"email": email} if draw(st.booleans()) else {},
                )
            )
            if draw(st.booleans()):
                at += 1000
                steps.append(
                    event(Kind.ALIAS, at, lead_id=user, payload={"previous_id": f"old-{person}"})
                )
            for _ in range(draw(st.integers(0, 3))):
                at += draw(st.integers(1, 600)) * 1000
                kind = draw(
                    st.sampled_from(
                        [Kind.WEBINAR_ATTENDED, Kind.EMAIL_CLICKED, Kind.DEMO_REQUESTED]
                    )
                )
                steps.append(event(kind, at, lead_id=user))
            if draw(st.booleans()):
                at += 1000
                steps.append(
                    event(
                        Kind.STAGE_CHANGED,
                        at,
                        lead_id=user,
                        payload={
                            "action": draw(st.sampled_from(["accept_mql", "recycle", "disqualify"]))
                        },
                    )
                )
        others: list[Event] = []
        if other_keys:
            second = f"dev-{person}-b"
            old = f"old-{person}"
            when = clock
            for _ in range(draw(st.integers(0, 4))):
                when += draw(st.integers(1, 40)) * 1000
                # A form and an identify as the old id make a chain of merges when the
                # alias came first (the form lead merges into a redirect).
                pick = draw(st.sampled_from(["form", "page", "page", "old", "old-id"]))
                if pick == "form":
                    payload = {"email": email, "company_size": 500, "title": "VP Sales",
                               "industry": "software"}  # fmt: skip
                    others.append(
                        event(Kind.FORM_SUBMITTED, when, anonymous_id=second, payload=payload)
                    )
                elif pick == "page":
                    others.append(event(Kind.VISIT, when, anonymous_id=second, path="/pricing"))
                elif pick == "old":
                    others.append(event(Kind.EMAIL_CLICKED, when, lead_id=old))
                else:  # the second device identified as the id an alias absorbs
                    others.append(event(Kind.IDENTIFY, when, anonymous_id=second, lead_id=old))
            at = max(at, when)
        # Cut the person's events into requests; each is received some time after its last.
        for part in (steps, others):
            while part:
                size = draw(st.integers(1, len(part)))
                requests.append(part[:size])
                part = part[size:]
        clock = at
    out: list[Event] = []
    for request in requests:
        delays = [50, 50, 5_000, 20_000, 60_000, 10 * 60_000] if crowded else [50, 20_000, 600_000]
        delay = draw(st.sampled_from(delays))
        received = max(e.occurred_at for e in request) + delay
        out.extend(dataclasses.replace(e, received_at=received) for e in request)
    # The collector writes requests in the order they were received.
    out.sort(key=lambda e: e.received_at)
    return out, lateness


ROUTED = (OwnerAssigned, BecameMQL, BecameSQL)


def _owners_masked(result: Result) -> dict[str, list[bytes]]:
    """Per lead, the derived events with round-robin picks masked (cursors are per partition).

    A redirect's notice (``LeadMerged`` reason ``redirect``: a silently merged id used for
    the first time) is emitted on the merged id's partition, not the survivor's: on several
    partitions its place among the survivor's own derived events is not an order (they go
    to different topics from different partitions), so the notices go last, sorted.
    """
    out: dict[str, list[bytes]] = {}
    for lead, all_ds in result.by_lead().items():
        items = []
        notices = [d for d in all_ds if isinstance(d, LeadMerged) and d.reason == "redirect"]
        ds = [d for d in all_ds if d not in notices]
        ds += sorted(notices, key=CODEC.encode)
        for d in ds:
            if isinstance(d, OwnerAssigned):
                d = dataclasses.replace(
                    d, owner_id=None, team=None, cursor_after=0, previous_owner_id=None
                )
            elif isinstance(d, BecameMQL):
                d = dataclasses.replace(d, owner_id=None)
            elif isinstance(d, BecameSQL):
                d = dataclasses.replace(d, owner_id=None, team=None)
            items.append(CODEC.encode(d))
        out[lead] = items
    return out


@settings(max_examples=120, deadline=None)
@given(
    data=journeys(), partitions=st.integers(2, 5), schedule=st.lists(st.integers(0, 9), max_size=80)
)
def test_any_interleaving_gives_the_outputs_of_event_time_order(
    data: tuple[list[Event], int], partitions: int, schedule: list[int]
) -> None:
    events, lateness = data
    reference = InProcess(POLICY, partitions, lateness_ms=lateness).run(events)
    shuffled = InProcess(POLICY, partitions, lateness_ms=lateness).run(events, schedule)
    assert encoded(shuffled) == encoded(reference)
    assert shuffled.dead_letters == reference.dead_letters
    # One worker processes everything in the canonical (event-time) order: the same
    # history for every lead, up to which rep the round robin picked.
    single = InProcess(POLICY, 1, lateness_ms=lateness).run(events)
    assert _owners_masked(single) == _owners_masked(reference)
    for lead, ds in reference.by_lead().items():
        changes = [d for d in ds if isinstance(d, StageChanged)]
        assert [c.occurred_at for c in changes] == sorted(c.occurred_at for c in changes), lead
        for handoff in (d for d in ds if isinstance(d, BecameSQL)):
            if handoff.last_touch is not None:
                assert handoff.last_touch.occurred_at <= handoff.became_sql_at
    assert all(isinstance(m, LeadMerged) for m in reference.merged())


@settings(max_examples=120, deadline=None)
@given(
    data=journeys(crowded=True),
    partitions=st.integers(1, 5),
    schedule=st.lists(st.integers(0, 9), max_size=80),
)
def test_crowded_shared_devices_give_the_outputs_of_event_time_order(
    data: tuple[list[Event], int], partitions: int, schedule: list[int]
) -> None:
    test_any_interleaving_gives_the_outputs_of_event_time_order.hypothesis.inner_test(  # type: ignore[attr-defined]
        data, partitions, schedule
    )


def _shared_device_journey() -> list[Event]:
    """The journey hypothesis found (session 3): two people on one device, one identify late."""
    t0 = 1_767_225_600_000

    def e(n: int, kind: Kind, at_s: int, recv_s: float, **kw: Any) -> Event:
        return Event(f"e{n:03d}", kind, "ws", t0 + at_s * 1000, t0 + int(recv_s * 1000), **kw)

    pricing = Context(path="/pricing")
    dev = "dev-shared"
    return [
        e(1, Kind.VISIT, 1, 1.05, anonymous_id=dev, context=pricing),
        e(5, Kind.VISIT, 5, 7.05, anonymous_id=dev, context=pricing),
        e(6, Kind.VISIT, 6, 7.05, anonymous_id=dev, context=pricing),
        e(7, Kind.FORM_SUBMITTED, 7, 7.05, anonymous_id=dev,
          payload={"email": "p1@co1.io", "company_size": 500, "title": "VP Sales",
                   "industry": "software"}),
        e(8, Kind.VISIT, 8, 8.05, anonymous_id=dev, context=pricing),
        e(2, Kind.VISIT, 2, 24, anonymous_id=dev, context=pricing),
        e(3, Kind.IDENTIFY, 3, 24, anonymous_id=dev, lead_id="user-0"),
        e(4, Kind.ALIAS, 4, 24, lead_id="user-0", payload={"previous_id": "old-0"}),
        e(9, Kind.VISIT, 20, 24.05, anonymous_id=dev, context=pricing),
        e(10, Kind.FORM_SUBMITTED, 21, 24.05, anonymous_id=dev,
          payload={"email": "p2@co2.io", "company_size": 500, "industry": "software"}),
        e(11, Kind.IDENTIFY, 22, 24.05, anonymous_id=dev, lead_id="user-2"),
        e(12, Kind.ALIAS, 23, 24.05, lead_id="user-2", payload={"previous_id": "old-2"}),
        e(13, Kind.STAGE_CHANGED, 24, 24.05, lead_id="user-2", payload={"action": "accept_mql"}),
    ]  # fmt: skip


def test_a_shared_device_merges_alike_on_one_partition_and_on_three() -> None:
    """Found by the property above (session 3): a late identify's in-flight records.

    The identify e003 (received 17 s after the form e007 that follows it in event time)
    merges the form's email lead into user-0, but the device had already sent e005-e008 to
    the email lead, where they sort after the merge. They used to be forwarded through the
    redirect and applied on arrival (after e009 on one partition, after e010 on three); the
    identity stage now re-sends them to user-0 in their place (identity.py, "In-flight
    records"), so user-0's history is in event-time order on any partition count.
    """
    events = _shared_device_journey()
    single = InProcess(POLICY, 1, lateness_ms=120_000).run(events)
    three = InProcess(POLICY, 3, lateness_ms=120_000).run(events)
    assert _owners_masked(single) == _owners_masked(three)
    causes = [d.cause_event_id for d in three.by_lead()["user-0"] if isinstance(d, LeadScored)]
    assert [c for c in causes if c.startswith("e0")] == [
        "e003", "e005", "e006", "e007", "e008", "e009", "e010"
    ]  # fmt: skip
    for schedule in ([3, 1, 4, 1, 5, 9, 2, 6] * 10, [1] * 80, [2, 7] * 40):
        again = InProcess(POLICY, 3, lateness_ms=120_000).run(events, schedule)
        assert encoded(again) == encoded(three)


def _second_device_journey() -> list[Event]:
    """One person on two devices, the laptop's identify received late (session 4's limit)."""
    t0 = 1_767_225_600_000

    def e(n: int, kind: Kind, at_s: int, recv_s: float, **kw: Any) -> Event:
        return Event(f"e{n:03d}", kind, "ws", t0 + at_s * 1000, t0 + int(recv_s * 1000), **kw)

    pricing = Context(path="/pricing")
    form = {"email": "p1@co1.io", "company_size": 500, "title": "VP Sales",
            "industry": "software"}  # fmt: skip
    return [
        e(1, Kind.FORM_SUBMITTED, 1, 1.05, anonymous_id="dev-laptop", payload=form),
        e(2, Kind.FORM_SUBMITTED, 5, 5.05, anonymous_id="dev-phone", payload=form),
        e(3, Kind.VISIT, 6, 6.05, anonymous_id="dev-phone", context=pricing),
        e(4, Kind.VISIT, 7, 7.05, anonymous_id="dev-phone", context=pricing),
        e(5, Kind.IDENTIFY, 3, 24, anonymous_id="dev-laptop", lead_id="user-0"),
        e(6, Kind.VISIT, 20, 24.05, anonymous_id="dev-laptop", context=pricing),
        e(7, Kind.VISIT, 21, 24.05, anonymous_id="dev-phone", context=pricing),
    ]  # fmt: skip


def test_records_another_device_sent_to_a_merged_lead_are_in_event_time_order() -> None:
    """Forwards from other keys (docs/architecture.md, "Identity merges").

    The laptop's late identify e005 (event time 3 s, received 24 s) merges the email lead
    into user-0. The phone had already sent e002-e004 (5-7 s) to the email lead. Only the
    laptop's identity state knows the laptop's in-flight records, so the phone's are
    forwarded through the redirect; they keep their release key and wait at user-0's
    partition for the forward frontier, so they are applied in their place (they used to
    be applied when they arrived: after e006).
    """
    events = _second_device_journey()
    occurred = {e.event_id: (e.occurred_at, e.event_id) for e in events}
    for partitions in (1, 3):
        for schedule in ([], [1] * 40, [2, 0] * 20):
            result = InProcess(POLICY, partitions, lateness_ms=120_000).run(events, schedule)
            scored = [d for d in result.by_lead()["user-0"] if isinstance(d, LeadScored)]
            causes = [d.cause_event_id for d in scored if d.cause_event_id in occurred]
            assert causes == sorted(causes, key=occurred.__getitem__), (partitions, schedule)


@settings(max_examples=150, deadline=None)
@given(
    data=st.booleans().flatmap(lambda crowded: journeys(crowded=crowded, other_keys=True)),
    partitions=st.integers(1, 5),
    schedule=st.lists(st.integers(0, 9), max_size=80),
    markers=st.booleans(),
)
def test_records_from_other_keys_give_the_outputs_of_event_time_order(
    data: tuple[list[Event], int], partitions: int, schedule: list[int], markers: bool
) -> None:
    """Second devices, events for an aliased id, devices identified as it: any interleaving
    gives the outputs of event-time order; so does the frontier as lead-stage markers (per
    hop count, delayed like any direct record), the protocol the worker is to follow."""
    test_any_interleaving_gives_the_outputs_of_event_time_order.hypothesis.inner_test(  # type: ignore[attr-defined]
        data, partitions, schedule
    )
    if markers:
        events, lateness = data
        reference = InProcess(POLICY, partitions, lateness_ms=lateness).run(events)
        marked = InProcess(POLICY, partitions, lateness_ms=lateness, markers=True)
        got = marked.run(events, schedule)
        assert encoded(got) == encoded(reference)
        assert got.dead_letters == reference.dead_letters


def test_the_second_device_journey_with_frontier_markers_is_the_reference() -> None:
    events = _second_device_journey()
    for partitions in (1, 3, 5):
        reference = encoded(InProcess(POLICY, partitions, lateness_ms=120_000).run(events))
        for schedule in ([], [1] * 200, [2, 0] * 100, [7, 3, 11, 5, 2] * 40):
            marked = InProcess(POLICY, partitions, lateness_ms=120_000, markers=True)
            assert encoded(marked.run(events, schedule)) == reference, (partitions, schedule)


def _chain_journey() -> list[Event]:
    """user-0 absorbs old-0 by alias (2 s); a second device then submits p0's form (10 s) and
    identifies as old-0 (30 s): the email lead merges into old-0, already a redirect."""
    t0 = 1_767_225_600_000

    def e(n: int, kind: Kind, at_s: int, **kw: Any) -> Event:
        return Event(f"e{n:03d}", kind, "ws", t0 + at_s * 1000, t0 + at_s * 1000 + 50, **kw)

    form = {"email": "p0@co0.io", "company_size": 500, "title": "VP Sales",
            "industry": "software"}  # fmt: skip
    return [
        e(1, Kind.IDENTIFY, 1, anonymous_id="dev-a", lead_id="user-0"),
        e(2, Kind.ALIAS, 2, lead_id="user-0", payload={"previous_id": "old-0"}),
        e(3, Kind.FORM_SUBMITTED, 10, anonymous_id="dev-b", payload=form),
        e(4, Kind.IDENTIFY, 30, anonymous_id="dev-b", lead_id="old-0"),
        e(5, Kind.WEBINAR_ATTENDED, 40, lead_id="user-0"),
        e(6, Kind.DEMO_REQUESTED, 50, lead_id="user-0"),
        e(7, Kind.VISIT, 60, anonymous_id="dev-b", context=Context(path="/pricing")),
    ]


def test_a_transfer_that_chases_a_chain_of_merges_is_absorbed_in_its_place() -> None:
    """Chains (processors/merges.py): the email lead's state goes to old-0, a redirect by
    then. It used to be forwarded to user-0 and absorbed when it arrived (old-0's request
    waited for nothing): after e006 in the default schedule, after e005 or before it in
    others. Now old-0 forwards the request in its place and user-0 absorbs the state there,
    right after e004's merge, on any schedule and partition count."""
    events = _chain_journey()
    single = InProcess(POLICY, 1).run(events)
    order = [d.cause_event_id for d in single.by_lead()["user-0"] if isinstance(d, LeadScored)]
    merge = next(m for m in single.merged() if m.merged_lead_id.startswith("e-")).merge_id
    assert order == ["e001", merge, "e004", "e005", "e006", "e007"]
    for partitions, schedule in (
        (2, [0, 1, 0, 1, 3, 2, 1, 3, 1, 0, 1, 3]),  # used to be after e005
        (3, [1, 1, 3, 2, 0, 2, 3, 1, 1, 2, 0, 2]),  # used to be before e005
    ):
        reference = InProcess(POLICY, partitions).run(events)
        assert _owners_masked(reference) == _owners_masked(single)
        for markers in (False, True):
            got = InProcess(POLICY, partitions, markers=markers).run(events, schedule)
            assert encoded(got) == encoded(reference), (partitions, schedule, markers)


def test_a_refused_merge_that_chases_a_redirect_does_not_hold_the_survivor() -> None:
    """Found by the other-key sweep: the email lead is in user-1 already when the second
    device identifies as old-1 (an alias of user-1), so its merge into old-1 is refused. The
    survivor's request goes on through old-1's redirect and user-1 waits for the answer; the
    refusal, forwarded along the same redirect, must be kept for it (it used to be taken on
    arrival, and user-1's partition then waited forever on 4 partitions)."""
    t0 = 1_767_225_600_000

    def e(n: int, kind: Kind, at_s: float, recv_s: float, **kw: Any) -> Event:
        return Event(f"e{n:03d}", kind, "ws", t0 + int(at_s * 1000), t0 + int(recv_s * 1000), **kw)

    form = {"email": "p1@co1.io", "company_size": 500, "title": "VP Sales",
            "industry": "software"}  # fmt: skip
    events = [
        e(13, Kind.FORM_SUBMITTED, 5, 6.05, anonymous_id="dev-1-b", payload=form),
        e(
            7,
            Kind.IDENTIFY,
            6,
            11.05,
            anonymous_id="dev-shared",
            lead_id="user-1",
            payload={"email": "p1@co1.io"},
        ),
        e(8, Kind.ALIAS, 7, 11.05, lead_id="user-1", payload={"previous_id": "old-1"}),
        e(15, Kind.IDENTIFY, 7, 12.0, anonymous_id="dev-1-b", lead_id="old-1"),
    ]
    single = InProcess(POLICY, 1).run(events)
    for partitions in (2, 3, 4):
        for markers in (False, True):
            got = InProcess(POLICY, partitions, markers=markers).run(events, [1, 0] * 20)
            assert _owners_masked(got) == _owners_masked(single), (partitions, markers)
    assert single.live_leads() == {"user-1"}
