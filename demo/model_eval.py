"""``leadflow model-eval``: the lead model's quality and the lead state size, offline, in seconds.

The demo measures the model through the whole stack (Kafka, worker, ClickHouse) in a few
minutes. This command drives the same PURE processors in-process instead: the simulator's
messages go through the collector's mapping, then ``identity_step`` per device and
``lead_step`` per lead in event-time order (the order one worker sees them), with label
deadlines fired on the worker's event-time watermark as the lead agent does. Training
examples go to a trainer model in emission order; leads are scored with the trainer's
latest *snapshot* (every ``model.snapshot_every`` examples), like the workers.

It reports, for one seeded simulation:

- training examples: how many, positives, examples per lead (mean, p90, max);
- prequential ROC AUC (each example scored before the model learns it), as the model
  reports it and exactly (Mann-Whitney over the same scores);
- per-lead AUC of the last score before the lead's first SQL, for the rule score and the
  model score, on the same leads, next to the best possible (true propensity), exactly as
  ``demo/report.py`` defines them, plus the model AUC on all leads;
- the trainer's learn + predict cost per example, and the cost of scoring one lead
  (``predict`` + ``top_features``, what every scored event pays), in microseconds;
- the serialized lead state size (median, p90, max) at the end of the run.

Wall-clock time is read only to measure the model's cost; nothing in the processors sees it.
"""

from __future__ import annotations

import copy
import heapq
import statistics
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.table import Table

from leadflow.demo.simulator.generator import LeadTruth, SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.demo.simulator.truth import TruthError, auc, best_possible_auc
from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.derived import LeadScored, OwnerAssigned, Stage, StageChanged
from leadflow.processors.derived import TrainingExample as Example
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event
from leadflow.processors.identity import IdentityState, identity_step
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState, encode_lead_state
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy import Policy
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.routing import RoutingState

WORKSPACE = "demo"


@dataclass
class Replay:
    """What one in-process run of the processors produced (inputs to :func:`evaluate`)."""

    model: ScoreModel
    examples: list[Example] = field(default_factory=list)
    scores: dict[str, list[LeadScored]] = field(default_factory=lambda: defaultdict(list))
    first_sql: dict[str, int] = field(default_factory=dict)
    states: dict[str, LeadState] = field(default_factory=dict)
    dead_letters: int = 0
    learn_seconds: float = 0.0
    prequential: list[tuple[float, bool]] = field(default_factory=list)

    def predict_seconds(self) -> float:
        """Mean time of one score (``predict`` plus ``top_features``) with the final model."""
        if not self.examples:
            return 0.0
        started = time.perf_counter()
        for ex in self.examples:
            self.model.predict(ex.features)
            self.model.top_features(ex.features)
        return (time.perf_counter() - started) / len(self.examples)


def lead_events(events: Iterable[Event]) -> Iterable[Event]:
    """Device-keyed events through identity stitching, as the identity agent emits them."""
    devices: dict[str, IdentityState | None] = {}
    for event in events:
        try:
            key = event.person_key
            state, out = identity_step(devices.get(key), event)
        except LeadflowError:
            continue
        if state is not None:
            devices[key] = state
        yield from out


def arrival_order(
    events: Iterable[Event], key: Callable[[Event], str], partitions: int, batch: int
) -> list[Event]:
    """The order one consumer of ``partitions`` partitions sees: ``batch`` records of each in turn.

    Per-partition order is kept, but partitions with little traffic run ahead in event time
    and a key's events may arrive after those of keys on other partitions that happened
    later: what the worker sees on the real broker (e.g. a sales event keyed by lead
    arriving before the device's buffered touches).
    """
    parts: list[list[Event]] = [[] for _ in range(partitions)]
    for event in events:
        parts[zlib.crc32(key(event).encode()) % partitions].append(event)
    out: list[Event] = []
    for start in range(0, max((len(p) for p in parts), default=0), batch):
        for part in parts:
            out.extend(part[start : start + batch])
    return out


