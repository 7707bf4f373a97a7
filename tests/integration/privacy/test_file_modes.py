"""Key material and state on disk are private: the real broker's leadflow.pii-keys segments."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from confluent_kafka import KafkaException

from leadflow.processors.events import Event, Kind
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import PII_KEYS, create_topics


def _modes(root: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_pii_key_segments_are_not_readable_by_other_users(kafka: Settings) -> None:
    # Issue 19 (LOW): the segments of leadflow.pii-keys were 0644 on disk. The session broker
    # was started by LocalKafka.start like `leadflow kafka start` does.
    create_topics(kafka)
    event = Event("m1", Kind.IDENTIFY, "ws-modes", 1, 1, lead_id="L-modes",
                  payload={"email": "ada@modes.example"})  # fmt: skip
    for attempt in range(40):  # partition leaders of freshly created topics take a moment
        vault = Vault(kafka.model_copy(update={"pii_encryption": True}))
        try:
            vault.seal([event])
            break
        except KafkaException:
            if attempt == 39:
                raise
            time.sleep(0.5)
        finally:
            vault.close()
    home = kafka.data_dir / "kafka"
    if not home.exists():  # LEADFLOW_KAFKA_BOOTSTRAP: not our broker, nothing to check
        return
    segments = [p for p in (home / "data").glob(f"{PII_KEYS.name}-*/*") if p.is_file()]
    assert any(p.suffix == ".log" for p in segments)
    modes = _modes(home)
    assert modes[home] == 0o700
    loose = {str(p.relative_to(home)): oct(m) for p, m in modes.items() if m & 0o077}
    assert loose == {}
