"""`leadflow dlq show|replay` on the real broker, with letters the real projector wrote."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from leadflow.cli.main import cli
from leadflow.processors.derived import MergeRequest
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Context, Event, Kind, lead_key
from leadflow.processors.lead import HOUR_MS
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy_load import load_default_policy
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.projector import Projector
from leadflow.streams.engine.loop import dlq_headers
from leadflow.streams.engine.stage import Record
from leadflow.streams.kafka_cluster import KafkaCluster
from leadflow.streams.kafka_health import cluster_health
from leadflow.streams.kafka_offsets import read_to_end
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.settings import Settings
from leadflow.streams.stages.lead import LeadDeps, LeadTask
from leadflow.streams.topics import DLQ, EVENTS, EVENTS_BY_LEAD, create_topics, worker_partition
from tests.unit.streams.test_engine import FakeContext


def _produce(settings: Settings, key: bytes | None, value: bytes) -> str:
    where: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append(f"{msg.topic()}:{msg.partition()}:{msg.offset()}")

    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    producer.produce(EVENTS.name, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    return where[0]


def _record_at(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"t-{uuid.uuid4()}",
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return message
    finally:
        consumer.close()
    raise AssertionError("record not found")


def _cli(settings: Settings, data_dir: Any) -> Callable[..., Any]:
    """``leadflow ARGS...`` against ``settings``' broker, as a user runs it (JSON logs)."""
    env = {
        "LEADFLOW_KAFKA_BOOTSTRAP": settings.bootstrap,
        "LEADFLOW_DATA_DIR": str(data_dir),
        "LEADFLOW_LOG_FORMAT": "json",
    }

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    return run


@pytest.fixture
def invoke(kafka: Settings, tmp_path: Any) -> Any:
    return _cli(kafka, tmp_path)


def test_show_and_replay_a_dead_letter(
    kafka: Settings, clickhouse_session: Any, clickhouse_db: str, invoke: Any
) -> None:
    create_topics(kafka)
    codec = codec_from_settings(kafka)
    anon = f"dlq-{uuid.uuid4().hex[:8]}"
    event = Event(
        f"{anon}-e1", Kind.VISIT, "ws-dlq", 1_767_225_600_000, 1_767_225_600_000,
        anonymous_id=anon, context=Context(path="/pricing"),
    )  # fmt: skip
    keyless = _produce(kafka, None, codec.encode(event))
    garbage = _produce(kafka, anon.encode(), b"garbage " + anon.encode())
    group = f"dlq-cli-{anon}"
    Projector(kafka, clickhouse_session, clickhouse_db, group_id=group).run_until_idle(120)

    shown = invoke("dlq", "show", "--format", "json", "--limit", "100000")
    assert shown.exit_code == 0, shown.output
    assert "warning" not in shown.stderr  # every partition read to its end
    letters = [x for x in json.loads(shown.output) if x["by"] == f"projector:{group}"]
    by_source = {x["source"]: x for x in letters}
    assert by_source[keyless]["reason"] == "missing_key"
    assert by_source[keyless]["key"] == ""
    assert by_source[garbage]["reason"] == "bad_magic"
    table = invoke("dlq", "show", "--reason", "missing_key")
    assert table.exit_code == 0
    assert "missing_key" in table.output
    assert "bad_magic" not in table.output

    # No key: the operator must say which; garbage: refused, it would bounce again.
    no_key = invoke("dlq", "replay", "--source", keyless)
    assert no_key.exit_code == 2
    assert "had no key: give --key" in no_key.output
    refused = invoke("dlq", "replay", "--source", garbage)
    assert refused.exit_code == 1
    assert "does not decode (bad_magic)" in refused.output
    bad = invoke("dlq", "replay", "--source", "nowhere:1:2")
    assert bad.exit_code == 2

    person = event.person_key  # ["ws-dlq","<device>"]: the key names the workspace too
    replayed = invoke("dlq", "replay", "--source", keyless, "--key", person)
    assert replayed.exit_code == 0, replayed.output
    # A new key on leadflow.events: where the collector would put it (librdkafka's CRC32).
    crc32 = zlib.crc32(person.encode()) % len(
        AdminClient({"bootstrap.servers": kafka.bootstrap})
        .list_topics(EVENTS.name, timeout=10)
        .topics[EVENTS.name]
        .partitions
    )
    assert f"replayed {keyless} to {EVENTS.name}:{crc32} with key '{person}'" in replayed.output

    # The replayed record: same bytes, now keyed; the projector takes it as a row.
    before = clickhouse_session.query(
        f"SELECT count() FROM {clickhouse_db}.v_events WHERE event_id = %(e)s",
        parameters={"e": event.event_id},
    ).result_rows[0][0]
    stats = Projector(kafka, clickhouse_session, clickhouse_db, group_id=group).run_until_idle(60)
    after = clickhouse_session.query(
        f"SELECT count() FROM {clickhouse_db}.v_events WHERE event_id = %(e)s",
        parameters={"e": event.event_id},
    ).result_rows[0][0]
    assert (before, after) == (0, 1)
    assert stats.dead_lettered == 0
    topic, partition, offset = keyless.split(":")
    original = _record_at(kafka, topic, int(partition), int(offset))
    assert original.key() is None