def replay(
    events: Iterable[Event],
    policy: Policy,
    model: ScoreModel,
    *,
    partitions: int = 0,
    batch: int = 500,
    refresh_every: int = 0,
) -> Replay:
    """Run identity + lead processors over ``events``; train ``model`` on their examples.

    With ``partitions`` the inbound and the lead-keyed logs are consumed in
    :func:`arrival_order` (otherwise in event-time order); label and SLA deadlines fire as
    soon as the newest event time of any partition passes them (an upper bound: the
    worker's DeadlineTick lets the lead's own queued records go first). With
    ``refresh_every`` the lead step scores with the newest snapshot as of every that many
    lead events (the workers poll ``leadflow.models``), otherwise with the newest at once.
    """
    run = Replay(model=model)
    newest: ScoreModel | None = None
    published: ScoreModel | None = None
    routing = RoutingState()
    heap: list[tuple[int, str]] = []
    watermark = 0

    def absorb(out: list[object]) -> None:
        nonlocal newest, routing
        for obj in out:
            if isinstance(obj, LeadScored):
                run.scores[obj.lead_id].append(obj)
            elif isinstance(obj, StageChanged) and obj.to_stage is Stage.SQL:
                run.first_sql.setdefault(obj.lead_id, obj.occurred_at)
            elif isinstance(obj, OwnerAssigned):
                routing = RoutingState(routing.cursors | {obj.pool: obj.cursor_after})
            elif isinstance(obj, Example):
                run.examples.append(obj)
                started = time.perf_counter()
                run.prequential.append((model.learn(obj.features, obj.label), obj.label))
                run.learn_seconds += time.perf_counter() - started
                if model.n_learned % policy.model.snapshot_every == 0:
                    newest = copy.deepcopy(model)

    def fire(watermark: int) -> None:
        fired: set[str] = set()
        while heap and heap[0][0] <= watermark:
            _, lid = heapq.heappop(heap)
            if lid in fired:
                continue
            fired.add(lid)
            advanced, out = advance_time(run.states[lid], watermark, policy, routing=routing)
            run.states[lid] = advanced
            absorb(list(out))
            due = next_deadline(advanced)
            if due is not None and due > watermark:
                heapq.heappush(heap, (due, lid))

    lead_log: Iterable[Event]
    if partitions:
        inbound = arrival_order(events, lambda e: e.person_key, partitions, batch)
        lead_log = arrival_order(lead_events(inbound), lambda e: str(e.lead_id), partitions, batch)
    else:
        lead_log = lead_events(events)
    for n, event in enumerate(lead_log):
        if not refresh_every or n % refresh_every == 0:
            published = newest
        lead = str(event.lead_id)
        try:
            state, out = lead_step(run.states.get(lead), event, policy, published, routing=routing)
        except LeadflowError:
            run.dead_letters += 1
            continue
        run.states[lead] = state
        absorb(list(out))
        watermark = max(watermark, event.occurred_at)
        due = next_deadline(state)
        if due is not None:
            heapq.heappush(heap, (due, lead))
        # Deadlines fire at once on the newest event time of any partition. The worker
        # defers them through a DeadlineTick queued behind the lead's own records, so with
        # --partitions this is an upper bound on premature negatives.
        fire(watermark)
    return run


def _auc(scores: list[float], labels: list[bool]) -> float | None:
    try:
        return auc(scores, labels)
    except TruthError:
        return None


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def evaluate(run: Replay, truth: dict[str, LeadTruth]) -> dict[str, float | int | None]:
    """The figures of the module doc, from one :class:`Replay` and the simulator's truth."""
    rule: list[float] = []
    model: list[float] = []
    labels: list[bool] = []
    rule_all: list[float] = []
    labels_rule_all: list[bool] = []
    for lead, scored in run.scores.items():
        if lead not in truth:
            continue
        cutoff = run.first_sql.get(lead)
        before = [s for s in scored if cutoff is None or s.occurred_at < cutoff]
        if not before:
            continue
        last = max(before, key=lambda s: s.occurred_at)
        with_model = [s for s in before if s.model_score is not None]
        converted = truth[lead].converted
        if with_model:
            latest = max(with_model, key=lambda s: s.occurred_at).model_score
            assert latest is not None
            rule.append(last.fit_score + last.engagement_score)
            model.append(latest)
            labels.append(converted)
        rule_all.append(last.fit_score + last.engagement_score)
        labels_rule_all.append(converted)
    per_lead: dict[str, int] = defaultdict(int)
    for ex in run.examples:
        per_lead[ex.lead_id] += 1
    counts = list(per_lead.values())
    sizes = [len(encode_lead_state(s)) for s in run.states.values()]
    n = max(run.model.n_learned, 1)
    try:
        best: float | None = best_possible_auc(truth)
    except TruthError:
        best = None
    return {
        "examples": len(run.examples),
        "positives": sum(ex.label for ex in run.examples),
        "leads_teaching": len(counts),
        "examples_per_lead_mean": round(statistics.fmean(counts), 2) if counts else 0,
        "examples_per_lead_p90": _quantile(counts, 0.9),
        "examples_per_lead_max": max(counts, default=0),
        "prequential_auc": round(run.model.auc, 4),
        "prequential_auc_exact": _auc(
            [p for p, _ in run.prequential], [y for _, y in run.prequential]
        ),
        "drift_alarms": run.model.drift_count,
        "leads_compared": len(labels),
        "converted": sum(labels),
        "rule_auc": _auc(rule, labels),
        "model_auc": _auc(model, labels),
        "rule_auc_all_leads": _auc(rule_all, labels_rule_all),
        "leads_all": len(labels_rule_all),
        "best_auc": best,
        "learn_predict_us": round(run.learn_seconds / n * 1e6, 1),
        "score_us": round(run.predict_seconds() * 1e6, 1),
        "leads": len(sizes),
        "state_median_bytes": int(statistics.median(sizes)) if sizes else 0,
        "state_p90_bytes": _quantile(sizes, 0.9),
        "state_max_bytes": max(sizes, default=0),
        "dead_letters": run.dead_letters,
    }


def run_eval(
    people: int,
    days: float,
    seed: int,
    kind: str,
    policy: Policy | None = None,
    *,
    partitions: int = 0,
    refresh_every: int = 0,
) -> dict[str, float | int | None]:
    """Simulate, replay through the processors with a ``kind`` model, and evaluate."""
    policy = policy or load_default_policy()
    simulation = Simulation(SimConfig(people=people, days=days, seed=seed))
    events = (message_to_event(m, WORKSPACE) for m in simulation.messages())
    model = ScoreModel(policy, kind=kind)
    run = replay(events, policy, model, partitions=partitions, refresh_every=refresh_every)
    return evaluate(run, simulation.ground_truth())


def results_table(title: str, results: dict[str, dict[str, float | int | None]]) -> Table:
    """One column per model kind, one row per measure."""
    table = Table("measure", *results, title=title)
    for name in next(iter(results.values())):
        table.add_row(name, *(_fmt(r[name]) for r in results.values()))
    return table


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
