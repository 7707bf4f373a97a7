"""Lead state stays small (< 2 KB serialized) because every growing part has a cap."""

from leadflow.processors.deadlines import advance_time
from leadflow.processors.events import Event, Kind
from leadflow.processors.identity import MAX_BUFFERED, identity_step
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import (
    MAX_HISTORY,
    MAX_HITS,
    MAX_SEEN,
    LeadState,
    decode_lead_state,
    encode_lead_state,
)
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy_load import load_default_policy

from ._factory import ICP_FORM, ev

P = load_default_policy()
MODEL = ScoreModel(P)
for _ in range(30):
    MODEL.learn({"fit": 80.0, "engagement": 60.0, "n.pricing_page": 2.0}, True)
    MODEL.learn({"fit": 10.0, "engagement": 5.0, "n.page_view": 1.0}, False)


def fold(events: list[Event], state: LeadState | None = None) -> tuple[LeadState, list]:
    out: list = []
    for e in events:
        state, derived = lead_step(state, e, P, MODEL)
        state, due = advance_time(state, e.occurred_at, P)
        out += derived + due
    assert state is not None
    return state, out


def test_the_dedupe_window_covers_a_re_emitted_identity_replay() -> None:
    # A crash after the identity agent sent a full device buffer re-sends all of it.
    assert MAX_SEEN > MAX_BUFFERED + 1
    device = None
    visits = [
        ev(f"v{i:03d}", Kind.VISIT, i, anon="a", path="/pricing") for i in range(MAX_BUFFERED)
    ]
    for v in visits:
        device, out = identity_step(device, v)
        assert out == []
    form = ev("f", Kind.FORM_SUBMITTED, MAX_BUFFERED, anon="a", **ICP_FORM)
    _, burst = identity_step(device, form)
    assert len(burst) == MAX_BUFFERED + 1
    state, _ = fold(burst)
    again, derived = fold(burst, state)
    assert derived == []
    assert again == state


def busy_lead() -> list[Event]:
    """Half a year of a very active lead: daily visits, emails, downloads, two recycles."""
    answers = {"annual_budget": "50k-100k", "purchase_timeframe": "this quarter"}
    form = {**ICP_FORM, "phone": "+1 415 555 0100", "answers": answers}
    events: list[Event] = [ev("f", Kind.FORM_SUBMITTED, 0, lead="L", **form)]
    paths = ("/pricing", "/docs/api", "/customers/acme", "/blog/post", "/careers")
    for day in range(180):
        h = day * 24
        events.append(ev(f"v{day}", Kind.VISIT, h + 1, lead="L", path=paths[day % 5]))
        events.append(ev(f"o{day}", Kind.EMAIL_OPENED, h + 2, lead="L"))
        if day % 3 == 0:
            events.append(ev(f"k{day}", Kind.EMAIL_CLICKED, h + 3, lead="L"))
        if day % 20 == 0:
            events.append(ev(f"d{day}", Kind.CONTENT_DOWNLOADED, h + 4, lead="L"))
        if day in (30, 90):
            events.append(ev(f"r{day}", Kind.STAGE_CHANGED, h + 5, lead="L", action="reject_mql"))
    return events


def test_a_busy_lead_stays_under_two_kilobytes_and_within_its_caps() -> None:
    state, _ = fold(busy_lead())
    assert not state.labelled  # an open episode: its features snapshot is in the state
    assert state.top_features
    assert len(state.seen) == MAX_SEEN
    assert len(state.hits) <= MAX_HITS
    assert len(state.history) <= MAX_HISTORY
    data = encode_lead_state(state)
    assert decode_lead_state(data) == state
    assert len(data) < 2048, len(data)
