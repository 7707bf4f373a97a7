"""A store read and written as decoded states (streams/stages/decoded.py).

Against the way the stages used it before: every write encoded and put at once, every read
decoded from the bytes. Whatever the writes, reads, batch ends and aborts, the two read the
same states and leave the same pending writes (so the same changelog records), and a batch
encodes each key once.
"""

from __future__ import annotations

import doctest
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from leadflow.streams.engine.stores import PartitionStore
from leadflow.streams.stages import decoded
from leadflow.streams.stages.decoded import DecodedStore

from .test_engine import FakeContext


def store(ctx: FakeContext) -> PartitionStore:
    """The test's one store in ``ctx``."""
    return ctx.stores.setdefault("s", PartitionStore())


def encode(state: tuple[int, ...]) -> bytes:
    return json.dumps(state).encode()


def decode(raw: bytes) -> tuple[int, ...]:
    return tuple(json.loads(raw))


KEYS = st.sampled_from([b"a", b"b", b"c"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.lists(st.integers(0, 9), max_size=3).map(tuple)),
        st.tuples(st.just("get"), KEYS, st.none()),
        st.tuples(st.just("commit"), st.none(), st.none()),
        st.tuples(st.just("abort"), st.none(), st.none()),
    ),
    max_size=40,
)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(decoded, raise_on_error=True).failed == 0


@given(OPS)
def test_reads_and_changelog_writes_match_a_put_per_write(ops: list[Any]) -> None:
    kept, direct = FakeContext(), FakeContext()
    encodes: list[bytes] = []

    def counted(state: tuple[int, ...]) -> bytes:
        encodes.append(b"")
        return encode(state)

    # The cache is smaller than the keys: evictions are exercised too.
    task = DecodedStore("s", counted, decode, cache=2)
    for op, key, state in ops:
        if op == "put":
            task.put(key, state)
            direct.put("s", key, encode(state))
        elif op == "get":
            got = task.get(kept, key)
            raw = direct.get("s", key)
            assert (got[1] if got else None) == (decode(raw) if raw is not None else None)
        else:
            # A batch ends: the task saves, then the transaction commits or aborts (an abort
            # rebuilds the task, as the engine does).
            encodes.clear()
            written = len(task.unsaved)
            task.save(kept)
            assert len(encodes) == written  # one encode per key written in the batch
            assert store(kept).pending == store(direct).pending
            for ctx in (kept, direct):
                if op == "commit":
                    store(ctx).commit()
                else:
                    store(ctx).abort()
            if op == "abort":
                task = DecodedStore("s", counted, decode, cache=2)
            assert store(kept).data == store(direct).data


def test_a_read_sees_bytes_written_by_another_task_not_its_cache() -> None:
    ctx = FakeContext()
    task = DecodedStore("s", encode, decode, cache=4)
    task.put(b"a", (1,))
    task.save(ctx)
    store(ctx).commit()
    assert task.get(ctx, b"a") == (b"[1]", (1,))
    # A task built after this one (another owner of the partition, before a rebalance back)
    # wrote the key: the bytes differ from the cached ones, so they are decoded.
    store(ctx).apply(b"a", encode((2, 3)))
    assert task.get(ctx, b"a") == (b"[2, 3]", (2, 3))