def test_show_reads_a_partition_whose_first_records_are_gone(
    base_settings: Settings, tmp_path: Any
) -> None:
    """Retention (or a deletion) moved the partition's start past offset 0: the read began at
    0, the consumer reset that out-of-range offset to the end, and ``dlq show`` listed none
    of the letters left, without a word (found in session 17: 0 of 2 listed)."""
    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        admin = AdminClient(settings.kafka_client_config())
        created = admin.create_topics([NewTopic(DLQ.name, num_partitions=1)])
        created[DLQ.name].result(timeout=60)
        producer = Producer({**settings.kafka_client_config(), "acks": "all"})
        for n in range(3):
            producer.produce(DLQ.name, key=f"k{n}".encode(), value=b"x", partition=0,
                             headers={"reason": b"bad_magic"})  # fmt: skip
        assert producer.flush(30) == 0
        deleted = admin.delete_records([TopicPartition(DLQ.name, 0, 1)])
        for future in deleted.values():
            future.result(timeout=30)
        shown = _cli(settings, tmp_path / "data")("dlq", "show", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert [x["dlq_offset"] for x in json.loads(shown.output)] == [1, 2]


@pytest.mark.slow
@pytest.mark.timeout(900)  # three JVM starts, a kill and a restart on two shared cores
def test_show_and_replay_name_a_partition_not_read_to_its_end(
    kafka_cluster: tuple[KafkaCluster, Settings], tmp_path: Any
) -> None:
    # The warning had a test only for staying silent (session 17). Here the dead-letter
    # topic has one copy of each partition and the node leading one of them is killed: that
    # partition gives neither records nor its end, and the read stops after 3 s idle.
    cluster, settings = kafka_cluster
    admin = AdminClient(settings.kafka_client_config())
    created = admin.create_topics([NewTopic(DLQ.name, num_partitions=3, replication_factor=1)])
    created[DLQ.name].result(timeout=60)
    del admin  # its threads would keep reconnecting to the node killed below
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for partition in range(3):
        producer.produce(
            DLQ.name,
            key=f"k{partition}".encode(),
            value=b"letter",
            partition=partition,
            headers=[
                ("leadflow.reason", b"ValueError: bad"),
                ("leadflow.source.topic", EVENTS.name.encode()),
                ("leadflow.source.partition", b"0"),
                ("leadflow.source.offset", str(partition).encode()),
            ],
        )
    assert producer.flush(60) == 0
    del producer
    leaders = {
        p.partition: p.leader for p in cluster_health(settings).partitions if p.topic == DLQ.name
    }
    victim = leaders[1]
    dead = sorted(p for p, leader in leaders.items() if leader == victim)
    invoke = _cli(settings, tmp_path)
    cluster.kill(victim)
    try:
        shown = invoke("dlq", "show", "--format", "json")
        assert shown.exit_code == 0, shown.output
        assert {x["dlq_partition"] for x in json.loads(shown.stdout)} == set(leaders) - set(dead)
        warning = f"warning: {DLQ.name} was not read whole, this may be incomplete: " + "; ".join(
            f"partition {p}: not read to its end in 3 s" for p in dead
        )
        assert warning in shown.stderr.splitlines(), shown.stderr

        # The letter is behind the dead node: "no dead letter" must not read as the truth.
        replay = invoke("dlq", "replay", "--source", f"{EVENTS.name}:0:1")
        assert replay.exit_code == 1
        assert f"no dead letter from {EVENTS.name}:0:1" in replay.output
        assert warning in replay.stderr.splitlines(), replay.stderr
    finally:
        cluster.restart(victim)
        cluster.wait_settled(settings)


def test_replay_parked_dead_letters_each_from_its_own_record(
    base_settings: Settings, tmp_path: Any
) -> None:
    """Two events parked while their lead waited for a merge fail when the transfer resumes
    it. Their letters named the transfer as their source, both the same: ``dlq replay
    --source`` could send back only the first (session 17). Now each names its own by-lead
    record, and replaying it sends that event back to its lead, which applies it at once."""
    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        create_topics(settings)
        codec = codec_from_settings(settings)
        policy = load_default_policy()
        deps = LeadDeps(codec, policy, lambda ws: ScoreModel(policy, ws), None, sources=1)
        ctx = FakeContext()
        task = LeadTask(deps, ctx)
        survivor, merged = lead_key("ws-a", "U"), lead_key("ws-a", "e-soft")
        t0 = 1_767_225_600_000

        def apply(obj: object, key: str, offset: int) -> None:
            record = Record(EVENTS_BY_LEAD.name, 0, offset, key.encode(), codec.encode(obj))
            task.on_record(ctx, record)

        def request(side: str) -> MergeRequest:
            return MergeRequest("m1", "ws-a", side, "e-soft", "U", t0 + 2 * HOUR_MS,
                                t0 + 2 * HOUR_MS, "identify", "cause")  # fmt: skip

        apply(Event("f1", Kind.FORM_SUBMITTED, "ws-a", t0 + HOUR_MS, t0 + HOUR_MS,
                    lead_id="e-soft", payload={"email": "ada@big.io"}), merged, 0)  # fmt: skip
        apply(request("U"), survivor, 1)
        promote = {"action": "promote"}
        bad = {
            n: Event(f"s{n}", Kind.STAGE_CHANGED, "ws-a", t0 + n * HOUR_MS, t0 + n * HOUR_MS,
                     lead_id="U", payload=promote)
            for n in (2, 3)
        }  # fmt: skip
        for n, event in bad.items():
            apply(event, survivor, n)
        apply(request("e-soft"), merged, 4)
        [transfer] = [v for topic, _k, v in ctx.sent if topic == EVENTS_BY_LEAD.name]
        apply(codec.decode(transfer), survivor, 5)  # resumes: s2 and s3 fail
        producer = Producer({**settings.kafka_client_config(), "acks": "all"})
        assert ctx.dead == []
        for (topic, key, value), headers in zip(ctx.sent, ctx.sent_headers, strict=True):
            if topic == DLQ.name:
                producer.produce(DLQ.name, key=key, value=value, headers=dict(headers or {}))
        assert producer.flush(30) == 0
        invoke = _cli(settings, tmp_path / "data")

        shown = invoke("dlq", "show", "--format", "json")
        assert shown.exit_code == 0, shown.output
        letters = {x["source"]: x for x in json.loads(shown.stdout)}
        sources = {n: f"{EVENTS_BY_LEAD.name}:0:{n}" for n in bad}
        assert set(letters) == set(sources.values())
        for n, source in sources.items():
            assert letters[source]["parked"] == (
                f"event s{n}, parked for a merge, failed when "
                f"{EVENTS_BY_LEAD.name}:0:5 resumed its lead"
            )
        table = invoke("dlq", "show")
        assert "parked" in table.stdout
        assert "resumed its lead" in table.stdout

        for n in bad:
            replayed = invoke("dlq", "replay", "--source", sources[n])
            assert replayed.exit_code == 0, replayed.output
        back = _read_all(settings, EVENTS_BY_LEAD.name)
        letter_values = [v for topic, _k, v in ctx.sent if topic == DLQ.name]
        assert [(m.key(), m.value()) for m in back] == [
            (survivor.encode(), v) for v in letter_values
        ]
        assert [codec.decode(m.value()).event_id for m in back] == ["s2", "s3"]
        # The replayed records are the lead's own again (no release header: applied on
        # arrival, nothing waits now); still an action the funnel does not know, so each is
        # dead-lettered again, this time from its replayed record.
        for m in back:
            where = (str(m.topic()), int(m.partition() or 0), int(m.offset() or 0))
            task.on_record(ctx, Record(*where, m.key(), m.value() or b""))
        assert [(r.offset, r.value, str(e).split(":")[0]) for r, e in ctx.dead] == [
            (int(m.offset() or 0), m.value(), f"event s{n}") for m, n in zip(back, bad, strict=True)
        ]


def _read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic``, partition by partition."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"t-{uuid.uuid4()}",
         "enable.auto.commit": False, "enable.partition.eof": True}
    )  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        pending: dict[tuple[str, int], int | None] = {(topic, p): None for p in meta.partitions}
        found = list(read_to_end(consumer, pending, deadline=time.monotonic() + 30))
    finally:
        consumer.close()
    return sorted(found, key=lambda m: (m.partition(), m.offset()))


