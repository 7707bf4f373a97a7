"""What every bench module shares: result rows, quantiles, CPU time of a process, lag."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.collector import _cpu_seconds
from leadflow.streams.local_kafka import BrokerProperties, LocalKafka, scratch_broker
from leadflow.streams.settings import Settings

cpu_seconds = _cpu_seconds  # one helper for "CPU time of a process" (collector bench's)


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure, with the baseline it is read against and how to reproduce it.

    ``ratio`` is value / baseline when both are set (the headline on a noisy machine).
    """

    row: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    command: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """value / baseline (None without a baseline)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, inclusive method; NaN when empty.

    Example:
        >>> quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5)
        3.0
    """
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    index = min(max(round(q * 1000) - 1, 0), len(cuts) - 1)
    return float(cuts[index])


def jit_seconds(pid: int) -> float:
    """CPU seconds so far of a JVM's JIT compiler threads (``C1/C2 CompilerThread``).

    A scratch broker is a fresh JVM: in the first seconds of traffic its compiler threads
    took half of its CPU (measured: 1.5 of 3.9 s over a 5,000-event catch-up), a one-off
    that a long-running broker does not pay per event. The bench reports broker CPU with
    and without it.
    """
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    task = Path(f"/proc/{pid}/task")
    for thread in task.iterdir() if task.exists() else ():
        try:
            stat = (thread / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith(("C1 CompilerThre", "C2 CompilerThre")):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class LagProbe:
    """What consumer groups still owe on their topics, read cheaply and often.

    :func:`leadflow.streams.kafka_offsets.group_lag` opens a consumer per call and asks for
    each partition's end on its own: about 150 requests and 175 ms of broker CPU per reading
    of the pipeline (measured on the bench's broker), which a drain poll every half second
    added to the very broker CPU per event the bench reports. This keeps one admin client
    and asks for every end offset in one ListOffsets request and for each group's offsets
    in one request. A partition written in transactions ends with a marker no consumer
    commits past: one record short of the end owes nothing
    (:func:`leadflow.streams.stall.owed`).
    """

    def __init__(self, settings: Settings, groups: dict[str, Sequence[str]]) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(settings.kafka_client_config())
        metadata = self._admin.list_topics(timeout=10).topics
        self._groups = {
            group: [
                TopicPartition(name, p)
                for name in topics
                if name in metadata
                for p in sorted(metadata[name].partitions)
            ]
            for group, topics in groups.items()
        }

    def lag(self) -> int:
        """Records the groups have not committed yet, summed."""
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        from leadflow.streams.stall import owed

        wanted = {(tp.topic, tp.partition) for tps in self._groups.values() for tp in tps}
        try:
            ends = self._admin.list_offsets(
                {TopicPartition(t, p): OffsetSpec.latest() for t, p in wanted}, request_timeout=10
            )
            end = {(tp.topic, tp.partition): f.result().offset for tp, f in ends.items()}
            lag = 0
            for group, tps in self._groups.items():
                request = [ConsumerGroupTopicPartitions(group, tps)]
                result = self._admin.list_consumer_group_offsets(request, request_timeout=10)
                committed = {
                    (tp.topic, tp.partition): tp.offset
                    for tp in result[group].result().topic_partitions or []
                }
                for tp in tps:
                    key = (tp.topic, tp.partition)
                    lag += owed(end[key], max(committed.get(key, 0), 0), markers=True)
        except KafkaException:
            return -1  # not known now (a coordinator moving): not drained
        return lag


@contextmanager
def one_broker(
    base: Settings, home: Path, overrides: BrokerProperties = ()
) -> Iterator[tuple[list[LocalKafka], Settings]]:
    """A scratch broker for one scenario (512 MB heap), ``overrides`` over its properties."""
    with scratch_broker(base, home / "kafka", heap="512m", overrides=overrides) as (broker, s):
        yield [broker], s


def add_broker_config(p: argparse.ArgumentParser) -> None:
    """``--broker-config KEY=VALUE``: a broker property of every scratch broker, repeatable."""
    p.add_argument(
        "--broker-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_broker_property,
        help="set a property of the scratch brokers (repeatable), to measure a broker "
        "setting against the default in two runs, e.g. "
        "transaction.partition.verification.enable=false",
    )


def _broker_property(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` of ``--broker-config``.

    Example:
        >>> _broker_property("num.io.threads=8")
        ('num.io.threads', '8')
        >>> broker_note((_broker_property("a.b=false"),))
        ' --broker-config a.b=false'
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def broker_note(overrides: BrokerProperties) -> str:
    """The command-line words that reproduce ``overrides`` (empty without any)."""
    return "".join(f" --broker-config {k}={v}" for k, v in overrides)


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every bench module takes: ``--quick`` and ``--json PATH``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes for a smoke run (also BENCH_QUICK=1)",
    )
    p.add_argument("--json", type=Path, default=None, help="append result rows here (JSONL)")
    return p


def emit(figures: Sequence[Figure], path: Path | None) -> None:
    """Print the figures and append them to ``path`` as JSON lines."""
    for f in figures:
        ratio = f" ratio {f.ratio:.3f}" if f.ratio is not None else ""
        base = f" (baseline {f.baseline_name}: {f.baseline:.4g})" if f.baseline is not None else ""
        print(f"[{f.row}] {f.name}: {f.value:.4g} {f.unit}{base}{ratio} {f.notes}", flush=True)
    if path is not None:
        with path.open("a") as out:
            for f in figures:
                out.write(json.dumps({**asdict(f), "ratio": f.ratio}) + "\n")
    sys.stdout.flush()
