"""Lead merges on the lead stage (processors/merges.py): hand-over, wait, absorb, redirect."""

from __future__ import annotations

import dataclasses

import pytest

from leadflow.processors.derived import LeadMerged, LeadTransfer, MergeRequest, Stage
from leadflow.processors.errors import InvalidEvent, InvalidTransition
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.processors.lead_state import LeadState
from leadflow.processors.merges import (
    MAX_HOPS,
    Direct,
    LeadOutcome,
    LeadRecord,
    lead_advance,
    lead_record_step,
)
from leadflow.processors.policy_load import load_default_policy

from ._factory import HOUR, T0, WS, ev

P = load_default_policy()


def step(state: LeadState | None, record: LeadRecord, hops: int = 0) -> LeadOutcome:
    return lead_record_step(state, record, P, None, hops=hops)


def run(state: LeadState | None, events: list[Event]) -> LeadState:
    for e in events:
        state = step(state, e).state
    assert state is not None
    return state


def request(absorbed: str, survivor: str, side: str, hours: float = 10) -> MergeRequest:
    at = T0 + int(hours * HOUR)
    return MergeRequest(
        merge_id=f"m-{absorbed}-{survivor}",
        workspace_id=WS,
        lead_id=absorbed if side == "absorbed" else survivor,
        absorbed_id=absorbed,
        survivor_id=survivor,
        occurred_at=at,
        received_at=at,
        reason="identify",
        cause_event_id="cause",
    )


def transfer_of(out: LeadOutcome) -> LeadTransfer:
    [item] = [d for d in out.direct if isinstance(d.record, LeadTransfer)]
    assert isinstance(item.record, LeadTransfer)
    return item.record


SOFT = [
    ev("v1", Kind.VISIT, 0, lead="e-soft", path="/pricing", channel="paid_search"),
    ev("f1", Kind.FORM_SUBMITTED, 1, lead="e-soft", email="ada@big.io", company_size=1200),
]


def test_a_survivor_with_no_history_adopts_the_merged_lead() -> None:
    soft = run(None, SOFT)
    handed = step(soft, request("e-soft", "U", "absorbed"))
    assert handed.state is not None
    assert handed.state.merged_into == "U"
    assert handed.derived == []
    waiting = step(None, request("e-soft", "U", "survivor"))
    assert waiting.state is not None
    assert waiting.state.awaiting
    done = step(waiting.state, transfer_of(handed))
    assert done.state is not None
    assert not done.state.awaiting
    notice = done.derived[0]
    assert isinstance(notice, LeadMerged)
    assert (notice.lead_id, notice.merged_lead_id, notice.adopted_history) == ("U", "e-soft", True)
    u = done.state
    assert (u.lead_id, u.stage, u.contact.company_size) == ("U", Stage.LEAD, 1200)
    assert u.summary.visits == 1
    assert u.first_touch is not None
    assert u.first_touch.event_id == "v1"
    assert "e-soft" in u.aliases
    # The merge is re-scored under the survivor's id, cause = the merge.
    assert any(getattr(d, "cause_event_id", "") == notice.merge_id for d in done.derived[1:])


def test_a_survivor_with_history_keeps_it_and_takes_the_merged_facts() -> None:
    soft = run(None, SOFT)
    u = run(None, [
        ev("w1", Kind.WEBINAR_ATTENDED, 5, lead="U"),
        ev("i1", Kind.IDENTIFY, 6, lead="U", email="ada@big.io", title="VP Sales"),
    ])  # fmt: skip
    waiting = step(u, request("e-soft", "U", "survivor")).state
    done = step(waiting, transfer_of(step(soft, request("e-soft", "U", "absorbed"))))
    assert isinstance(done.derived[0], LeadMerged)
    assert not done.derived[0].adopted_history
    s = done.state
    assert s is not None
    assert s.history[0].entered_at == u.history[0].entered_at  # its own history stands
    assert s.first_touch is not None
    assert s.first_touch.event_id == "v1"
    assert s.last_touch is not None
    assert s.last_touch.event_id == "w1"
    assert s.summary.visits == 1
    assert s.summary.webinars_attended == 1
    assert (s.contact.title, s.contact.company_size) == ("VP Sales", 1200)  # gaps filled