def test_show_and_replay_say_letters_behind_an_open_transaction(
    base_settings: Settings, tmp_path: Any
) -> None:
    """A ``read_committed`` read ends at the first record of a transaction still open (a
    worker mid-batch, a dead transactional producer until its transaction times out): the
    listing ended there without a word (session 17)."""
    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        admin = AdminClient(settings.kafka_client_config())
        created = admin.create_topics([NewTopic(DLQ.name, num_partitions=2)])
        created[DLQ.name].result(timeout=60)
        headers = {"reason": b"bad_magic", "source.topic": EVENTS.name.encode(),
                   "source.partition": b"0"}  # fmt: skip
        plain = Producer({**settings.kafka_client_config(), "acks": "all"})

        def letter(producer: Producer, partition: int, source: int) -> None:
            at = {**headers, "source.offset": str(source).encode()}
            producer.produce(DLQ.name, key=b"k", value=b"x", partition=partition, headers=at)
            assert producer.flush(30) == 0

        letter(plain, 0, 0)
        letter(plain, 1, 1)
        open_one = Producer({**settings.kafka_client_config(), "transactional.id": "t-open"})
        open_one.init_transactions(30)
        open_one.begin_transaction()
        letter(open_one, 0, 2)
        letter(open_one, 0, 3)
        letter(plain, 0, 4)  # committed, but behind the open transaction
        invoke = _cli(settings, tmp_path / "data")

        shown = invoke("dlq", "show", "--format", "json")
        assert shown.exit_code == 0, shown.output
        assert sorted(x["source"] for x in json.loads(shown.stdout)) == [
            f"{EVENTS.name}:0:0",
            f"{EVENTS.name}:0:1",
        ]
        warning = (
            f"warning: {DLQ.name} was read up to a transaction still open; what follows it is "
            "not listed: partition 0: up to 3 records from offset 1. They show once it commits"
        )
        assert warning in shown.stderr, shown.stderr
        assert "partition 1" not in shown.stderr
        replay = invoke("dlq", "replay", "--source", f"{EVENTS.name}:0:4")
        assert replay.exit_code == 1
        assert f"no dead letter from {EVENTS.name}:0:4" in replay.output
        assert warning in replay.stderr, replay.stderr

        open_one.commit_transaction(30)
        shown = invoke("dlq", "show", "--format", "json")
        assert shown.exit_code == 0, shown.output
        assert len(json.loads(shown.stdout)) == 5
        assert "warning" not in shown.stderr, shown.stderr


