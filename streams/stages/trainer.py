"""The trainer stage: ``leadflow.training-examples`` -> ``leadflow.models``.

The trainer's live models are its store's values (one signed snapshot per workspace,
written at the end of every batch that learned something): they are committed with the
input offsets of the examples they learned, so a crash never forgets what was learned and
never learns an example twice. Every ``model.snapshot_every`` examples of a workspace it
also publishes that workspace's snapshot on the contract topic ``leadflow.models`` (key:
the workspace id), from the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from leadflow.processors import derived as d
from leadflow.processors.errors import LeadflowError
from leadflow.processors.model import ScoreModel, SnapshotError
from leadflow.processors.policy import Policy
from leadflow.schemas.codec import Codec
from leadflow.streams.engine.keys import state_key
from leadflow.streams.engine.stage import Record, Stage, TaskContext
from leadflow.streams.logs import get_logger
from leadflow.streams.topics import MODELS, TRAINING_EXAMPLES

log = get_logger(__name__)

STORE = "model"


@dataclass(frozen=True)
class TrainerDeps:
    """What every trainer task shares."""

    codec: Codec
    policy: Policy
    key: bytes  # signs snapshots (HMAC), verifies them before unpickling


class TrainerTask:
    """The online models of one partition of ``training-examples``.

    Examples are keyed by workspace, so a workspace's examples are all on one partition and
    one task owns its model at a time; each workspace's model learns only from its own
    examples, from the workspace's prior (``model.prior``).
    """

    def __init__(self, deps: TrainerDeps, ctx: TaskContext) -> None:
        self.deps = deps
        self.models: dict[str, ScoreModel] = {}
        for key, raw in ctx.items(STORE):
            model = self._restore(raw)
            if model is not None:
                self.models[key.decode()] = model
        self.learned: set[str] = set()

    def _restore(self, raw: bytes) -> ScoreModel | None:
        try:
            return ScoreModel.restore(raw, self.deps.key)
        except SnapshotError as exc:
            log.error("model.snapshot_rejected", reason=str(exc), action="training from the prior")
            return None

    def on_record(self, ctx: TaskContext, record: Record) -> None:
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
            health = model.health()
            log.info("model.snapshot", **health.as_log())
            if health.warnings:
                log.warning("model.health", **health.as_log())

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Keep what this batch learned, in the transaction that commits its examples."""
        for ws in sorted(self.learned):
            ctx.put(STORE, state_key(ws), self.models[ws].snapshot(self.deps.key))
        self.learned.clear()


def trainer_stage(deps: TrainerDeps) -> Stage:
    """The trainer stage over ``leadflow.training-examples``."""
    return Stage("trainer", TRAINING_EXAMPLES, (STORE,), lambda ctx: TrainerTask(deps, ctx))
