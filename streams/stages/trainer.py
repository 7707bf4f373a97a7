"""The trainer stage: ``leadflow.training-examples`` -> ``leadflow.models``.

The trainer's live models are its store's values (one signed snapshot per workspace,
written at the end of every batch that learned something): they are committed with the
input offsets of the examples they learned, so a crash never forgets what was learned and
never learns an example twice. Every ``model.snapshot_every`` examples of a workspace it
also publishes that workspace's snapshot on the contract topic ``leadflow.models`` (key:
the workspace id), from the same transaction.

**In the order of the log** (with ``sources > 0``, the worker; ``processors/ordering.py``,
"the model switch"). Examples come from every by-lead partition, interleaved by timing, so
they wait in a release buffer (store ``examples``) and are learnt in ``(position, example
bytes)`` order once every by-lead partition promised past them (the lead stage's markers
on this topic). What a snapshot holds is then a function of the log. With each snapshot it sends
a *model marker* to every by-lead partition (the snapshot, and the position
``K + delta`` it takes over at, ``K`` the position of the example it was taken after), and
at the end of a batch in which its low watermark ``W`` moved, its promise "every switch
below ``W + delta`` is sent" (marker ``trainer``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from leadflow.processors import derived as d
from leadflow.processors.errors import LeadflowError
from leadflow.processors.model import ScoreModel, SnapshotError
from leadflow.processors.ordering import (
    DEFAULT_SWITCH_DELAY_MS,
    WatermarkViolation,
    switch_position,
)
from leadflow.processors.policy import Policy
from leadflow.schemas.codec import Codec
from leadflow.streams.control import (
    LEAD_MARKER,
    MARKER,
    MODEL_MARKER,
    POSITION,
    SWITCH,
    TRAINER_MARKER,
    VERSION,
    int_header,
    take_marker,
)
from leadflow.streams.engine.keys import state_key
from leadflow.streams.engine.release import Duplicates, Held, StoredRelease, at_of, position_sort
from leadflow.streams.engine.stage import Record, Stage, TaskContext
from leadflow.streams.logs import get_logger
from leadflow.streams.stages.identity import Markers
from leadflow.streams.topics import EVENTS_BY_LEAD, MODELS, TRAINING_EXAMPLES

log = get_logger(__name__)

STORE = "model"
EXAMPLES = "examples"  # examples waiting for their turn, and the lead partitions' promises
# Their own names: the lead stage's ``watermark_violations`` and ``release_duplicates``
# share worker.progress with them.
WATERMARK_VIOLATIONS = "trainer_watermark_violations"
DUPLICATES = "trainer_duplicates"
# The last examples learnt, in store ``examples``: key LEARNT + position + digest of the
# example's bytes, value its offset. A byte-identical example written again below the
# promise is then known for what it is (a duplicate, counted), not taken for a late one.
LEARNT = b"l"
KEEP_LEARNT = 1024  # per partition of training-examples


@dataclass(frozen=True)
class TrainerDeps:
    """What every trainer task shares."""

    codec: Codec
    policy: Policy
    key: bytes  # signs snapshots (HMAC), verifies them before unpickling
    sources: int = 0  # partitions of events.by-lead; 0: learn on arrival, no model markers
    switch_delay_ms: int = DEFAULT_SWITCH_DELAY_MS  # delta
    # What the process's trainer tasks count (worker.progress): examples below a promise,
    # examples written twice that waited once.
    counts: Counter[str] = field(default_factory=Counter, compare=False)
    duplicates: Duplicates = field(default_factory=Duplicates, compare=False)

    def counters(self) -> dict[str, int]:
        """The trainer tasks' counts, for ``worker.progress``."""
        return {WATERMARK_VIOLATIONS: 0, **self.counts, DUPLICATES: self.duplicates.count}


def learnt_key(at: int, value: bytes) -> bytes:
    """The store key that notes the example ``value`` at position ``at`` as learnt.

    Example:
        >>> learnt_key(5, b"x") == learnt_key(5, b"x") != learnt_key(5, b"y")
        True
        >>> learnt_key(4, b"z") < learnt_key(5, b"a")  # oldest first
        True
    """
    return LEARNT + position_sort(at, hashlib.blake2b(value, digest_size=16).digest())