def test_replay_sends_a_letter_back_to_the_partition_its_writer_chose(
    kafka: Settings, invoke: Any
) -> None:
    """``dlq replay`` produced with librdkafka's default partitioner (CRC32), while the worker
    writes by-lead by Java's murmur2: a replayed by-lead record landed, for most keys, on
    another partition than its lead's state, where the lead would start over (session 18).
    With its own key it goes back to its own partition; with another key, where the topic's
    writer would put that key."""
    create_topics(kafka)
    codec = codec_from_settings(kafka)
    partitions = len(
        AdminClient({"bootstrap.servers": kafka.bootstrap})
        .list_topics(EVENTS_BY_LEAD.name, timeout=10)
        .topics[EVENTS_BY_LEAD.name]
        .partitions
    )
    assert partitions > 1

    def crc32_partition(key: bytes) -> int:  # librdkafka's consistent_random
        return zlib.crc32(key) % partitions

    def murmur2_partition(key: bytes) -> int:
        return worker_partition(key, partitions)

    run = uuid.uuid4().hex[:8]
    keys = [lead_key("ws-replay", f"{run}-{n}").encode() for n in range(200)]
    # Keys the two hashes place apart (most of them): the test cannot pass by chance.
    own, other = [k for k in keys if crc32_partition(k) != murmur2_partition(k)][:2]
    t0 = 1_767_225_600_000
    event = Event(f"{run}-e1", Kind.VISIT, "ws-replay", t0, t0, lead_id=own.decode())
    value = codec.encode(event)
    where: list[tuple[int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append((msg.partition(), msg.offset()))

    worker_like = Producer(
        {**kafka.kafka_client_config(), "acks": "all", "partitioner": "murmur2_random"}
    )
    worker_like.produce(EVENTS_BY_LEAD.name, key=own, value=value, on_delivery=delivered)
    assert worker_like.flush(30) == 0
    [(partition, offset)] = where
    assert partition == murmur2_partition(own)
    source = f"{EVENTS_BY_LEAD.name}:{partition}:{offset}"
    worker_like.produce(
        DLQ.name, key=own, value=value,
        headers=dlq_headers(LeadflowError("refused"), EVENTS_BY_LEAD.name, partition, offset),
    )  # fmt: skip
    assert worker_like.flush(30) == 0

    same = invoke("dlq", "replay", "--source", source)
    assert same.exit_code == 0, same.output
    assert f"to {EVENTS_BY_LEAD.name}:{partition} with key" in same.output
    rekeyed = invoke("dlq", "replay", "--source", source, "--key", other.decode())
    assert rekeyed.exit_code == 0, rekeyed.output
    assert f"to {EVENTS_BY_LEAD.name}:{murmur2_partition(other)} with key" in rekeyed.output

    found = {
        (m.key(), m.partition())
        for m in _read_all(kafka, EVENTS_BY_LEAD.name)
        if m.value() == value and (m.partition(), m.offset()) != (partition, offset)
    }
    assert found == {(own, partition), (other, murmur2_partition(other))}
