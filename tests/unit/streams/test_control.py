"""``control.take_marker``: the one reader of watermark markers (lead stage and trainer)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams.control import ControlRecordError, marker_record, take_marker

STAGES = ("identity", "lead", "trainer", "other")

watermarks = st.dictionaries(st.integers(0, 20), st.integers(-(10**13), 10**13), max_size=8)


@given(
    stage=st.sampled_from(STAGES),
    marks=watermarks,
    known=st.dictionaries(
        st.sampled_from(STAGES), st.none() | st.integers(0, 20), max_size=len(STAGES)
    ),
)
def test_a_marker_reaches_only_its_stage_and_only_known_sources(
    stage: str, marks: dict[int, int], known: dict[str, int | None]
) -> None:
    taken: dict[str, list[tuple[int, int]]] = {name: [] for name in known}
    promises = {
        name: None if sources is None else (lambda s, w, n=name: taken[n].append((s, w)), sources)
        for name, sources in known.items()
    }
    rejected: list[ControlRecordError] = []
    value, headers = marker_record(stage, marks)
    take_marker(headers, value, promises, reject=rejected.append, who="test")
    assert not rejected  # what marker_record writes always parses
    sources = known.get(stage)
    expected = [] if sources is None else [(s, w) for s, w in sorted(marks.items()) if s < sources]
    for name, got in taken.items():
        assert got == (expected if name == stage else [])


@given(value=st.binary(max_size=20))
def test_a_marker_that_does_not_parse_is_rejected_and_applies_nothing(value: bytes) -> None:
    taken: list[tuple[int, int]] = []
    rejected: list[ControlRecordError] = []
    take_marker(
        [("leadflow.marker", b"lead")],
        value,
        {"lead": (lambda s, w: taken.append((s, w)), 100)},
        reject=rejected.append,
        who="test",
    )
    assert not (rejected and taken)  # all or nothing: a bad marker applies no watermark


def _never(*_args: object) -> None:
    raise AssertionError("called")


def test_a_record_without_the_marker_header_is_left_alone() -> None:
    take_marker([("x", b"1")], b"{}", {"lead": (_never, 1)}, reject=_never, who="test")
