"""The bench harness runs on tiny sizes and records the rows docs/benchmarks.md is built from.

Each module runs as ``make bench`` runs it (its own process: it opens its own chdb), so a
change to the reports, the processors or the synthetic data that breaks the harness fails
here and not after ten minutes of ``make bench``. Nothing here checks a timing.
"""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run_module(name: str, out: Path, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_analytics_times_every_report_next_to_the_scan(tmp_path: Path) -> None:
    from leadflow.sinks.reports import MODELS

    rows = run_module("analytics", tmp_path / "rows.jsonl", "--touches", "10000", "--repeat", "1")
    names = [str(r["name"]) for r in rows]
    assert [n for n in names if n.startswith("attribution")] == [
        *(f"attribution {m} (sql)" for m in MODELS),
        *(f"attribution markov order {k} (sql)" for k in (2, 3, 4)),
    ]
    assert sum(n.startswith("velocity") for n in names) == 3
    assert sum(n.startswith("paths:") for n in names) == 2  # full build, refresh
    for row in rows[:-1]:  # every report carries the scan baseline and its ratio
        assert row["baseline"] is not None
        assert row["ratio"] == row["value"] / row["baseline"]
        assert "8 result rows" in str(row["notes"]) or row["name"].startswith(("velocity", "paths"))
    assert rows[-1]["name"] == "baseline: plain scan (count + sum over events)"


def test_processors_measure_steps_and_state_per_lead(tmp_path: Path) -> None:
    rows = {str(r["name"]): r for r in run_module("processors", tmp_path / "rows.jsonl",
                                                  "--people", "150")}  # fmt: skip
    state = rows["lead state, mean"]
    extra = state["extra"]
    assert isinstance(extra, dict)
    assert extra["leads"] > 0
    assert 0 < state["value"] <= extra["max"]
    assert state["met"] == (state["value"] < 2048)
    assert rows["lead step (decode, state, step+score, encode)"]["value"] > 0


def test_txn_floor_gets_every_record_through_both_hops(tmp_path: Path) -> None:
    rows = run_module("txn_floor", tmp_path / "rows.jsonl", "--rate", "100", "--seconds", "2",
                      "--warmup-seconds", "1", "--quick",
                      "--width", "1", "--width", "24")  # fmt: skip
    assert [str(r["name"]) for r in rows] == [
        "floor: ack -> out of two empty transactional hops p50, 100 records/s",
        "floor: ack -> out of two empty transactional hops p99, 100 records/s",
        "floor: one transaction writing 1 partition p50",
        "floor: one transaction writing 24 partitions p50",
        "floor: each partition a transaction writes adds",
    ]
    p50, p99 = (float(r["value"]) for r in rows[:2])
    assert 0 < p50 <= p99
    # 200 records sent at 100/s in the measured phase: every one acknowledged came out.
    assert "200 records at 100/s" in str(rows[0]["notes"])
    assert "200 seen out" in str(rows[0]["notes"])
    # Each width committed its transactions; the slope is theirs (two sizes: a line).
    one, wide, per = (float(r["value"]) for r in rows[2:])
    assert one > 0
    assert wide > 0
    assert per == pytest.approx((wide - one) / 23 * 1000)


@pytest.mark.parametrize("name", ["common", "markers", "pipeline", "txn_floor"])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert doctest.testmod(module).failed == 0


def test_markers_count_each_transactions_partitions(base_settings: Any, tmp_path: Path) -> None:
    # bench.pipeline's "partitions written per worker transaction" reads the markers in the
    # log: three transactions of one record on each of two partitions, each sending a
    # group's offsets, write two markers each on the topic and one on __consumer_offsets.
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from bench import markers
    from leadflow.streams.local_kafka import scratch_broker

    with scratch_broker(base_settings, tmp_path / "kafka") as (_, settings):
        config = settings.kafka_client_config()
        admin = AdminClient(config)
        for future in admin.create_topics([NewTopic("m", 2, 1), NewTopic("plain", 1, 1)]).values():
            future.result(30)
        plain = Producer({**config, "acks": "all"})
        plain.produce("plain", value=b"no marker")
        plain.produce("plain", value=b"", headers=[("leadflow.heartbeat", b"1")])
        assert plain.flush(30) == 0
        group = Consumer({**config, "group.id": "g"})
        producer = Producer({**config, "transactional.id": "markers-test"})
        producer.init_transactions(30)
        for n in range(3):
            producer.begin_transaction()
            for partition in (0, 1):
                producer.produce("m", value=b"x", partition=partition)
            if n == 0:  # a promise record of leadflow's: a data record to Kafka
                producer.produce("m", value=b"{}", partition=0,
                                 headers=[("leadflow.marker", b"identity")])  # fmt: skip
            offsets = [TopicPartition("plain", 0, n + 1)]
            producer.send_offsets_to_transaction(offsets, group.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            if n == 1:
                since = markers.ends(settings)  # a phase: the third transaction alone
        group.close()
        counts = markers.count(settings, timeout=60)
        phase = markers.count(settings, timeout=60, since=since)
        first_two = markers.count(settings, timeout=60, until=since)
    by_topic = counts.markers
    assert {t: n for t, n in by_topic.items() if n} == {"m": 6, markers.OFFSETS_TOPIC: 3}
    assert counts.control == {("m", "identity"): 1, ("plain", "heartbeat"): 1}
    assert counts.records["m"] == 7
    assert counts.records["plain"] == 2
    total, parts = markers.per_transaction(by_topic)
    assert (total, parts) == (3.0, {"m": 2.0, markers.OFFSETS_TOPIC: 1.0})
    assert {t: n for t, n in phase.markers.items() if n} == {"m": 2, markers.OFFSETS_TOPIC: 1}
    assert phase.records.get("m") == 2
    assert "plain" not in phase.records
    assert phase.control == {}
    assert {t: n for t, n in first_two.markers.items() if n} == {
        "m": 4,
        markers.OFFSETS_TOPIC: 2,
    }
    assert first_two.records["m"] == 5
    assert first_two.control[("m", "identity")] == 1
