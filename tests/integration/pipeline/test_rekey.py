"""Issue 19, existing data: an event log keyed by plain ids, re-keyed, rebuilds the same state.

Records of ``leadflow.events`` written before keys carried the workspace are keyed by the
device or lead id (``Event.person_id``); today's worker and projector dead-letter them as
``wrong_key``. ``leadflow replay rekey`` copies them with their person keys.

- ``test_rekey_copies_with_person_keys_once``: on the session broker (four partitions), an
  old-keyed topic shared by two workspaces with the same ids is re-keyed: a dry run writes
  nothing; the copy keeps value bytes, headers and each person's order, puts every record
  on the partition the collector's producer puts that person key on, dead-letters what it
  cannot copy with its reason, skips heartbeats; a second run copies nothing; a third run
  copies only what was appended since; a target written by someone else is refused.
- ``test_documented_rebuild_derives_what_new_keys_derive``: the operator steps of
  docs/operations.md ("Records keyed before the workspace") on a broker of its own whose
  ``leadflow.events`` holds the old keys and today's worker has refused them all
  (``wrong_key``): rekey into ``leadflow.events.rekeyed``, delete ``leadflow.events``, the
  worker's topics and its group, ``leadflow topics create``, copy back, start a fresh
  worker, rebuild ClickHouse with ``leadflow replay``'s function. Another broker gets the
  same events with today's keys and the same steps from the worker on. The inbound logs
  are byte-identical, the worker dead-letters nothing, and both derive the same records
  (key and value, every output topic) and the same ClickHouse rows for both workspaces.
  One inbound partition, as in the crash-equivalence test: with several, the by-lead order
  follows the identity stage's timing (docs/architecture.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from leadflow.cli.main import cli
from leadflow.processors.events import Event, Kind
from leadflow.sinks.replay import replay
from leadflow.streams.control import is_control
from leadflow.streams.engine.kafka import WORKER_GROUP
from leadflow.streams.kafka_offsets import EndNotReached, read_to_end, topic_ends
from leadflow.streams.local_kafka import scratch_broker
from leadflow.streams.rekey import HEARTBEAT, RekeyError
from leadflow.streams.settings import Settings
from leadflow.streams.topics import (
    ALL_TOPICS,
    AUDIT,
    DLQ,
    EVENTS,
    PII_KEYS,
    TopicSpec,
    create_topics,
)
from tests.integration.pipeline.equivalence import read_topic

from .conftest import CODEC, send
from .test_tenant_isolation import OUTPUTS, clickhouse_rows, ev, records_of, run

pytestmark = pytest.mark.timeout(900)

U = uuid.uuid4().hex[:8]
A, B = f"rk-a-{U}", f"rk-b-{U}"
DEVICE, USER, LEAD = "shared-dev-1", "crm-4711", "1"  # both workspaces use them


def journey(ws: str) -> list[Event]:
    """A person on the shared device who becomes a lead and buys; a CRM lead "1"."""
    d = DEVICE
    return [
        ev(ws, "v1", Kind.VISIT, 0, anon=d, channel="paid_search", path="/pricing"),
        ev(ws, "v2", Kind.VISIT, 20, anon=d, channel="direct", path="/pricing"),
        ev(ws, "i1", Kind.IDENTIFY, 21, lead=LEAD, company="Acme", title="CTO"),
        ev(ws, "i2", Kind.IDENTIFY, 30, anon=d, lead=USER, company="Acme", title="VP Sales",
           company_size=400, email=f"ada@{ws}.example"),
        ev(ws, "f1", Kind.FORM_SUBMITTED, 31, anon=d, lead=USER, channel="direct",
           company="Acme", title="VP Sales", company_size=400, email=f"ada@{ws}.example"),
        ev(ws, "d1", Kind.DEMO_REQUESTED, 40, lead=USER, channel="direct"),
        ev(ws, "w1", Kind.DEAL_WON, 80, lead=USER, deal_id=f"D-{ws}", amount=12000.0,
           currency="USD"),
    ]  # fmt: skip


def events() -> list[Event]:
    a, b = journey(A), journey(B)
    return [e for pair in zip(b, a, strict=True) for e in pair]


def produce_old(settings: Settings, topic: str, items: list[Event]) -> None:
    """As the collector did before keys carried the workspace: keyed by the plain id."""
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for e in items:
        producer.produce(
            topic, key=e.person_id.encode(), value=CODEC.encode(e), headers=[("sdk", b"js")]
        )
    assert producer.flush(30) == 0


def produce_raw(
    settings: Settings, topic: str, key: bytes | None, value: bytes, headers: list[Any]
) -> None:
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def placed(settings: Settings, topic: str) -> list[tuple[int, bytes | None, bytes, list[Any]]]:
    """(partition, key, value, headers) of every committed record, partition by partition."""
    out = []
    for (_, partition), (low, high) in sorted(topic_ends(settings, [topic]).items()):
        if high <= low:
            continue
        consumer = Consumer(
            {**settings.kafka_client_config(), "group.id": f"rk-{uuid.uuid4()}",
             "isolation.level": "read_committed", "enable.partition.eof": True,
             "enable.auto.commit": False}
        )  # fmt: skip
        consumer.assign([TopicPartition(topic, partition, low)])
        pending: dict[tuple[str, int], int | None] = {(topic, partition): None}
        try:
            for m in read_to_end(consumer, pending, deadline=time.monotonic() + 60):
                out.append((partition, m.key(), m.value() or b"", list(m.headers() or [])))
        except EndNotReached:
            pass  # what was read in 60 s (as before the helper)
        finally:
            consumer.close()
    return out


def invoke(settings: Settings, home: Any, *args: str) -> Any:
    env = {
        "LEADFLOW_KAFKA_BOOTSTRAP": settings.bootstrap,
        "LEADFLOW_DATA_DIR": str(home),
        "LEADFLOW_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "LEADFLOW_LOG_FORMAT": "json",
        "LEADFLOW_LOG_LEVEL": "WARNING",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_rekey_copies_with_person_keys_once(kafka: Settings, tmp_path: Any) -> None:
    old, new = f"rk-old-{U}", f"rk-new-{U}"
    create_topics(kafka)
    create_topics(kafka, [TopicSpec(old, "plain id", "an old-keyed inbound log")])
    items = events()
    produce_old(kafka, old, items)
    nobody = Event(f"{A}-x1", Kind.VISIT, A, 1, 1, anonymous_id="someone")
    produce_raw(kafka, old, b"someone-else", CODEC.encode(nobody), [])  # wrong key
    produce_raw(kafka, old, b"dev", b"not avro", [])  # does not decode
    produce_raw(kafka, old, None, b"", [(HEARTBEAT, b"1")])  # a collector heartbeat
    dead_before = sum(h for _, h in topic_ends(kafka, [DLQ.name]).values())

    dry = invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", new, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would copy 14 re-keyed + 0 kept, 2 to dead-letter, 1 skipped" in dry.output
    assert topic_ends(kafka, [new]) == {}  # nothing written, not even the topic

    first = invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", new)
    assert first.exit_code == 0, first.output
    assert "copied 14 re-keyed + 0 kept, 2 dead-lettered, 1 skipped" in first.output
    counted = [" ".join(line.split()) for line in first.output.splitlines()]
    for line in ("rekeyed raw_id 14", "dead-lettered bad_magic 1",
                 "dead-lettered wrong_key 1", "skipped heartbeat 1"):  # fmt: skip
        assert line in counted, first.output

    # Same bytes and headers, person keys, each person's order, the collector's partitions.
    copied = placed(kafka, new)
    assert sorted(v for _, _, v, _ in copied) == sorted(CODEC.encode(e) for e in items)
    by_value = {CODEC.encode(e): e for e in items}
    for _, key, value, headers in copied:
        assert key == by_value[value].person_key.encode()
        assert headers == [("sdk", b"js")]
    reference = f"rk-ref-{U}"
    create_topics(kafka, [TopicSpec(reference, "person key", "as the collector writes")])
    producer = Producer({**kafka.kafka_client_config(), "acks": "all"})  # the collector's
    for e in items:
        producer.produce(reference, key=e.person_key.encode(), value=CODEC.encode(e))
    assert producer.flush(30) == 0
    where = {v: (p, k) for p, k, v, _ in placed(kafka, reference)}
    assert {v: (p, k) for p, k, v, _ in copied} == where
    for person in {e.person_key for e in items}:
        in_order = [CODEC.encode(e) for e in items if e.person_key == person]
        assert [v for _, k, v, _ in copied if k == person.encode()] == in_order

    # The dead letters name the re-key and the reason; `leadflow dlq show` lists them.
    shown = invoke(kafka, tmp_path, "dlq", "show", "--format", "json", "--limit", "100000")
    mine = [x for x in json.loads(shown.output) if x["source"].startswith(old)]
    assert sorted(x["reason"] for x in mine) == ["bad_magic", "wrong_key"]
    assert {x["by"] for x in mine} == {f"rekey:leadflow-rekey.{old}.{new}"}
    assert sum(h for _, h in topic_ends(kafka, [DLQ.name]).values()) > dead_before

    # Again: nothing more. Then only what was appended since.
    ends = topic_ends(kafka, [new])
    again = invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", new)
    assert "read 0 records" in again.output, again.output
    assert topic_ends(kafka, [new]) == ends
    later = [ev(A, "v9", Kind.VISIT, 90, anon=DEVICE, channel="direct", path="/")]
    produce_old(kafka, old, later)
    third = invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", new)
    assert "copied 1 re-keyed + 0 kept" in third.output, third.output
    assert len(placed(kafka, new)) == len(items) + 1

    # Records that retention removed between two runs are said, not skipped in silence.
    gone = [ev(A, f"g{i}", Kind.VISIT, 91 + i, anon=DEVICE, channel="direct", path="/")
            for i in range(3)]  # fmt: skip
    produce_old(kafka, old, gone)
    ends_old = topic_ends(kafka, [old])
    admin = AdminClient(kafka.kafka_client_config())
    deleted = admin.delete_records(
        [TopicPartition(t, p, high) for (t, p), (_low, high) in ends_old.items()]
    )
    for future in deleted.values():
        future.result(30)
    fourth = invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", new)
    assert "read 0 records" in fourth.output, fourth.output
    assert "not copied    expired            3" in fourth.output, fourth.output
    assert "3 records of" in fourth.stderr

    # A target that holds records this copy did not write is refused (no double copy).
    # (`leadflow` prints it as one `error:` line, exit 1.)
    with pytest.raises(RekeyError, match=f"{reference} already holds 14 records"):
        invoke(kafka, tmp_path, "replay", "rekey", "--from", old, "--to", reference)


@pytest.fixture(scope="module")
def two_brokers(
    kafka: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Settings]]:
    """(old-keyed, new-keyed): brokers of their own, one inbound partition each."""
    base = kafka.model_copy(update={"topic_partitions": 1})
    with (
        scratch_broker(base, tmp_path_factory.mktemp("rk-old") / "kafka") as (_, old),
        scratch_broker(base, tmp_path_factory.mktemp("rk-new") / "kafka") as (_, new),
    ):
        yield old, new


def delete_group_once_empty(admin: AdminClient, group: str, within: float = 60.0) -> None:
    """Delete a consumer group, repeating while a departed member's session lasts
    (docs/operations.md, step 3: "The group is not empty" for up to a session after a kill)."""
    deadline = time.monotonic() + within
    while True:
        try:
            admin.delete_consumer_groups([group], request_timeout=30)[group].result()
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NON_EMPTY_GROUP or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_documented_rebuild_derives_what_new_keys_derive(
    two_brokers: tuple[Settings, Settings],
    clickhouse_session: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    old, new = two_brokers
    home = tmp_path_factory.mktemp("rk-cli")
    items = events()

    # An installation from before the key change: its inbound log keyed by plain ids.
    create_topics(old)
    produce_old(old, EVENTS.name, items)
    produce_raw(old, EVENTS.name, b"dev", b"not avro", [])
    # Today's worker refuses every one of them (what the issue found).
    run(old, [[]], tmp_path_factory.mktemp("rk-worker-before"))
    refusals = [h.get("leadflow.reason", b"") for _, _, h in read_topic(old, DLQ.name)]
    assert sum(b"not by its person key" in r for r in refusals) == len(items), refusals
    dead_before = len(refusals)

    # docs/operations.md, "Records keyed before the workspace": the steps after stopping
    # the collector, the worker and the projector.
    step = invoke(old, home, "replay", "rekey", "--from", EVENTS.name, "--to",
                  f"{EVENTS.name}.rekeyed")  # fmt: skip
    assert step.exit_code == 0, step.output
    assert f"copied {len(items)} re-keyed + 0 kept, 1 dead-lettered" in step.output
    admin = AdminClient(old.kafka_client_config())
    kept = {EVENTS.name, DLQ.name, PII_KEYS.name, AUDIT.name}
    listed = set(admin.list_topics(timeout=10).topics)
    doomed = [
        EVENTS.name,
        *(t.name for t in ALL_TOPICS if t.name not in kept and t.name in listed),
        *(t for t in listed if t.startswith("leadflow-") and t.endswith("-changelog")),
    ]
    assert any(t.endswith("-changelog") for t in doomed)
    for future in admin.delete_topics(doomed, operation_timeout=30).values():
        future.result()
    delete_group_once_empty(admin, WORKER_GROUP)
    deadline = time.monotonic() + 60
    while set(doomed) & set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "topics not deleted"
        time.sleep(0.5)
    created = invoke(old, home, "topics", "create")
    assert created.exit_code == 0, created.output
    back = invoke(old, home, "replay", "rekey", "--from", f"{EVENTS.name}.rekeyed", "--to",
                  EVENTS.name)  # fmt: skip
    assert back.exit_code == 0, back.output
    assert f"copied 0 re-keyed + {len(items)} kept, 0 dead-lettered" in back.output

    # The same events as the collector writes them today, on a new installation.
    create_topics(new)
    send(new, items)

    # Byte for byte, heartbeats aside: the test's send() ends with one (the collector's own
    # kind), which the re-key skips and counts.
    def data(settings: Settings) -> list[tuple[bytes | None, bytes]]:
        return [(k, v) for k, v, h in read_topic(settings, EVENTS.name) if not is_control(h)]

    assert data(old) == data(new)

    run(old, [[]], tmp_path_factory.mktemp("rk-worker-after"))
    run(new, [[]], tmp_path_factory.mktemp("rk-worker-new"))
    for ws in (A, B):
        mine_old = [r for r in records_of(old, ws) if r[0] != DLQ.name]
        mine_new = records_of(new, ws)
        assert {t for t, _, _ in mine_new} >= {OUTPUTS[0].name, OUTPUTS[1].name}
        assert [r for r in mine_new if r[0] == DLQ.name] == []
        assert mine_old == mine_new  # every output topic, key and value

    # Rebuild ClickHouse from the log (`leadflow replay`), on both.
    dbs = {}
    try:
        for name, settings in (("old", old), ("new", new)):
            db = f"rk_{name}_{U}"
            dbs[name] = db
            replay(settings, clickhouse_session, db, max_seconds=300)
            dbs[f"{name}_r"] = f"{db}_r1"
        for ws in (A, B):
            rows = clickhouse_rows(clickhouse_session, dbs["old"], ws)
            assert rows["events"]
            assert rows == clickhouse_rows(clickhouse_session, dbs["new"], ws)
        # After the rebuild the only dead letter is the re-key's (the record that never
        # decoded): neither the worker nor the projector refused anything of the new log.
        letters = [h for _, _, h in read_topic(old, DLQ.name)][dead_before:]
        assert [(h.get("stage"), h.get("reason")) for h in letters] == [(b"rekey", b"bad_magic")]
    finally:
        for db in dbs.values():
            clickhouse_session.command(f"DROP DATABASE IF EXISTS {db}")
