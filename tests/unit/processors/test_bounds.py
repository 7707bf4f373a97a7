"""Domain bounds of amounts and counts (issue 19): the rule, the file, per-workspace ranges."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.processors.bounds import (
    BOUNDED,
    Bounds,
    BoundsTable,
    Range,
    check_bounds,
    violations,
)
from leadflow.processors.bounds_load import load_bounds, parse_bounds
from leadflow.processors.errors import InvalidEvent, PolicyError
from leadflow.processors.events import Event, Kind


@given(st.sampled_from(sorted(BOUNDED)), st.floats(allow_nan=True, allow_infinity=True))
def test_a_value_is_refused_exactly_when_it_is_outside_its_range(kind: Kind, value: float) -> None:
    ((name, quantity),) = BOUNDED[kind]
    allowed: Range = getattr(Bounds(), quantity)
    found = violations(kind, {name: value}, Bounds())
    inside = math.isfinite(value) and allowed.min <= value <= allowed.max
    assert (found == []) is inside
    if found:
        assert found[0].field == name
        assert quantity in found[0].reason or "not a finite number" in found[0].reason


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (Kind.DEAL_WON, {"amount": 1.7e308}),
        (Kind.DEAL_WON, {"amount": -1e9}),
        (Kind.CAMPAIGN_COST, {"amount": -5e300, "channel": "ads"}),
        (Kind.DEAL_LOST, {"amount": math.nan}),
        (Kind.WEBINAR_ATTENDED, {"minutes_attended": -3}),
        (Kind.IDENTIFY, {"company_size": 10**30}),
    ],
)
def test_the_issues_amounts_are_refused_by_the_worker_rule(
    kind: Kind, payload: dict[str, object]
) -> None:
    event = Event("e", kind, "ws", 1, 1, lead_id="L", payload=payload)
    with pytest.raises(InvalidEvent, match="out of bounds"):
        check_bounds(event, BoundsTable())


def test_absent_optional_amounts_and_other_kinds_pass() -> None:
    check_bounds(Event("e", Kind.DEAL_LOST, "ws", 1, 1, lead_id="L", payload={"amount": None}),
                 BoundsTable())  # fmt: skip
    check_bounds(Event("e", Kind.VISIT, "ws", 1, 1, "a"), BoundsTable())


def test_per_workspace_ranges_layer_on_the_files_default(tmp_path: Path) -> None:
    path = tmp_path / "bounds.yaml"
    path.write_text(
        "version: 1\n"
        "default:\n  deal_amount: {max: 5000000}\n"
        "workspaces:\n  acme:\n    campaign_cost: {min: -10000}\n"
    )
    table = load_bounds(path)
    assert table.of("acme").campaign_cost == Range(-10000.0, 1e9)
    assert table.of("acme").deal_amount == Range(0.0, 5e6)  # the file's default, not built-in
    assert table.of("globex").campaign_cost == Range(0.0, 1e9)
    assert load_bounds(None) == BoundsTable()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\n", "version:1 version: only version 1"),
        ("version: 1\ndefault:\n  deal: {max: 1}\n", "unknown field"),
        ("version: 1\ndefault:\n  deal_amount: {max: .inf}\n", "must be a finite number"),
        ("version: 1\ndefault:\n  deal_amount: {min: 5, max: 1}\n", "min 5 is above max 1"),
        ("version: 1\nworkspaces:\n  'a b':\n    deal_amount: {max: 1}\n", "must match"),
        ("version: 1\ndefault: [\n", "not valid YAML"),
    ],
)
def test_a_bad_bounds_file_names_the_line_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.split(":")[-1].strip()):
        parse_bounds(text, "bounds.yaml")


def test_an_unreadable_bounds_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the bounds file"):
        load_bounds(tmp_path / "missing.yaml")
