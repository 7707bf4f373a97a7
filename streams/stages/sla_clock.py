"""Clock steps in the engine: the identity stage sends them, the lead stage applies them.

The rule is :mod:`leadflow.processors.sla_clock`. Here:

- :class:`StepSource`: one identity task's last step per workspace (store ``received``, key
  ``step`` + workspace, so an aborted batch forgets its steps like its records);
- :class:`ClockSteps`: one worker process's steps of the open batch, sent as ONE control
  record per by-lead partition (header ``leadflow.marker`` = ``clock``) right before the
  identity markers of the same batch: a step reaches a by-lead partition before the
  promise that passes it, as a record does;
- :class:`PendingSteps`: one by-lead partition's steps waiting for their turn (store
  ``routing``, one key per workspace and day of the steps' values,
  ``["<workspace>","steps <day>"]``, written once per batch in which they changed). A step
  sorts right after the record with the same release key: record values start with the
  single-object marker ``0xC3``, a step's tiebreak with ``0xFF``.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from leadflow.processors.events import scoped_key
from leadflow.processors.ordering import ReleaseKey, ripe
from leadflow.processors.scoring import DAY_MS
from leadflow.processors.sla_clock import ClockStep, next_step
from leadflow.streams.control import MARKER, ControlRecordError
from leadflow.streams.engine.release import at_of, sort_bytes
from leadflow.streams.engine.stage import TaskContext
from leadflow.streams.topics import EVENTS_BY_LEAD

CLOCK_MARKER = "clock"  # identity -> events.by-lead: clock steps of one batch
STEP_TIEBREAK = b"\xff"  # after every record with the same key (values start with 0xC3)
_SOURCE_PREFIX = b"step "
_CHUNK = "steps "  # + the day of the values: a chunk of a partition's pending steps


def encode_steps(steps: list[ClockStep]) -> bytes:
    """The value of a clock record.

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> encode_steps([ClockStep("ws", 3600000, release_key(9, 8, "e"))])
        b'[["ws",3600000,9,8,"e",2]]'
    """
    rows = [[s.workspace, s.value, s.key.at, s.key.occurred_at, s.key.event_id, s.key.rank]
            for s in steps]  # fmt: skip
    return json.dumps(rows, separators=(",", ":")).encode()


@lru_cache(maxsize=64)
def decode_steps(value: bytes) -> tuple[ClockStep, ...]:
    """The steps :func:`encode_steps` wrote.

    Cached by the bytes: an identity batch sends the same clock record to every by-lead
    partition, and one worker's lead tasks would each decode their copy.

    Raises:
        ControlRecordError: not a list of steps.
    """
    try:
        rows = json.loads(value)
        steps = tuple(
            ClockStep(ws, int(v), ReleaseKey(int(at), int(occ), eid, int(rank)))
            for ws, v, at, occ, eid, rank in rows
        )
    except (ValueError, TypeError) as exc:
        raise ControlRecordError(f"clock record: {exc}") from None
    if not all(isinstance(s.workspace, str) and isinstance(s.key.event_id, str) for s in steps):
        raise ControlRecordError("clock record: workspace and event id must be strings")
    return steps


def step_sort(step: ClockStep) -> bytes:
    r"""Where a step waits in its partition's order: right after its record.

    Example:
        >>> from leadflow.processors.ordering import release_key
        >>> k = release_key(9, 8, "e")
        >>> sort_bytes(k, b"\xc3\x01z") < step_sort(ClockStep("ws", 0, k))
        True
    """
    return sort_bytes(step.key, STEP_TIEBREAK + step.workspace.encode())


class StepSource:
    """One identity task's steps: the last one sent per workspace, in the task's store."""

    def __init__(self, store: str, step_ms: int) -> None:
        self.store = store
        self.step_ms = step_ms
        self.last: dict[str, int | None] = {}

    def step(self, ctx: TaskContext, workspace: str, occurred_at: int) -> int | None:
        """The step an event of ``workspace`` sends, stored; ``None`` if none (or off)."""
        if self.step_ms <= 0:
            return None
        key = _SOURCE_PREFIX + workspace.encode()
        if workspace not in self.last:
            raw = ctx.get(self.store, key)
            self.last[workspace] = int(raw) if raw else None
        value = next_step(self.last[workspace], occurred_at, self.step_ms)
        if value is not None:
            self.last[workspace] = value
            ctx.put(self.store, key, str(value).encode())
        return value


@dataclass
class ClockSteps:
    """One worker process's clock steps of the open batch, per inbound partition."""

    targets: int  # partitions of events.by-lead: each gets every step
    pending: dict[int, list[ClockStep]] = field(default_factory=dict)

    def note(self, partition: int, step: ClockStep) -> None:
        """Inbound ``partition`` sends ``step`` in the open batch."""
        self.pending.setdefault(partition, []).append(step)

    def reset(self, partition: int) -> None:
        """A task was (re)built for ``partition``: what it noted was aborted."""
        self.pending.pop(partition, None)

    def flush(self, ctx: TaskContext) -> None:
        """Send the batch's steps to every by-lead partition (once, before the markers)."""
        steps = [s for _, noted in sorted(self.pending.items()) for s in noted]
        self.pending.clear()
        if not steps:
            return
        value = encode_steps(steps)
        for target in range(self.targets):
            ctx.send(EVENTS_BY_LEAD, None, value, {MARKER: CLOCK_MARKER.encode()},
                     partition=target)  # fmt: skip


