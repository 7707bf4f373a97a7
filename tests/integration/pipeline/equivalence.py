"""The crash-equivalence harness (issue 17): the whole pipeline over one fixed input, and
what it derived, in a form two runs can be compared in.

``run_pipeline(settings, home, feed, workers=1, faults=..., projector=True)`` starts the
collector, the worker(s) and the projector (``leadflow collector|worker|projector``, real
processes) against the Kafka ``settings`` points at (a fresh broker or cluster per run: the
harness never starts one, so a test may hand it a 3-node cluster), POSTs the feed to the
collector at a steady rate from a thread, fires each :class:`Fault` when that many inbound
messages have been acknowledged (traffic keeps flowing while a fault runs), waits until the
worker and projector groups have committed everything, stops the processes and reads back:

- every record of every topic the worker writes (read_committed, as a consumer sees it),
  by record id (``Outputs.topics``);
- every inbound record on ``leadflow.events`` and what the identity stores still buffer
  (events of devices never identified are held there, not forwarded: by design);
- the reports (``leadflow report ...``'s functions) over the projector's ClickHouse.

``Outputs.problems()`` checks one run on its own (nothing lost, duplicates byte-identical);
``Outputs.compare(other, exclude)`` lists every difference between two runs.

The feed is sent WITHOUT ``sentAt``: the collector's clock-skew correction
(``timestamp + received_at - sentAt``) would otherwise put the wall clock into every
``occurred_at`` and no two runs could agree. ``received_at`` itself (the collector's stamp)
differs between runs, and so do the PII envelopes the collector seals with per-run keys:
the cross-run comparison ignores ``received_at`` of forwarded inbound events and compares
sealed values as "sealed" (the same record carries the same envelope within a run).

    python -m tests.integration.pipeline.equivalence reports OUT FROM TO   # in a run's env
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from leadflow.demo.simulator.generator import Message, SimConfig, Simulation
from leadflow.demo.simulator.send import batches
from leadflow.processors.derived import LeadTransfer, MergeRequest
from leadflow.processors.events import Kind
from leadflow.processors.identity import decode_identity_state
from leadflow.processors.lead_state import decode_lead_state
from leadflow.processors.model import ScoreModel
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.projector import DEFAULT_GROUP, PROJECTED_TOPICS
from leadflow.streams.collector.app import keys_path
from leadflow.streams.collector.keys import KeyStore
from leadflow.streams.engine.kafka import WORKER_GROUP
from leadflow.streams.engine.stores import changelog_topic
from leadflow.streams.kafka_offsets import EndNotReached, group_lag, read_to_end, topic_watermarks
from leadflow.streams.local_kafka import free_port
from leadflow.streams.settings import Settings
from leadflow.streams.stall import EXIT_STALLED
from leadflow.streams.topics import (
    DLQ,
    EVENTS,
    EVENTS_BY_LEAD,
    IDENTITIES,
    LEAD_BECAME_MQL,
    LEAD_BECAME_SQL,
    LEAD_MERGED,
    LEAD_OWNER_ASSIGNED,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    MODELS,
    NURTURE_ACTIONS,
    SLA_BREACHED,
    TRAINING_EXAMPLES,
    WORKER_INPUTS,
    create_topics,
)

WORKSPACE = "equivalence"
ROOT = Path(__file__).resolve().parents[3]

# What the worker writes, in the order the comparison reports them.
DERIVED_TOPICS = (
    EVENTS_BY_LEAD.name,
    DLQ.name,
    LEAD_SCORED.name,
    LEAD_STAGE_CHANGED.name,
    LEAD_BECAME_MQL.name,
    LEAD_BECAME_SQL.name,
    LEAD_OWNER_ASSIGNED.name,
    SLA_BREACHED.name,
    NURTURE_ACTIONS.name,
    TRAINING_EXAMPLES.name,
    IDENTITIES.name,
    LEAD_MERGED.name,
    MODELS.name,
)
# The id field of each derived record type (the first one a record has).
ID_FIELDS = (
    "transition_id",
    "score_id",
    "breach_id",
    "action_id",
    "example_id",
    "assignment_id",
    "event_id",
    "merge_id",
)
# Fields that are the collector's per-run stamps, not derived: ignored across runs.
INPUT_STAMPS: Mapping[str, frozenset[str]] = {
    EVENTS_BY_LEAD.name: frozenset({"received_at"}),
    DLQ.name: frozenset({"received_at"}),
}
SEP = "\x1f"  # between the parts of a by-lead record id (event id, lead id)
_SEALED = re.compile(r"enc:v[0-9]+:[0-9a-f]{8,64}:[A-Za-z0-9_=-]+")


# -- the input --------------------------------------------------------------------------


@dataclass(frozen=True)
class Feed:
    """A fixed simulated input and the steady rate it is POSTed at.

    Attributes:
        people: simulated people (~8 messages each, with recycles and hand-offs).
        days: event-time span.
        seed: the simulation seed.
        rate: messages per second.
        batch: messages per POST.
        form_first: share of lead-magnet captures that submit the form with their email
            first (the simulator's ``form_first``): such a person's later identify merges
            two leads, so the feed has merges, forwards and transfers.
    """

    people: int = 250
    days: float = 60.0
    seed: int = 7
    rate: float = 40.0
    batch: int = 10
    form_first: float = 0.0

    def messages(self) -> list[Message]:
        """The messages, without ``sentAt`` (see the module doc)."""
        config = SimConfig(
            people=self.people, days=self.days, seed=self.seed, form_first=self.form_first
        )
        simulation = Simulation(config)
        return [{k: v for k, v in m.items() if k != "sentAt"} for m in simulation.messages()]

    def span(self) -> tuple[date, date]:
        """A report date range covering every event of the feed."""
        start = SimConfig(people=1, days=self.days, seed=self.seed).start.date()
        return start - timedelta(days=1), start + timedelta(days=int(self.days) + 400)


class Sender(threading.Thread):
    """POSTs the feed to the collector at a steady rate; retries a batch until it is acked.

    ``acked`` is how many messages the collector has acknowledged (they are in Kafka).
    """

    def __init__(self, url: str, write_key: str, feed: Feed) -> None:
        super().__init__(name="feed", daemon=True)
        self.url = url
        self.write_key = write_key
        self.feed = feed
        self.messages = feed.messages()
        self.acked = 0
        self.retries = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._send()
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.done.set()

    def _send(self) -> None:
        due = time.monotonic()
        with httpx.Client(base_url=self.url, auth=(self.write_key, ""), timeout=30.0) as client:
            for batch in batches(self.messages, max_messages=self.feed.batch):
                # Steady: after an outage the feed goes on at its rate, it does not catch up.
                due = max(due, time.monotonic()) + len(batch) / self.feed.rate
                if (pause := due - time.monotonic()) > 0:
                    time.sleep(pause)
                body = json.dumps({"batch": batch}).encode()
                delay = 0.2
                while True:
                    try:
                        response = client.post(
                            "/v1/batch", content=body, headers={"Content-Type": "application/json"}
                        )
                        if response.status_code < 300:
                            break
                        if response.status_code not in (429, 500, 502, 503, 504):
                            raise AssertionError(
                                f"collector answered {response.status_code}: {response.text[:500]}"
                            )
                    except httpx.TransportError:
                        pass
                    self.retries += 1
                    time.sleep(delay)
                    delay = min(delay * 2, 3.0)
                self.acked += len(batch)


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    """One ``leadflow <command>`` child with its own data dir; logs per start."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    home: Path
    ready_line: str | None = None
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # return codes of earlier lives
    stopped: bool = False  # stopped on purpose (not a crash)

    def start(self, wait: bool = True, timeout: float = 180.0) -> None:
        """Start a new life; with ``wait``, until its ready line is in the log."""
        self.stopped = False
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "leadflow", *self.args],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready(timeout)

    def ready(self) -> bool:
        """Whether the current life has logged its ready line."""
        return self.ready_line is None or (
            bool(self.logs) and f'"{self.ready_line}"'.encode() in self.logs[-1].read_bytes()
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None and not self.stopped:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
            )

    def kill(self) -> None:
        """kill -9: no shutdown, no final commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.exits.append(self.process.wait(30))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        self.stopped = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exits.append(self.process.wait(30))
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 3000) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)[-chars:]

    def log_lines(self, event: str) -> int:
        """How many JSON log lines named ``event`` every life wrote."""
        return sum(p.read_bytes().count(f'"{event}"'.encode()) for p in self.logs)


@dataclass
class Run:
    """A running pipeline, as a fault sees it."""

    settings: Settings
    home: Path
    collector: Proc
    workers: list[Proc]
    projector: Proc | None
    sender: Sender | None = None
    log: list[str] = field(default_factory=list)
    _names: list[str] = field(default_factory=list)  # every worker ever added (data dirs)

    def __post_init__(self) -> None:
        self._names = [w.name for w in self.workers]

    def note(self, text: str) -> None:
        acked = self.sender.acked if self.sender else 0
        self.log.append(f"{time.strftime('%H:%M:%S')} at {acked}: {text}")

    def worker_lag(self) -> int:
        return group_lag(self.settings, WORKER_GROUP, [t.name for t in WORKER_INPUTS])

    def projector_lag(self) -> int:
        return group_lag(self.settings, DEFAULT_GROUP, PROJECTED_TOPICS)

    def add_worker(self) -> Proc:
        """A new worker process for this run (not started), with its own data dir; stopped
        with the others at the end. Scaling the group down: ``stop()`` a worker and remove it
        from ``workers`` (a stopped worker left there fails the run's liveness check)."""
        proc = _worker_proc(self.settings, self.home, len(self._names))
        self._names.append(proc.name)
        self.workers.append(proc)
        return proc

    def supervise(self) -> None:
        """Restart a worker or projector that exited with 70 (it asks for a fresh process)."""
        for proc in (*self.workers, *([self.projector] if self.projector else [])):
            if proc.process is not None and proc.process.poll() == EXIT_STALLED:
                proc.exits.append(EXIT_STALLED)
                self.note(f"{proc.name} exited with 70: restarted, as a supervisor would")
                proc.start(wait=False)

    def check_alive(self) -> None:
        for proc in (self.collector, *self.workers, *([self.projector] if self.projector else [])):
            if proc.process is not None:
                proc.check_alive()


@dataclass(frozen=True)
class Fault:
    """Something done to a running pipeline once ``at`` inbound messages were acknowledged."""

    at: int
    name: str
    action: Callable[[Run], None]


# -- what a run derived -----------------------------------------------------------------


@dataclass
class Outputs:
    """What one run derived, and what it was fed."""

    home: Path
    fed: int
    inbound: dict[str, list[bytes]]  # event id -> its records on leadflow.events
    topics: dict[str, dict[str, list[bytes]]]  # topic -> record id -> values in log order
    fields: dict[str, dict[str, dict[str, Any]]]  # topic -> record id -> decoded, normalised
    buffered: set[str]  # event ids the identity stores still hold (devices never identified)
    not_for_leads: set[str]  # inbound events no lead gets (campaign costs: projected directly)
    dropped: int  # events the identity buffers dropped by their bound
    reports: dict[str, Any]
    log: list[str]

    def summary(self) -> str:
        """Counts per topic, for a ``counts_checked`` line."""
        parts = [
            f"{self.fed} fed",
            f"{len(self.inbound)} inbound ({len(self.not_for_leads)} campaign costs, "
            f"{len(self.buffered)} buffered)",
        ]
        for topic in DERIVED_TOPICS:
            ids = self.topics.get(topic, {})
            dups = sum(len(v) - 1 for v in ids.values())
            parts.append(f"{topic.removeprefix('leadflow.')} {len(ids)} ({dups} dup)")
        return ", ".join(parts)

    def problems(self) -> list[str]:
        """What is wrong within this run: losses, and re-emissions that are not identical."""
        out: list[str] = []
        if len(self.inbound) < self.fed:
            out.append(f"{self.fed} messages acknowledged, {len(self.inbound)} on leadflow.events")
        forwarded = {rid.split(SEP)[0] for rid in self.topics[EVENTS_BY_LEAD.name]}
        forwarded |= set(self.topics[DLQ.name])
        missing = set(self.inbound) - forwarded - self.buffered - self.not_for_leads
        if len(missing) > self.dropped:
            out.append(
                f"{len(missing)} inbound events neither on by-lead, the DLQ nor buffered "
                f"(identity buffers dropped {self.dropped}): e.g. {sorted(missing)[:5]}"
            )
        for topic, ids in self.topics.items():
            for rid, values in ids.items():
                distinct = len(set(values))
                if topic == EVENTS_BY_LEAD.name:
                    # One forwarded value per distinct inbound record (a collector retry
                    # writes the event again with another received_at), never more.
                    allowed = len(set(self.inbound.get(rid.split(SEP)[0], [])))
                    if distinct > max(allowed, 1):
                        out.append(f"{topic} {rid}: {distinct} different values")
                elif topic not in (DLQ.name, MODELS.name) and distinct > 1:
                    out.append(f"{topic} {rid}: {distinct} different values of one id")
        return out

    def compare(
        self, other: Outputs, exclude: Mapping[str, Iterable[str]] | None = None
    ) -> list[str]:
        """Every difference from ``other``: ids per topic, values, buffers, reports.

        Args:
            other: the run to compare with.
            exclude: topic -> fields not compared (what legitimately depends on timing);
                the collector's stamps (:data:`INPUT_STAMPS`) are never compared.
        """
        skip = {t: frozenset(INPUT_STAMPS.get(t, ())) | frozenset((exclude or {}).get(t, ()))
                for t in DERIVED_TOPICS}  # fmt: skip
        out: list[str] = []
        for topic in DERIVED_TOPICS:
            mine, theirs = self.fields.get(topic, {}), other.fields.get(topic, {})
            only_mine, only_theirs = set(mine) - set(theirs), set(theirs) - set(mine)
            if only_mine or only_theirs:
                out.append(
                    f"{topic}: {len(only_mine)} ids only here, {len(only_theirs)} only there "
                    f"(of {len(mine)}/{len(theirs)}): e.g. here {_few(only_mine, mine)}, "
                    f"there {_few(only_theirs, theirs)}"
                )
            differing: dict[str, int] = {}
            example: dict[str, str] = {}
            for rid in set(mine) & set(theirs):
                for name in sorted(set(mine[rid]) | set(theirs[rid])):
                    if name in skip[topic]:
                        continue
                    a, b = mine[rid].get(name), theirs[rid].get(name)
                    if a != b:
                        differing[name] = differing.get(name, 0) + 1
                        example.setdefault(name, f"{rid}: {a!r:.120} != {b!r:.120}")
            for name, count in sorted(differing.items()):
                out.append(
                    f"{topic}: field {name} differs in {count} records, e.g. {example[name]}"
                )
        if self.buffered != other.buffered:
            out.append(
                f"identity buffers: {len(self.buffered - other.buffered)} events only here, "
                f"{len(other.buffered - self.buffered)} only there"
            )
        # The ClickHouse event ids are checked by the cluster worker tests themselves
        # (tests/integration/cluster/conftest.check_against_clean), not here.
        for name in sorted((set(self.reports) | set(other.reports)) - {CLICKHOUSE_EVENT_IDS}):
            if self.reports.get(name) != other.reports.get(name):
                out.append(
                    f"report {name} differs: {json.dumps(self.reports.get(name))[:300]} != "
                    f"{json.dumps(other.reports.get(name))[:300]}"
                )
        return out


def _few(ids: set[str], fields: Mapping[str, Mapping[str, Any]], n: int = 3) -> list[str]:
    out = []
    for rid in sorted(ids)[:n]:
        record = fields.get(rid, {})
        what = record.get("type") or record.get("to_stage") or record.get("reason") or ""
        out.append(f"{rid}({record.get('lead_id', '')} {what})")
    return out


def _normalise(value: Any) -> Any:
    """A decoded record as plain data; sealed PII as the word "sealed".

    A merge transfer carries the absorbed lead's stored state as base64 bytes, with its
    contact sealed: compared decoded, so the per-run envelopes do not count.
    """
    if isinstance(value, LeadTransfer) and value.state:
        state = decode_lead_state(base64.b64decode(value.state))
        return {**_normalise(dataclasses.replace(value, state="")), "state": _normalise(state)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _normalise(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and _SEALED.fullmatch(value):
        return "sealed"
    if hasattr(value, "value") and type(value).__module__.startswith("leadflow"):
        return value.value  # enums
    return value


def _model_view(snapshot: bytes) -> dict[str, Any]:
    """What a snapshot holds, independent of how its pickle happens to be laid out."""
    model = ScoreModel.restore(snapshot, MODEL_SIGNING_KEY.encode())
    learnt = vars(model.estimator)
    return {
        **dataclasses.asdict(ScoreModel.peek(snapshot)),
        "bias": learnt.get("bias"),
        "weights": sorted(learnt.get("weights", {}).items()),
    }


def _record_id(topic: str, obj: Any, key: bytes | None, seen: dict[str, int]) -> str:
    if topic == MODELS.name:
        ws = (key or b"").decode()
        seen[ws] = seen.get(ws, 0) + 1
        return f"{ws}#{seen[ws]}"
    if topic == IDENTITIES.name:
        return f"{obj.anonymous_id}->{obj.lead_id}"
    if topic == EVENTS_BY_LEAD.name:
        # An event may go to two leads (a redirect forwards it to its survivor); a merge
        # request has one copy per lead; a transfer goes to the survivor.
        if isinstance(obj, MergeRequest):
            return f"merge:{obj.merge_id}{SEP}{obj.lead_id}"
        if isinstance(obj, LeadTransfer):
            return f"transfer:{obj.merge_id}{SEP}{obj.lead_id}"
        return f"{obj.event_id}{SEP}{obj.lead_id}"
    for name in ID_FIELDS:
        if hasattr(obj, name):
            return str(getattr(obj, name))
    raise AssertionError(f"{topic}: no id field on {type(obj).__name__}")


def read_topic(
    settings: Settings, topic: str
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every committed record of ``topic`` (key, value, headers), partition by partition."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"equivalence-read-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    try:
        ends = topic_watermarks(consumer, [topic], time.monotonic() + 30)
        tps = [TopicPartition(topic, p, low) for (_, p), (low, high) in ends.items() if high > low]
        if not tps:
            return out
        consumer.assign(tps)
        pending: dict[tuple[str, int], int | None] = {(topic, tp.partition): None for tp in tps}
        try:
            for message in read_to_end(consumer, pending, deadline=time.monotonic() + 120):
                headers = {str(k): v or b"" for k, v in (message.headers() or [])}
                out.append((message.key(), message.value() or b"", headers))
        except EndNotReached as exc:
            raise AssertionError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
    return out


def collect(
    settings: Settings, home: Path, fed: int, reports: dict[str, Any], log: list[str]
) -> Outputs:
    """Read back everything a run wrote."""
    codec = codec_from_settings(settings)
    inbound: dict[str, list[bytes]] = {}
    not_for_leads: set[str] = set()
    for _key, value, headers in read_topic(settings, EVENTS.name):
        if "leadflow.heartbeat" in headers:
            continue
        event = codec.decode(value)
        inbound.setdefault(event.event_id, []).append(value)
        if event.kind is Kind.CAMPAIGN_COST:
            not_for_leads.add(event.event_id)
    topics: dict[str, dict[str, list[bytes]]] = {}
    fields: dict[str, dict[str, dict[str, Any]]] = {}
    for topic in DERIVED_TOPICS:
        seen: dict[str, int] = {}
        by_id: dict[str, list[bytes]] = {}
        decoded: dict[str, dict[str, Any]] = {}
        for key, value, headers in read_topic(settings, topic):
            if "leadflow.marker" in headers:
                continue
            if topic == MODELS.name:
                # Snapshots are learnt in the order of the log: the same examples before
                # each one (its version and the label time of the example it was taken
                # after). Not the bytes: a pickle written after a restore differs.
                rid = _record_id(topic, None, key, seen)
                data = _model_view(value)
            elif topic == DLQ.name:
                try:
                    obj = codec.decode(value)
                    rid = f"{obj.event_id}"
                    data = _normalise(obj)
                except Exception:
                    rid, data = "raw:" + hashlib.sha1(value).hexdigest()[:12], {}
                data["reason"] = headers.get("leadflow.reason", b"").decode()
            else:
                obj = codec.decode(value)
                rid, data = _record_id(topic, obj, key, seen), _normalise(obj)
            by_id.setdefault(rid, []).append(value)
            decoded.setdefault(rid, data)
        topics[topic], fields[topic] = by_id, decoded
    buffered: set[str] = set()
    dropped = 0
    states: dict[bytes, bytes | None] = {}
    for key, value, _headers in read_topic(settings, changelog_topic("identities").name):
        states[key or b""] = value or None
    for value in states.values():
        if value:
            state = decode_identity_state(value)
            buffered.update(e.event_id for e in state.buffer)
            dropped += state.dropped
    return Outputs(
        home, fed, inbound, topics, fields, buffered, not_for_leads, dropped, reports, log
    )


# -- the run ----------------------------------------------------------------------------


def run_settings(settings: Settings, home: Path) -> Settings:
    """The stack's settings: its own data dir and ports, no collector rate limit."""
    return settings.model_copy(
        update={
            "data_dir": home / "stack",
            "collector_port": free_port(),
            "collector_keys_file": home / "keys.json",
            "clickhouse_http_port": free_port(),
            "collector_rate_per_second": 1e9,
            "collector_rate_burst": 1e9,
            "log_format": "json",
        }
    )


MODEL_SIGNING_KEY = "equivalence-model-key"


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **settings.to_env(),
        # One signing key for every run: model snapshots compare byte for byte.
        "LEADFLOW_MODEL_SIGNING_KEY": MODEL_SIGNING_KEY,
        **extra,
    }


def _worker_proc(settings: Settings, home: Path, i: int) -> Proc:
    return Proc(
        f"worker{i}",
        ("worker",),
        _env(settings, LEADFLOW_DATA_DIR=str(home / f"worker{i}")),
        home / f"worker{i}",
        ready_line="worker.ready",
    )


def run_pipeline(
    settings: Settings,
    home: Path,
    feed: Feed,
    *,
    workers: int = 1,
    faults: Sequence[Fault] = (),
    projector: bool = True,
    inbound_partitions: int | None = None,
    drain_timeout: float = 300.0,
) -> Outputs:
    """Run the pipeline over ``feed`` with ``faults``; return what it derived.

    ``settings`` must point at a Kafka that no other run has written to (topics are created
    here). Faults fire in order of ``at``, from the calling thread, while the feed keeps
    flowing; a fault action may take as long as it needs. ``inbound_partitions``: the
    partition count of ``leadflow.events`` (default: the settings' count, like every topic).
    """
    home.mkdir(parents=True, exist_ok=True)
    settings = run_settings(settings, home)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if inbound_partitions is not None:
        create_topics(settings, [dataclasses.replace(EVENTS, partitions=inbound_partitions)])
    create_topics(settings)
    write_key = KeyStore(keys_path(settings)).create(WORKSPACE, now=lambda: datetime.now(UTC))
    collector = Proc("collector", ("collector",), _env(settings), home / "collector")
    worker_procs = [_worker_proc(settings, home, i) for i in range(workers)]
    projector_proc = (
        Proc("projector", ("projector",), _env(settings), home / "projector") if projector else None
    )
    run = Run(settings, home, collector, worker_procs, projector_proc)
    url = f"http://127.0.0.1:{settings.collector_port}"
    try:
        collector.start(wait=False)
        for proc in worker_procs:
            proc.start(wait=False)
        if projector_proc is not None:
            projector_proc.start(wait=False)
        _wait_collector(url, collector)
        for proc in worker_procs:
            proc.wait_ready()
        run.sender = Sender(url, write_key, feed)
        run.note("feed starts")
        run.sender.start()
        for fault in sorted(faults, key=lambda f: f.at):
            while run.sender.acked < fault.at and not run.sender.done.is_set():
                run.supervise()
                time.sleep(0.05)
            run.note(f"fault: {fault.name}")
            fault.action(run)
            run.note(f"done: {fault.name}")
        while not run.sender.done.wait(0.2):
            run.supervise()
        if run.sender.error is not None:
            raise AssertionError(f"the feed failed: {run.sender.error}")
        run.note(f"feed done ({run.sender.retries} retries)")
        # The collector's last heartbeat (written at its clean stop) promises past every
        # record it acknowledged, so the worker can release the tail; and its heartbeats no
        # longer move the worker's lag while the harness waits for it to reach 0.
        collector.stop()
        run.note("collector stopped")
        _wait_drained(run, drain_timeout)
        run.note("drained")
    finally:
        for proc in (*worker_procs, *([projector_proc] if projector_proc else []), collector):
            proc.stop()
    reports = run_reports(settings, feed) if projector else {}
    return collect(settings, home, run.sender.acked, reports, run.log)


def _wait_collector(url: str, collector: Proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        collector.check_alive()
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"collector not ready:\n{collector.tail()}")


def _wait_drained(run: Run, timeout: float) -> None:
    """Until the worker and projector groups have committed everything, twice in a row."""
    deadline = time.monotonic() + timeout
    zeros = 0
    lags: tuple[int, int] = (-1, -1)
    while zeros < 2:
        run.supervise()
        run.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained in {timeout:.0f}s: lag worker/projector {lags}")
        try:
            lags = (run.worker_lag(), run.projector_lag() if run.projector else 0)
        except Exception as exc:  # a broker still settling after a fault
            run.note(f"lag unknown: {exc}")
            lags = (-1, -1)
        zeros = zeros + 1 if lags == (0, 0) else 0
        time.sleep(1.0)


# Report key: every event id the projector wrote to ClickHouse's ``events`` table.
CLICKHOUSE_EVENT_IDS = "clickhouse_event_ids"


def run_reports(settings: Settings, feed: Feed) -> dict[str, Any]:
    """The reports over the projector's ClickHouse, computed in a child (chdb: one per process)."""
    out = settings.data_dir / "reports.json"
    start, end = feed.span()
    subprocess.run(
        [sys.executable, "-m", "tests.integration.pipeline.equivalence", "reports", str(out),
         start.isoformat(), end.isoformat()],
        env=_env(settings),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _reports_main(out: Path, start: date, end: date) -> None:
    from leadflow.cli.report import analytics_client, prepare_schema, render
    from leadflow.sinks import reports as r
    from leadflow.sinks.migrations import DEFAULT_DATABASE
    from leadflow.streams.settings import load_settings

    settings = load_settings()
    client, via_owner = analytics_client(settings)
    db = DEFAULT_DATABASE
    span = {"date_from": start, "date_to": end}
    try:
        prepare_schema(client, db, settings, via_owner)
        built = {
            "funnel": r.funnel(client, db, **span),
            "time_in_stage": r.time_in_stage(client, db, **span),
            "stage_conversion": r.stage_conversion(client, db, **span),
            "sales_cycle": r.sales_cycle(client, db, **span),
            "kpis": r.kpis(client, db, **span),
            "lost": r.lost_reasons(client, db, **span),
            "experiments": r.experiments(client, db, conversion="sql", **span),
        }
        # Every event the projector wrote to ClickHouse, by id (compared like a report).
        built_ids = client.query(f"SELECT DISTINCT event_id FROM {db}.events ORDER BY event_id")
        for model in ("linear", "w_shaped", "markov"):
            built[f"attribution_{model}"] = r.attribution(
                client, db, model=model, conversion="sql", **span
            )
        rendered = {k: json.loads(render(v, "json")) for k, v in built.items()}
        rendered[CLICKHOUSE_EVENT_IDS] = [row[0] for row in built_ids.result_rows]
        out.write_text(json.dumps(rendered))
    finally:
        client.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["reports"]:
        _reports_main(
            Path(sys.argv[2]), date.fromisoformat(sys.argv[3]), date.fromisoformat(sys.argv[4])
        )
    else:
        raise SystemExit(__doc__)
