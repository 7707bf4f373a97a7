import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.derived import Stage
from leadflow.processors.errors import InvalidTransition
from leadflow.processors.funnel import TRANSITIONS, can_transition, transition


def test_table_covers_every_stage_and_customer_is_terminal() -> None:
    assert set(TRANSITIONS) == {None, *Stage}
    assert TRANSITIONS[Stage.CUSTOMER] == frozenset()
    assert all(Stage.VISITOR not in targets for s, targets in TRANSITIONS.items() if s)
    assert can_transition(Stage.RECYCLED, Stage.SQL)


def test_invalid_transition_raises() -> None:
    with pytest.raises(InvalidTransition, match="visitor -> sql"):
        transition(
            workspace_id="w",
            lead_id="L",
            sequence=2,
            current=Stage.VISITOR,
            to=Stage.SQL,
            occurred_at=1,
            reason="x",
            cause_event_id="e",
        )
    with pytest.raises(InvalidTransition):
        transition(
            workspace_id="w",
            lead_id="L",
            sequence=0,
            current=None,
            to=Stage.LEAD,
            occurred_at=1,
            reason="x",
            cause_event_id="e",
        )


@given(st.lists(st.sampled_from(list(Stage)), max_size=40))
def test_random_walks_keep_the_machine_invariants(targets) -> None:
    current: Stage | None = None
    seq = 0
    ids: set[str] = set()
    for i, to in enumerate(targets):
        allowed = can_transition(current, to)
        try:
            change = transition(
                workspace_id="w",
                lead_id="L",
                sequence=seq + 1,
                current=current,
                to=to,
                occurred_at=i,
                reason="r",
                cause_event_id=f"e{i}",
            )
        except InvalidTransition:
            assert not allowed
            continue
        assert allowed
        seq += 1
        assert change.sequence == seq
        assert change.from_stage == current
        assert change.to_stage == to
        assert change.transition_id not in ids  # every transition has its own id
        ids.add(change.transition_id)
        again = transition(
            workspace_id="w",
            lead_id="L",
            sequence=seq,
            current=current,
            to=to,
            occurred_at=i,
            reason="r",
            cause_event_id=f"e{i}",
        )
        assert again.transition_id == change.transition_id  # deterministic
        current = to