class TrainerTask:
    """The online models of one partition of ``training-examples``.

    Examples are keyed by workspace, so a workspace's examples are all on one partition and
    one task owns its model at a time; each workspace's model learns only from its own
    examples, from the workspace's prior (``model.prior``).
    """

    def __init__(self, deps: TrainerDeps, ctx: TaskContext, markers: Markers | None = None) -> None:
        self.deps = deps
        # The process's switch promises (one marker per by-lead partition per batch).
        self.markers = markers or Markers(deps.sources, EVENTS_BY_LEAD, TRAINER_MARKER)
        self.models: dict[str, ScoreModel] = {}
        for key, raw in ctx.items(STORE):
            model = self._restore(raw)
            if model is not None:
                self.models[key.decode()] = model
        self.learned: set[str] = set()
        # Learnt in (position, bytes) order; kept sorted by key, the oldest first.
        self._learnt = sorted(key for key, _ in ctx.items(EXAMPLES, LEARNT))
        self.release = StoredRelease(
            ctx, EXAMPLES, max(deps.sources, 1), 0, duplicates=deps.duplicates
        )
        if deps.sources:
            low = self.release.low
            committed = None if low is None else switch_position(low, deps.switch_delay_ms)
            self.markers.reset(ctx.partition, committed)

    def _restore(self, raw: bytes) -> ScoreModel | None:
        try:
            return ScoreModel.restore(raw, self.deps.key)
        except SnapshotError as exc:
            log.error("model.snapshot_rejected", reason=str(exc), action="training from the prior")
            return None

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Take a lead partition's promise or an example; learn every ripe example."""
        if not self.deps.sources:
            self._learn(ctx, record, None)
            return
        if MARKER in record.headers:
            self._take_marker(ctx, record)
        elif POSITION in record.headers:
            try:
                at = int_header(record.headers, POSITION)
                assert at is not None
                sort = position_sort(at, record.value)
                late = self.release.late(sort)
                if late is not None:
                    learnt = ctx.get(EXAMPLES, learnt_key(at, record.value))
                    if learnt is None:
                        raise late
                    # Learnt already: the same bytes written again (a restarted worker's
                    # rewrite, or a transaction whose commit markers a broker lost and a
                    # later one committed; docs/operations.md). Counted and logged, once.
                    self.deps.duplicates.note(EXAMPLES, ctx.partition, record.offset,
                                              int(learnt), at)  # fmt: skip
                else:
                    # False: written twice, waiting once already (counted and logged in add).
                    held = Held(record.key or b"", record.value, record.offset)
                    self.release.add(ctx, sort, held)
            except WatermarkViolation as exc:
                # Every lead partition promised past it, so it would be learnt at once, out
                # of order, and it is none of the last KEEP_LEARNT examples learnt.
                # Dead-lettered, not learnt: the DLQ keeps it for a look (the lead stage
                # keeps its late events instead: a lead's state needs them).
                self.deps.counts[WATERMARK_VIOLATIONS] += 1
                log.error("trainer.watermark_violation", partition=record.partition,
                          offset=record.offset, error=str(exc), action="dead-lettered",
                          total=self.deps.counts[WATERMARK_VIOLATIONS])  # fmt: skip
                ctx.dead_letter(record, exc)
            except LeadflowError as exc:
                ctx.dead_letter(record, exc)
        else:
            self._learn(ctx, record, None)  # written before the switch: learnt on arrival
        while (ripe := self.release.peek_ripe()) is not None:
            held = self.release.pop(ctx, ripe)
            example = Record(record.topic, record.partition, held.offset, held.key or None,
                             held.value)  # fmt: skip
            self._learn(ctx, example, at_of(ripe))
            self._remember(ctx, at_of(ripe), held)
        low = self.release.low
        if low is not None:
            self.markers.note(ctx.partition, switch_position(low, self.deps.switch_delay_ms))

    def _remember(self, ctx: TaskContext, at: int, held: Held) -> None:
        """Note an example as learnt; forget the oldest beyond ``KEEP_LEARNT``."""
        key = learnt_key(at, held.value)
        ctx.put(EXAMPLES, key, str(held.offset).encode())
        bisect.insort(self._learnt, key)
        while len(self._learnt) > KEEP_LEARNT:
            ctx.put(EXAMPLES, self._learnt.pop(0), None)

    def _take_marker(self, ctx: TaskContext, record: Record) -> None:
        take_marker(
            record.headers,
            record.value,
            {LEAD_MARKER: (self.release.promise, self.deps.sources)},
            reject=lambda exc: ctx.dead_letter(record, exc),
            who="trainer",
        )

    def _learn(self, ctx: TaskContext, record: Record, at: int | None) -> None:
        """Learn one labelled example; publish a snapshot every ``snapshot_every``."""
        try:
            example = self.deps.codec.decode(record.value)
            if not isinstance(example, d.TrainingExample):
                raise LeadflowError(f"{type(example).__name__} is not a TrainingExample")
            if record.key is not None and record.key != example.workspace_id.encode():
                raise LeadflowError(
                    f"example of workspace {example.workspace_id!r} under key {record.key!r}"
                )
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        ws = example.workspace_id
        model = self.models.get(ws)
        if model is None:
            model = self.models[ws] = ScoreModel(self.deps.policy, ws)
        model.learn(example.features, example.label)
        self.learned.add(ws)
        if model.n_learned % self.deps.policy.model.snapshot_every == 0:
            snapshot = model.snapshot(self.deps.key, trained_through=example.labelled_at)
            ctx.send(MODELS, ws.encode(), snapshot)
            if at is not None:
                self._send_switch(ctx, ws, model.n_learned, snapshot, at)
            health = model.health()
            log.info("model.snapshot", **health.as_log())
            if health.warnings:
                log.warning("model.health", **health.as_log())

    def _send_switch(
        self, ctx: TaskContext, ws: str, version: int, snapshot: bytes, at: int
    ) -> None:
        """The model marker: every by-lead partition scores with it from ``K + delta`` on."""
        headers = {
            MARKER: MODEL_MARKER.encode(),
            SWITCH: str(switch_position(at, self.deps.switch_delay_ms)).encode(),
            VERSION: str(version).encode(),
        }
        for target in range(self.deps.sources):
            ctx.send(EVENTS_BY_LEAD, ws.encode(), snapshot, headers, partition=target)

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Keep what this batch learned, with its examples' offsets; promise the switches.

        The promise to every by-lead partition: every switch below ``W + delta`` is sent.
        """
        for ws in sorted(self.learned):
            ctx.put(STORE, state_key(ws), self.models[ws].snapshot(self.deps.key))
        self.learned.clear()
        if not self.deps.sources:
            return
        self.release.flush(ctx)
        self.markers.flush(ctx)


def trainer_stage(deps: TrainerDeps) -> Stage:
    """The trainer stage over ``leadflow.training-examples``."""
    stores = (STORE, EXAMPLES) if deps.sources else (STORE,)
    markers = Markers(deps.sources, EVENTS_BY_LEAD, TRAINER_MARKER)  # one per process
    return Stage("trainer", TRAINING_EXAMPLES, stores, lambda ctx: TrainerTask(deps, ctx, markers),
                 counters=deps.counters)  # fmt: skip
