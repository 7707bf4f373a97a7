"""The newest model snapshot of each workspace on ``leadflow.models``, for every worker.

faust's GlobalTable would be the obvious tool, but it has open reports of workers that
never finish recovery or miss updates (faust #283; robinhood/faust #475, #541), and it hung
the worker here. The topic is compacted and small, so reading its last record per
partition with confluent-kafka is simple and dependable.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, TopicPartition

from leadflow.processors.model import ModelRegistry, ScoreModel, SnapshotError
from leadflow.processors.policy import Policy
from leadflow.streams.kafka_offsets import watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.settings import Settings
from leadflow.streams.topics import MODELS

log = get_logger(__name__)


def latest_snapshots(settings: Settings, timeout: float = 10.0) -> dict[bytes, bytes]:
    """The newest snapshot of every workspace on ``leadflow.models`` (key = workspace id).

    The topic is compacted and holds one small record per workspace (plus the uncompacted
    tail), so it is read from the start to the end offsets each time; the last record of
    a key wins (a key lives on one partition, so its records are in order).
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "leadflow-model-feed",  # never subscribes or commits; needed by the client
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    newest: dict[bytes, bytes] = {}
    try:
        metadata = consumer.list_topics(MODELS.name, timeout=timeout)
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition in metadata.topics[MODELS.name].partitions:
            low, high = watermarks(
                consumer, TopicPartition(MODELS.name, partition), time.monotonic() + timeout
            )
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(MODELS.name, partition, low))
        if not starts:
            return newest
        consumer.assign(starts)
        while ends:
            message = consumer.poll(timeout)
            if message is None:
                break  # the end offsets were read a moment ago: nothing more is coming
            if message.error() is not None:
                continue
            key, value = message.key(), message.value()
            if key is not None:
                if value is None:
                    newest.pop(key, None)  # a tombstone: the workspace's model was deleted
                else:
                    newest[key] = value
            partition, offset = message.partition(), message.offset()
            done = (
                partition is not None
                and offset is not None
                and offset + 1 >= ends.get(partition, 0)
            )
            if done and partition is not None:
                ends.pop(partition, None)
        return newest
    finally:
        consumer.close()


class ModelFeed:
    """Each workspace's newest published model, re-read in a background thread.

    A workspace with no published model scores with its prior (``model.prior``). A broker
    outage is logged and ridden out (the last good models stay in use); a snapshot that
    does not verify, or that names another workspace, is refused and logged, never loaded.
    """

    def __init__(self, settings: Settings, key: bytes, policy: Policy, every: float = 10.0) -> None:
        self.settings = settings
        self.key = key
        self.every = every
        self.priors = ModelRegistry(lambda _ws: policy)
        self._models: dict[str, ScoreModel] = {}
        self._raw: dict[bytes, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-feed", daemon=True)

    def start(self) -> None:
        """Start refreshing (the first read happens at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()

    def model(self, workspace_id: str) -> ScoreModel:
        """The model the workspace's leads are scored with now."""
        return self._models.get(workspace_id) or self.priors.get(workspace_id)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                snapshots = latest_snapshots(self.settings)
                if failing:
                    log.info("model_feed.recovered")
                failing = False
            except Exception as exc:  # any failure: keep the last models, retry
                if not failing:
                    log.warning("model_feed.unavailable", error=str(exc), action="retry")
                failing = True
                snapshots = {}
            for key, raw in snapshots.items():
                if self._raw.get(key) != raw:
                    self._raw[key] = raw
                    self._load(key.decode(errors="replace"), raw)
            self._stop.wait(self.every)

    def _load(self, workspace_id: str, raw: bytes) -> None:
        try:
            model = ScoreModel.restore(raw, self.key)
        except SnapshotError as exc:
            # Signed with another key: not this worker's to load; keep the last one.
            log.error("model.snapshot_rejected", workspace_id=workspace_id, reason=str(exc))
            return
        if model.workspace_id != workspace_id:
            log.error(
                "model.snapshot_rejected",
                workspace_id=workspace_id,
                reason=f"snapshot of workspace {model.workspace_id!r}",
            )
            return
        self._models[workspace_id] = model
