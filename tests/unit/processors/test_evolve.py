"""``evolve`` (processors/evolve.py) gives what ``dataclasses.replace`` gives."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.processors.evolve import evolve
from leadflow.processors.identity import IdentityState
from leadflow.processors.lead_state import LeadState

from .test_codec_equivalence import EVENTS


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
@given(st.from_type(LeadState), st.from_type(LeadState), st.data())
def test_a_lead_state_evolves_as_replace_does(
    state: LeadState, other: LeadState, data: Any
) -> None:
    names = [f.name for f in dataclasses.fields(LeadState)]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True))
    changes = {name: getattr(other, name) for name in chosen}
    assert repr(evolve(state, **changes)) == repr(dataclasses.replace(state, **changes))


@given(st.builds(IdentityState, buffer=st.lists(EVENTS, max_size=3).map(tuple)), st.integers())
def test_a_device_state_evolves_as_replace_does(state: IdentityState, dropped: int) -> None:
    assert evolve(state, dropped=dropped) == dataclasses.replace(state, dropped=dropped)
    assert evolve(state) == state


@dataclass(frozen=True)
class Checked:
    value: int
    doubled: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", 2 * self.value)


def test_an_unknown_field_and_an_init_false_field_are_refused_loudly() -> None:
    with pytest.raises(TypeError, match="no field 'nope'"):
        evolve(LeadState("L", "ws"), nope=1)
    with pytest.raises(TypeError, match="exactly its fields"):
        evolve(Checked(1), value=2)


@dataclass(frozen=True)
class Normalised:
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.lower())


def test_a_class_that_does_more_than_set_its_fields_is_still_called() -> None:
    # The fast path sets fields directly; a __post_init__ must still run.
    assert evolve(Normalised("a"), name="B").name == "b"
