"""``read_to_end``: the one loop that reads partitions to their end (streams/kafka_offsets.py).

Store restore, the keyring, the audit trail, the erasure floor, ``leadflow replay rekey`` and
the equivalence tests each had their own copy of it; these are the cases they relied on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams import kafka_offsets
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end
from tests.unit.streams.test_engine_batch import FakeMessage

T = "t"


@dataclass
class Msg(FakeMessage):
    """A polled message, or (``error_``) an event such as partition EOF."""

    error_: KafkaError | None = None

    def error(self) -> KafkaError | None:  # type: ignore[override]
        return self.error_

    def value(self) -> bytes:
        return f"{self.partition_}:{self.offset_}".encode()


def rec(p: int, o: int, topic: str = T) -> Msg:
    return Msg(topic, p, o)


def eof(p: int, o: int, topic: str = T) -> Msg:
    return Msg(topic, p, o, KafkaError(KafkaError._PARTITION_EOF))


def failure(p: int, fatal: bool = False) -> Msg:
    return Msg(T, p, -1, KafkaError(KafkaError._TRANSPORT, "broker down", fatal=fatal))


class Script:
    """A consumer whose polls return the scripted messages, then None."""

    def __init__(self, *messages: Msg | None) -> None:
        self.messages: Iterator[Msg | None] = iter(messages)
        self.polls = 0

    def poll(self, _timeout: float) -> Msg | None:
        self.polls += 1
        return next(self.messages, None)


def offsets(messages: Iterator[object]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in messages]  # type: ignore[attr-defined]


def test_a_partition_ends_at_its_last_record_or_at_eof_past_trailing_markers() -> None:
    # Partition 0: records 0-2, end 3. Partition 1: records 0-1, then a commit marker: end 3,
    # only EOF at 3 ends it.
    pending: dict[tuple[str, int], int | None] = {(T, 0): 3, (T, 1): 3}
    got = offsets(read_to_end(Script(rec(0, 0), rec(1, 0), rec(0, 1), rec(1, 1), rec(0, 2),
                                     eof(1, 3), rec(0, 3)), pending))  # fmt: skip
    assert got == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    assert pending == {}


def test_eof_below_the_end_does_not_end_a_partition() -> None:
    # read_committed: EOF at the last stable offset while a transaction is open.
    pending: dict[tuple[str, int], int | None] = {(T, 0): 4}
    got = offsets(read_to_end(Script(rec(0, 0), eof(0, 1), None, rec(0, 2), eof(0, 4)), pending))
    assert got == [(0, 0), (0, 2)]
    assert pending == {}


def test_none_reads_until_eof_and_records_past_an_end_are_left_for_later() -> None:
    pending: dict[tuple[str, int], int | None] = {(T, 0): None, (T, 1): 2}
    script = Script(rec(1, 0), rec(0, 5), rec(1, 2), rec(0, 6), rec(2, 0), eof(0, 7))
    got = offsets(read_to_end(script, pending))
    # (1, 2) was appended after the read started (end 2): it ends partition 1 unread; a
    # partition not pending (2) is skipped.
    assert got == [(1, 0), (0, 5), (0, 6)]
    assert pending == {}


def test_past_end_yields_what_a_reader_that_goes_on_must_not_lose() -> None:
    pending: dict[tuple[str, int], int | None] = {(T, 0): 2}
    positions: dict[tuple[str, int], int] = {(T, 0): 0, (T, 1): 4}
    script = Script(rec(1, 4), rec(0, 0), rec(0, 1), rec(0, 2))
    got = offsets(read_to_end(script, pending, positions=positions, past_end=True))
    assert got == [(1, 4), (0, 0), (0, 1)]  # stops once partition 0 is at its end
    assert positions == {(T, 0): 2, (T, 1): 5}
    # EOF moves the position past trailing markers.
    pending = {(T, 1): 7}
    assert offsets(read_to_end(Script(eof(1, 7)), pending, positions=positions)) == []
    assert positions[(T, 1)] == 7


def test_the_callers_dict_says_where_a_broken_off_read_stands() -> None:
    pending: dict[tuple[str, int], int | None] = {(T, 0): 2, (T, 1): 1}
    script = Script(rec(1, 0), rec(0, 0), rec(0, 1))
    reader = read_to_end(script, pending)
    assert offsets(iter([next(reader)])) == [(1, 0)]
    assert pending == {(T, 0): 2}  # partition 1 done before its last record was handed out
    reader.close()
    assert offsets(read_to_end(script, pending)) == [(0, 0), (0, 1)]  # goes on (rekey's batches)


def test_errors_raise_by_default_or_go_to_the_callers_handler() -> None:
    with pytest.raises(KafkaException):
        list(read_to_end(Script(failure(0)), {(T, 0): 1}))
    seen: list[object] = []
    got = offsets(read_to_end(Script(failure(0), rec(0, 0)), {(T, 0): 1}, on_error=seen.append))
    assert got == [(0, 0)]
    assert len(seen) == 1


def test_a_deadline_or_idle_time_ends_the_read_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def poll_slowly(_timeout: float) -> None:
        clock[0] += 1.0
        return None

    monkeypatch.setattr(kafka_offsets.time, "monotonic", lambda: clock[0])
    script = Script()
    script.poll = poll_slowly  # type: ignore[method-assign]
    with pytest.raises(EndNotReached) as late:
        list(read_to_end(script, {(T, 0): 3}, deadline=5.0))
    assert late.value.pending == {(T, 0): 3}
    assert clock[0] == 6.0
    clock[0] = 0.0
    with pytest.raises(EndNotReached, match="no record and no end for 60 s"):
        list(read_to_end(script, {(T, 1): None}, idle=60))


@given(
    ends=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    markers=st.lists(st.booleans(), min_size=3, max_size=3),
    later=st.integers(0, 3),
    order=st.randoms(use_true_random=False),
)
def test_any_interleaving_yields_every_record_below_each_end_in_partition_order(
    ends: list[int], markers: list[bool], later: int, order: object
) -> None:
    """Each partition: records 0..end-1 (the last entry a marker instead, sometimes), EOF
    at its end, and ``later`` records appended after the read started; interleaved."""
    streams: list[list[Msg]] = []
    pending: dict[tuple[str, int], int | None] = {}
    expected: dict[int, list[int]] = {}
    for p, end in enumerate(ends):
        marker = markers[p] and end > 0
        records = list(range(end - 1 if marker else end))
        expected[p] = records
        stream = [rec(p, o) for o in records]
        stream.append(eof(p, end))
        stream += [rec(p, end + i) for i in range(later)]
        streams.append(stream)
        pending[(T, p)] = end
    merged: list[Msg] = []
    cursors = [0] * len(streams)
    while any(c < len(s) for c, s in zip(cursors, streams, strict=True)):
        p = order.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])  # type: ignore[attr-defined]
        merged.append(streams[p][cursors[p]])
        cursors[p] += 1
    got: dict[int, list[int]] = {p: [] for p in range(len(ends))}
    for message in read_to_end(Script(*merged), pending):
        got[message.partition()].append(message.offset())
    assert got == expected
    assert pending == {}
