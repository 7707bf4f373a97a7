"""The worker's runtime: the stages wired to the transactional engine, and its lag.

``leadflow worker`` (cli/worker.py) calls :func:`run_worker`. Why the worker runs on its
own engine and not on faust: docs/architecture.md, "Why the worker left faust".
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException

from leadflow.processors.bounds import BoundsTable
from leadflow.processors.bounds_load import load_bounds
from leadflow.processors.errors import LeadflowError, PolicyError
from leadflow.processors.model import ModelRegistry
from leadflow.processors.policy import Policy
from leadflow.processors.policy_load import load_default_policy, parse_policy
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.engine.kafka import WORKER_GROUP, WorkerId
from leadflow.streams.engine.loop import Engine
from leadflow.streams.engine.stage import Stage
from leadflow.streams.engine.stores import changelog_topic
from leadflow.streams.gc_tuning import tune_for_throughput
from leadflow.streams.kafka_offsets import group_lag
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.vault import Vault
from leadflow.streams.private_files import write_private
from leadflow.streams.settings import Settings
from leadflow.streams.stages.identity import identity_stage
from leadflow.streams.stages.lead import LeadDeps, lead_stage
from leadflow.streams.stages.trainer import TrainerDeps, trainer_stage
from leadflow.streams.topics import (
    EVENTS,
    EVENTS_BY_LEAD,
    TRAINING_EXAMPLES,
    WORKER_INPUTS,
    create_topics,
)

log = get_logger(__name__)


def model_key(settings: Settings) -> bytes:
    """The snapshot-signing key: the configured secret, else one generated once per data dir."""
    if settings.model_signing_key is not None:
        return settings.model_signing_key.get_secret_value().encode()
    path: Path = settings.data_dir / "model.key"
    if not path.exists():
        write_private(path, secrets.token_bytes(32))  # 0600 from its first byte
    return path.read_bytes()


def worker_lag(settings: Settings) -> int:
    """Records the worker has not committed yet on the topics it consumes.

    Every transaction ends with a marker no consumer commits past, so a partition whose
    committed offset is one short of its end owes nothing (:func:`~.stall.owed`).
    """
    return group_lag(settings, WORKER_GROUP, [spec.name for spec in WORKER_INPUTS])


def load_policy(settings: Settings) -> Policy:
    """The configured policy, or the packaged default.

    Raises:
        PolicyError: the policy file cannot be read or is invalid (names file, line, field).
    """
    path = settings.policy_file
    if path is None:
        return load_default_policy()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read LEADFLOW_POLICY_FILE {path}: {exc.strerror}") from None
    return parse_policy(text, str(path))


def partition_counts(settings: Settings, timeout: float = 120.0) -> tuple[int, int, int]:
    """How many partitions events, events.by-lead and training-examples have.

    The identity stage sends its markers to every by-lead partition; the lead stage waits
    for a promise from every inbound partition and every trainer, and sends its own to
    every trainer. Waits (a broker still starting) up to ``timeout``.
    """
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "leadflow-meta"})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                meta = consumer.list_topics(timeout=10).topics
                found = [meta.get(t.name) for t in (EVENTS, EVENTS_BY_LEAD, TRAINING_EXAMPLES)]
                if all(t is not None and t.error is None and t.partitions for t in found):
                    counts = [len(t.partitions) for t in found if t is not None]
                    return counts[0], counts[1], counts[2]
            except KafkaException as exc:
                log.warning("worker.metadata_unavailable", error=str(exc))
            if time.monotonic() > deadline:
                raise LeadflowError(
                    f"{EVENTS.name} / {EVENTS_BY_LEAD.name} / {TRAINING_EXAMPLES.name} not found"
                )
            time.sleep(1.0)
    finally:
        consumer.close()


def build_stages(
    settings: Settings,
    policy: Policy,
    bounds: BoundsTable,
    partitions: tuple[int, int, int] = (1, 1, 1),
) -> list[Stage]:
    """The worker's stages, wired to the codec, policy, bounds, model key and PII vault.

    ``partitions``: of ``leadflow.events``, ``leadflow.events.by-lead`` and
    ``leadflow.training-examples`` (:func:`partition_counts`). Leads are scored with the
    snapshots the trainers' model markers switch to on each by-lead partition (the prior
    before the first), never with what a reader of ``leadflow.models`` last saw.
    """
    codec = codec_from_settings(settings)
    key = model_key(settings)
    sources, targets, trainers = partitions
    vault = Vault(settings) if settings.pii_encryption else None
    priors = ModelRegistry(lambda _ws: policy)
    lead = LeadDeps(
        codec,
        policy,
        priors.get,
        vault,
        sources,
        settings.order_lateness_ms,
        trainers=trainers,
        model_key=key,
        switch_records=settings.model_switch_records,
        forwards=targets,  # every by-lead partition promises its forwards (issue 14)
    )
    return [
        identity_stage(
            codec,
            bounds,
            targets,
            settings.order_lateness_ms,
            settings.order_max_ahead_ms,
            settings.deadline_clock_step_ms,
        ),
        lead_stage(lead),
        trainer_stage(TrainerDeps(codec, policy, key, targets)),
    ]


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT; ``kill -USR1`` logs where it stands.

    Raises:
        WorkerIdError: another worker runs with the same data directory.
        PolicyError: the policy or bounds file cannot be read or is invalid.
    """
    # A bad policy or bounds file fails here, before anything is written.
    policy = load_policy(settings)
    bounds = load_bounds(settings.bounds_file)
    worker_id = WorkerId(settings.data_dir / "worker")
    partitions = partition_counts(settings)
    stages = build_stages(settings, policy, bounds, partitions)
    stores = sorted({name for stage in stages for name in stage.stores})
    create_topics(settings, [changelog_topic(name) for name in stores])
    log.info(
        "worker.order",
        sources=partitions[0],
        trainers=partitions[2],
        lateness_ms=settings.order_lateness_ms,
        max_ahead_ms=settings.order_max_ahead_ms,
        switch_records=settings.model_switch_records,
        clock_step_ms=settings.deadline_clock_step_ms,
    )
    engine = Engine(settings, stages, worker_id.value)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("worker.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: engine.dump())
    tune_for_throughput()
    try:
        engine.run(stop)
    finally:
        worker_id.release()
    log.info("worker.stopped", **engine.counts())
