"""The stall watch: re-seek first, exit only if that did not help, never while moving."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams.stall import StallWatch, Verdict

# (seconds since the previous look, lag, processed-so-far increment)
looks = st.lists(
    st.tuples(st.floats(0, 40), st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=60
)


@given(looks)
def test_exit_only_follows_a_reseek_and_progress_resets_the_watch(seq: list) -> None:
    watch = StallWatch(after=30.0)
    now, processed, reseeked = 0.0, 0, False
    for gap, lag, step in seq:
        now += gap
        processed += step
        verdict = watch.observe(now, lag=lag, processed=processed)
        if lag == 0 or step > 0:
            assert verdict is Verdict.OK
            reseeked = False
        elif verdict is Verdict.RESEEK:
            reseeked = True
        elif verdict is Verdict.EXIT:
            assert reseeked, "exited without trying a re-seek since the last progress"


def test_a_stuck_worker_reseeks_then_exits_and_a_moving_one_never_does() -> None:
    stuck = StallWatch(after=30.0)
    verdicts = [stuck.observe(t, lag=7, processed=3) for t in (0, 10, 31, 40, 62)]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.RESEEK, Verdict.OK, Verdict.EXIT]

    moving = StallWatch(after=30.0)
    assert {moving.observe(t * 20.0, lag=7, processed=t) for t in range(20)} == {Verdict.OK}


def test_progress_after_a_reseek_clears_it() -> None:
    watch = StallWatch(after=30.0)
    watch.observe(0, lag=2, processed=1)
    assert watch.observe(31, lag=2, processed=1) is Verdict.RESEEK
    assert watch.observe(35, lag=1, processed=2) is Verdict.OK
    assert watch.observe(70, lag=1, processed=2) is Verdict.RESEEK
