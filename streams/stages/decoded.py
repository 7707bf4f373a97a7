"""A task's store read and written as decoded states, each encoded once per batch.

A lead or a device is read and written at each of its records (and a lead at each of its
fired deadlines), but only the last write of a batch reaches the changelog: the store keeps
one pending value per key (``streams/engine/stores.py``). So a write is kept as the state
and encoded when the batch ends (:meth:`DecodedStore.save`), and a read returns this
batch's state, or the stored bytes decoded through a bounded cache keyed by those bytes.

Both are exact because the state codec reads a state back as it was written, down to each
value's type (``tests/unit/processors/test_codec_equivalence.py``): a task holds the same
states whether it decoded them or kept them, in a long-running task as in one rebuilt from
the store after an abort, and the store and changelog get the bytes a put per write gave.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from leadflow.streams.engine.stage import TaskContext

S = TypeVar("S")


class DecodedStore(Generic[S]):
    """One store of a task as states of type ``S``.

    Example:
        >>> from leadflow.streams.engine.stores import PartitionStore
        >>> class Ctx:  # the two calls of a TaskContext this uses
        ...     store = PartitionStore()
        ...     def get(self, name, key): return self.store.get(key)
        ...     def put(self, name, key, value): self.store.put(key, value)
        >>> ctx = Ctx()
        >>> counts = DecodedStore("counts", lambda n: str(n).encode(), int, cache=16)
        >>> counts.put(b"a", 1); counts.put(b"a", 2)
        >>> counts.get(ctx, b"a"), ctx.store.pending
        ((2, 2), {})
        >>> [(key, raw) for key, raw, _ in counts.save(ctx)], ctx.store.pending
        ([(b'a', b'2')], {b'a': b'2'})
        >>> counts.get(ctx, b"a")
        (b'2', 2)
    """

    def __init__(
        self, name: str, encode: Callable[[S], bytes], decode: Callable[[bytes], S], cache: int
    ) -> None:
        self.name = name
        self._encode = encode
        self._decode = decode
        self._size = cache
        self.unsaved: dict[bytes, S] = {}  # written in this batch, put by ``save``
        self._cache: OrderedDict[bytes, tuple[bytes, S]] = OrderedDict()

    def get(self, ctx: TaskContext, key: bytes) -> tuple[bytes | S, S] | None:
        """What was written for ``key`` and its state; ``None`` if nothing was.

        What was written is this batch's state (the object itself) if it has one, else the
        stored bytes: callers that keep something about a state (the lead stage's quiet
        checks) tell by it whether the state was written again since.
        """
        if key in self.unsaved:
            state = self.unsaved[key]
            return state, state
        raw = ctx.get(self.name, key)
        if raw is None:
            return None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == raw:
            self._cache.move_to_end(key)
            return raw, hit[1]
        state = self._decode(raw)
        self._remember(key, raw, state)
        return raw, state

    def put(self, key: bytes, state: S) -> None:
        """Write ``state`` in this batch (encoded and put by :meth:`save`)."""
        self.unsaved[key] = state

    def save(self, ctx: TaskContext) -> list[tuple[bytes, bytes, S]]:
        """Put this batch's states, one encode each; return them as (key, bytes, state)."""
        saved = []
        for key, state in self.unsaved.items():
            raw = self._encode(state)
            ctx.put(self.name, key, raw)
            self._remember(key, raw, state)
            saved.append((key, raw, state))
        self.unsaved.clear()
        return saved

    def _remember(self, key: bytes, raw: bytes, state: S) -> None:
        self._cache[key] = (raw, state)
        self._cache.move_to_end(key)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)


__all__ = ["DecodedStore"]