def test_a_transfer_that_comes_first_waits_for_its_request() -> None:
    handed = step(run(None, SOFT), request("e-soft", "U", "absorbed"))
    early = step(None, transfer_of(handed))
    assert early.state is not None
    assert early.state.early
    assert early.derived == []
    done = step(early.state, request("e-soft", "U", "survivor"))
    assert done.state is not None
    assert not done.state.early
    assert not done.state.awaiting
    assert isinstance(done.derived[0], LeadMerged)


def test_records_parked_while_waiting_run_in_order_after_the_transfer() -> None:
    waiting = step(None, request("e-soft", "U", "survivor")).state
    later = [ev("k1", Kind.EMAIL_CLICKED, 11, lead="U"),
             ev("s1", Kind.STAGE_CHANGED, 12, lead="U", action="promote"),
             ev("c1", Kind.EMAIL_CLICKED, 13, lead="U")]  # fmt: skip
    for e in later:
        out = step(waiting, e)
        assert out.derived == []
        waiting = out.state
    tick = lead_advance(waiting, T0 + 14 * HOUR, P)
    assert tick.state is not None
    assert tick.state.parked_tick == T0 + 14 * HOUR
    done = step(tick.state, transfer_of(step(run(None, SOFT), request("e-soft", "U", "absorbed"))))
    causes = [getattr(d, "cause_event_id", None) for d in done.derived]
    assert causes.index("k1") < causes.index("c1")
    # The bad sales action fails on its own, as it would have on arrival.
    assert [(p.event.event_id, type(x)) for p, x in done.failed] == [("s1", InvalidEvent)]
    assert done.state is not None
    assert done.state.parked == ()
    assert done.state.parked_tick is None


def test_a_merged_id_redirects_what_comes_later() -> None:
    gone = step(run(None, SOFT), request("e-soft", "U", "absorbed")).state
    late = ev("v9", Kind.VISIT, 20, lead="e-soft")
    out = step(gone, late)
    assert out.derived == []
    assert out.direct == [Direct(lead_key(WS, "U"), dataclasses.replace(late, lead_id="U"), 1)]
    with pytest.raises(InvalidEvent, match="merge cycle"):
        step(gone, late, hops=MAX_HOPS)
    assert lead_advance(gone, T0 + 1000 * HOUR, P).derived == []


def test_the_first_merge_wins_and_the_second_survivor_stops_waiting() -> None:
    gone = step(run(None, SOFT), request("e-soft", "U", "absorbed")).state
    refusal = transfer_of(step(gone, request("e-soft", "V", "absorbed")))
    assert refusal.refused == "already merged into U"
    waiting = step(None, request("e-soft", "V", "survivor")).state
    done = step(waiting, refusal)
    assert done.derived == []
    assert done.state is not None
    assert not done.state.awaiting
    assert done.state.aliases == ()


def test_a_merge_that_would_close_a_cycle_is_refused() -> None:
    # U waits for A's state while A is asked to merge into U's absorbed side... into U.
    u_waits = step(None, request("A", "U", "survivor")).state
    refusal = transfer_of(step(u_waits, request("U", "A", "absorbed")))
    assert refusal.refused == "a merge cycle"


def test_a_repeated_merge_changes_nothing() -> None:
    handed = step(run(None, SOFT), request("e-soft", "U", "absorbed"))
    again = step(handed.state, request("e-soft", "U", "absorbed"))
    waiting = step(None, request("e-soft", "U", "survivor")).state
    done = step(waiting, transfer_of(handed))
    assert done.state is not None
    assert step(done.state, transfer_of(again)).derived == []
    assert step(done.state, request("e-soft", "U", "survivor")).state == done.state