class PendingSteps:
    """One by-lead partition's clock steps until the release order reaches them.

    Stored in chunks, one per workspace and day of the steps' values (key
    ``["<workspace>","steps <day>"]``, ``day = value // 86400000``), each written in the
    batches that added or applied one of its steps. Before session 9 a workspace's steps
    were one list (key ``["<workspace>","steps"]``) rewritten whole by every such batch;
    in a catch-up identity runs weeks of event time ahead of the release order, so that
    list held ~1,200 steps per partition and its rewrites were most of the bytes the worker
    put on its changelogs (docs/benchmarks.md, session 9). Such a list is still read, and
    the first batch rewrites it as chunks.
    """

    def __init__(self, ctx: TaskContext, store: str) -> None:
        self.store = store
        self._heap: list[tuple[bytes, str, int]] = []
        # (workspace, day) -> its pending steps, counted: a step may come twice. Plain dicts,
        # not Counters: a Counter's missing key goes through Python (``__missing__``), for
        # each of the ~2.7 steps per inbound event kept on the bench's input.
        self._chunks: dict[tuple[str, int], dict[tuple[bytes, int], int]] = {}
        self._moved: set[tuple[str, int]] = set()
        self._lists: list[bytes] = []  # keys of lists stored before chunks, deleted at flush
        # (workspace, value) -> the least sort of a pending step with it: every inbound
        # partition sends a step for the same hour, and after the first one the others
        # move no clock (see ``add``).
        self._least: dict[tuple[str, int], bytes] = {}
        self.redundant = 0  # steps not kept since the task was built: they would move nothing
        for key, raw in ctx.items(store):
            workspace, name = json.loads(key)
            if name == "steps" or name.startswith(_CHUNK):
                listed = name == "steps"
                if listed:
                    self._lists.append(key)
                for hex_sort, raw_value in json.loads(raw):
                    sort, value = bytes.fromhex(hex_sort), int(raw_value)
                    self._heap.append((sort, workspace, value))
                    least = self._least.get((workspace, value))
                    if least is None or sort < least:
                        self._least[workspace, value] = sort
                    chunk = self._count(sort, workspace, value)
                    if listed:
                        self._moved.add(chunk)  # rewritten as a chunk by the first flush
        heapq.heapify(self._heap)

    def _count(self, sort: bytes, workspace: str, value: int) -> tuple[str, int]:
        """Count a pending step in its chunk; return the chunk."""
        chunk = (workspace, value // DAY_MS)
        steps = self._chunks.get(chunk)
        if steps is None:
            steps = self._chunks[chunk] = {}
        steps[sort, value] = steps.get((sort, value), 0) + 1
        return chunk

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def head(self) -> bytes | None:
        """The sort bytes of the first pending step (the forward frontier gates it too)."""
        return self._heap[0][0] if self._heap else None

    @property
    def head_at(self) -> int | None:
        """The release time (``at``) of the first pending step; ``None`` if none."""
        return at_of(self._heap[0][0]) if self._heap else None

    def add(self, steps: Iterable[ClockStep], clock: Callable[[str], int]) -> None:
        """Keep the steps of a clock record that can move a clock (stored at the batch's end).

        ``clock``: a workspace's clock now. A step moves it only to a value above it, and
        clocks only move forward, so a step whose value the clock has reached, or that sorts
        after a pending step with the same value, would move nothing when its turn came: it
        is counted in :attr:`redundant`, not kept. Every inbound partition sends a step for
        each hour of event time to every by-lead partition, so most are such copies.
        """
        for step in steps:
            ws, value = step.workspace, step.value
            if value <= clock(ws):
                self.redundant += 1
                continue
            sort = step_sort(step)
            least = self._least.get((ws, value))
            if least is not None and least <= sort:
                self.redundant += 1
                continue
            self._least[ws, value] = sort
            heapq.heappush(self._heap, (sort, ws, value))
            self._moved.add(self._count(sort, ws, value))

    def pop_before(
        self, head: bytes | None, low: int | None, lateness_ms: int
    ) -> tuple[int, str, int] | None:
        """The next step (``at``, workspace, value) if ripe and before the record ``head``."""
        if not self._heap or low is None:
            return None
        sort, workspace, value = self._heap[0]
        at = at_of(sort)
        if (head is not None and head < sort) or not ripe(ReleaseKey(at, 0, ""), low, lateness_ms):
            return None
        heapq.heappop(self._heap)
        if self._least.get((workspace, value)) == sort:
            # Any other pending step with this value sorts after it: it moves nothing now.
            del self._least[workspace, value]
        chunk = (workspace, value // DAY_MS)
        steps = self._chunks[chunk]
        left = steps[sort, value] - 1
        if left:
            steps[sort, value] = left
        else:
            del steps[sort, value]
            if not steps:
                del self._chunks[chunk]
        self._moved.add(chunk)
        return at, workspace, value

    def flush(self, ctx: TaskContext) -> None:
        """Store the chunks whose steps changed (once per batch)."""
        for key in self._lists:
            ctx.put(self.store, key, None)
        self._lists.clear()
        for chunk in sorted(self._moved):
            steps = self._chunks.get(chunk)
            rows = sorted([s.hex(), v] for (s, v), n in (steps or {}).items() for _ in range(n))
            value = json.dumps(rows, separators=(",", ":")).encode() if rows else None
            workspace, day = chunk
            ctx.put(self.store, scoped_key(workspace, f"{_CHUNK}{day}").encode(), value)
        self._moved.clear()
