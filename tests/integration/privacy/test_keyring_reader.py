"""The keyring's reader, when its client stops delivering, is rebuilt where it stopped.

An assigned librdkafka consumer can stop fetching for good after a broker restart with
no error (librdkafka #5153): in session 18's crash-equivalence loop a collector's keyring
read nothing for 15 minutes while any new client read the records, so the collector sealed
nothing and answered every event with PII 503. The test stands in for that client with
one whose partitions are paused: it delivers nothing, raises nothing.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from leadflow.streams.pii.keyring import Keyring, KeyringError, key_record_key
from leadflow.streams.settings import Settings
from leadflow.streams.topics import PII_KEYS, create_topics
from tests.unit.recorded_log import Recorded


def _write_keys(settings: Settings, workspace: str, subjects: list[str]) -> None:
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for subject in subjects:
        key = key_record_key(workspace, subject, f"kid-{subject}")
        producer.produce(PII_KEYS.name, key=key, value=bytes(32))
    assert producer.flush(30) == 0


def test_a_reader_that_delivers_nothing_is_rebuilt_where_it_stopped(
    kafka: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadflow.streams.pii import keyring as module

    create_topics(kafka)
    recorded = Recorded()
    monkeypatch.setattr(module, "log", recorded)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    keyring = Keyring(kafka, timeout=3.0)
    try:
        _write_keys(kafka, workspace, ["a", "b"])
        keyring.refresh()
        assert keyring.state.current(workspace, "a") is not None
        stuck = keyring._consumer
        assert stuck is not None
        stuck.pause(stuck.assignment())  # from here on it delivers nothing, says nothing
        _write_keys(kafka, workspace, [f"s{n}" for n in range(8)])  # spread over partitions

        with pytest.raises(KeyringError, match="not read to its end"):
            keyring.refresh()
        [(event, fields)] = recorded.events("warning")
        assert event == "keyring.reader_rebuilt"
        assert fields["behind"]  # names each partition with where it stood and its end
        assert keyring._consumer is None  # the stuck client is gone

        # A new client, from where the old one stopped: the eight new records, not the
        # topic again from its start (which holds "a" and "b" and other tests' keys).
        assert keyring.refresh() == 8
        assert all(keyring.state.current(workspace, f"s{n}") for n in range(8))
        assert keyring._consumer is not None
        assert keyring._consumer is not stuck
    finally:
        keyring.close()
