"""``leadflow worker``: run the faust stream processors."""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, TopicPartition

from leadflow.processors.errors import PolicyError
from leadflow.streams.kafka_offsets import watermarks
from leadflow.streams.logs import get_logger
from leadflow.streams.private_files import write_private
from leadflow.streams.settings import Settings
from leadflow.streams.stall import owed
from leadflow.streams.topics import WORKER_INPUTS

if TYPE_CHECKING:
    from leadflow.streams.app import LeadflowApp

log = get_logger(__name__)


def model_key(settings: Settings) -> bytes:
    """The snapshot-signing key: the configured secret, else one generated once per data dir."""
    if settings.model_signing_key is not None:
        return settings.model_signing_key.get_secret_value().encode()
    path: Path = settings.data_dir / "model.key"
    if not path.exists():
        write_private(path, secrets.token_bytes(32))  # 0600 from its first byte
    return path.read_bytes()


# faust's consumer group is its app id (streams/app.py, APP_ID).
WORKER_GROUP = "leadflow"


# Written by a worker that stopped cleanly (exit 0), next to its local table stores.
CLEAN_STOP = "clean-stop"


def worker_lag(settings: Settings, *, markers: bool = False) -> int:
    """Records the worker has not committed yet on the topics it consumes.

    ``markers=True`` ignores exactly_once's trailing transaction markers (see
    :func:`~leadflow.streams.stall.owed`).
    """
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": WORKER_GROUP, "enable.auto.commit": False}
    )
    try:
        lag = 0
        for spec in WORKER_INPUTS:
            meta = consumer.list_topics(spec.name, timeout=10).topics[spec.name]
            partitions = [TopicPartition(spec.name, p) for p in meta.partitions]
            for committed in consumer.committed(partitions, timeout=10):
                _, high = watermarks(consumer, committed, time.monotonic() + 30)
                lag += owed(high, max(committed.offset, 0), markers=markers)
        return lag
    finally:
        consumer.close()


def build_app(settings: Settings) -> LeadflowApp:
    """The configured faust app (imported lazily: faust is slow to import).

    Raises:
        PolicyError: the policy or bounds file cannot be read or is invalid (names file, line,
            field).
    """
    from leadflow.processors.bounds_load import load_bounds
    from leadflow.processors.policy_load import load_default_policy, parse_policy
    from leadflow.schemas.codec import codec_from_settings
    from leadflow.streams.app import LeadflowApp

    path = settings.policy_file
    if path is None:
        policy = load_default_policy()
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read LEADFLOW_POLICY_FILE {path}: {exc.strerror}") from None
        policy = parse_policy(text, str(path))
    bounds = load_bounds(settings.bounds_file)
    return LeadflowApp(settings, codec_from_settings(settings), policy, model_key(settings), bounds)


def discard_after_unclean_stop(tables: Path, marker: Path) -> bool:
    """Delete the local table stores unless the last run stopped cleanly; say if it did.

    The local RocksDB files can hold writes the changelog never received (a kill -9
    between the two) or, under exactly_once, writes of a transaction that was aborted.
    faust recovers from the changelog only past the offset it recorded locally, so such
    writes would survive and mark events as seen that Kafka will deliver again. After an
    unclean stop the changelog is the only truth (Kafka Streams does the same under EOS).
    The marker is removed while the worker runs and written back on a clean exit.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "tables").mkdir()
        >>> discard_after_unclean_stop(root / "tables", root / "clean"), (root / "tables").exists()
        (True, False)
    """
    clean = marker.exists()
    marker.unlink(missing_ok=True)
    if clean or not tables.exists():
        return False
    shutil.rmtree(tables)
    return True