def test_a_late_event_is_stamped_at_the_leads_time_not_in_the_past() -> None:
    lead = run(None, [ev("f1", Kind.FORM_SUBMITTED, 0, lead="L", email="a@b.io"),
                      ev("w1", Kind.WEBINAR_ATTENDED, 50, lead="L")])  # fmt: skip
    late = step(lead, ev("d1", Kind.DEMO_REQUESTED, 10, lead="L"))
    stamps = {type(d).__name__: getattr(d, "occurred_at", None) for d in late.derived}
    assert stamps["LeadScored"] == T0 + 50 * HOUR
    with pytest.raises(InvalidTransition):
        step(run(None, [ev("x", Kind.STAGE_CHANGED, 0, lead="Z", action="disqualify")]),
             ev("y", Kind.STAGE_CHANGED, 1, lead="Z", action="accept_mql"))  # fmt: skip


def test_an_id_merged_before_it_had_history_is_announced_when_first_used() -> None:
    waiting = step(None, request("e-new", "U", "survivor")).state
    handed = step(None, request("e-new", "U", "absorbed"))
    done = step(waiting, transfer_of(handed))
    assert done.derived == []  # nothing merged, nothing to announce yet
    assert done.state is not None
    assert "e-new" in done.state.aliases
    first = step(handed.state, ev("f9", Kind.FORM_SUBMITTED, 30, lead="e-new", email="x@y.io"))
    [notice] = first.derived
    assert isinstance(notice, LeadMerged)
    assert (notice.merged_lead_id, notice.lead_id, notice.reason) == ("e-new", "U", "redirect")
    second = step(first.state, ev("v9", Kind.VISIT, 31, lead="e-new"))
    assert second.derived == []
    assert len(second.direct) == 1


def test_records_the_identity_stage_resent_are_dropped_not_forwarded() -> None:
    """A late identify's in-flight records reach the survivor from the identity stage in
    their place; the merged lead's copies, released after it merged away, are dropped."""
    asked = dataclasses.replace(request("e-soft", "U", "absorbed"), resent=("v9",))
    gone = step(run(None, SOFT), asked).state
    assert gone is not None
    assert gone.merged_into == "U"
    assert gone.dropping == ("v9",)
    resent = ev("v9", Kind.VISIT, 20, lead="e-soft")
    out = step(gone, resent)
    assert (out.derived, out.direct) == ([], [])
    assert out.state is not None
    assert out.state.dropping == ()
    other = ev("v10", Kind.VISIT, 21, lead="e-soft")  # from another key: still forwarded
    assert step(out.state, other).direct == [
        Direct(lead_key(WS, "U"), dataclasses.replace(other, lead_id="U"), 1)
    ]
    # The survivor adopting the merged lead does not inherit what it was to drop.
    adopted = step(step(None, request("e-soft", "U", "survivor")).state, transfer_of(
        step(run(None, SOFT), asked)
    )).state  # fmt: skip
    assert adopted is not None
    assert adopted.dropping == ()


def test_a_refused_merge_leaves_the_resent_records_to_the_first_survivor() -> None:
    """The merged lead refuses (already merged into U): it forwards its copies to U as it
    always did, and the transfer tells the second survivor V to drop the re-sent ones."""
    first = step(run(None, SOFT), request("e-soft", "U", "absorbed")).state
    asked = dataclasses.replace(request("e-soft", "V", "absorbed"), resent=("v9",))
    out = step(first, asked)
    refusal = transfer_of(out)
    assert refusal.refused == "already merged into U"
    assert refusal.resent == ("v9",)
    assert out.state == first
    original = ev("v9", Kind.VISIT, 20, lead="e-soft")
    assert step(out.state, original).direct == [
        Direct(lead_key(WS, "U"), dataclasses.replace(original, lead_id="U"), 1)
    ]
    waiting = step(None, dataclasses.replace(asked, lead_id="V")).state
    stopped = step(waiting, refusal).state
    assert stopped is not None
    assert stopped.dropping == ("v9",)
    copy = dataclasses.replace(original, lead_id="V")
    dropped = step(stopped, copy)
    assert dropped.derived == []
    assert dropped.state is not None
    assert dropped.state.dropping == ()
