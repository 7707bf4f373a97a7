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
from typing import Any

from rich.table import Table

from leadflow.demo.simulator.generator import LeadTruth, SimConfig, Simulation
from leadflow.demo.simulator.send import SendError, message_to_event
from leadflow.demo.simulator.truth import TruthError, auc
from leadflow.processors.deadlines import advance_time, next_deadline
from leadflow.processors.derived import LeadScored, OwnerAssigned, Stage, StageChanged
from leadflow.processors.derived import TrainingExample as Example
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event
from leadflow.processors.features import lead_features
from leadflow.processors.identity import IdentityState, identity_step
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import LeadState, encode_lead_state
from leadflow.processors.model import DEFAULT_KIND, ModelRegistry, ScoreModel, auc_exact, ece
from leadflow.processors.policy import Policy
from leadflow.processors.policy_fit import LabelledLead
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.routing import RoutingState
from leadflow.processors.scoring import DAY_MS

WORKSPACE = "demo"


@dataclass
class Scored:
    """One score of a lead as the evaluation keeps it: when, rules, model and the features."""

    at: int
    rule: float
    model: float | None
    features: dict[str, float]


@dataclass
class Replay:
    """What one in-process run of the processors produced (inputs to :func:`evaluate`)."""

    models: ModelRegistry
    examples: list[Example] = field(default_factory=list)
    scores: dict[str, list[LeadScored]] = field(default_factory=lambda: defaultdict(list))
    held: list[tuple[int, str, Scored]] = field(default_factory=list)
    first_sql: dict[str, int] = field(default_factory=dict)
    transitions: list[StageChanged] = field(default_factory=list)
    states: dict[str, LeadState] = field(default_factory=dict)
    dead_letters: int = 0
    refused: int = 0
    inbound: int = 0
    rescores: int = 0
    learn_seconds: float = 0.0
    prequential: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def model(self) -> ScoreModel:
        """The model of the (first) workspace: the one the figures describe."""
        return next(iter(self.models.models.values()), self.models.get(WORKSPACE))

    def predict_seconds(self) -> float:
        """Mean time of one score (``predict`` plus ``top_features``) with the final model."""
        if not self.examples:
            return 0.0
        model = self.model
        started = time.perf_counter()
        for ex in self.examples:
            model.predict(ex.features)
            model.top_features(ex.features)
        return (time.perf_counter() - started) / len(self.examples)


def take_cutoff(run: Replay, at: int, policy: Policy) -> None:
    """Record the score every open lead holds at event time ``at`` (and its features)."""
    for lead, state in run.states.items():
        scored = run.scores.get(lead)
        if not scored or state.stage not in (Stage.LEAD, Stage.MQL, Stage.RECYCLED):
            continue
        last = max(scored, key=lambda s: s.occurred_at)
        features = lead_features(state, last.occurred_at, policy)
        rule = last.fit_score + last.engagement_score
        run.held.append((at, lead, Scored(last.occurred_at, rule, last.model_score, features)))


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
    events: Iterable[Event | None],
    policy: Policy,
    models: ModelRegistry,
    *,
    partitions: int = 0,
    batch: int = 500,
    refresh_every: int = 0,
    cutoffs: Iterable[int] = (),
) -> Replay:
    """Run identity + lead processors over ``events``; train each workspace's model on its examples.

    With ``partitions`` the inbound and the lead-keyed logs are consumed in
    :func:`arrival_order` (otherwise in event-time order); label, SLA and re-score deadlines
    fire as soon as the newest event time of any partition passes them (an upper bound: the
    worker lets the lead's own queued records go first). With ``refresh_every`` the lead
    step scores with the newest snapshot of its workspace as of every that many lead events
    (workers poll ``leadflow.models``), otherwise with the newest at once. At each of
    ``cutoffs`` (event times) every open lead's held score is recorded (:func:`take_cutoff`).
    """
    run = Replay(models=models)
    newest: dict[str, ScoreModel] = {}
    published: dict[str, ScoreModel] = {}
    priors: dict[str, ScoreModel] = {}
    routing = RoutingState()
    heap: list[tuple[int, str]] = []
    watermark = 0

    def absorb(out: list[object]) -> None:
        nonlocal routing
        for obj in out:
            if isinstance(obj, LeadScored):
                run.scores[obj.lead_id].append(obj)
                run.rescores += obj.cause_event_id.startswith("decay:")
            elif isinstance(obj, StageChanged):
                run.transitions.append(obj)
                if obj.to_stage is Stage.SQL:
                    run.first_sql.setdefault(obj.lead_id, obj.occurred_at)
            elif isinstance(obj, OwnerAssigned):
                routing = RoutingState(routing.cursors | {obj.pool: obj.cursor_after})
            elif isinstance(obj, Example):
                run.examples.append(obj)
                started = time.perf_counter()
                model = models.get(obj.workspace_id)
                run.prequential.append((model.learn(obj.features, obj.label), obj.label))
                run.learn_seconds += time.perf_counter() - started
                if model.n_learned % policy.model.snapshot_every == 0:
                    newest[obj.workspace_id] = copy.deepcopy(model)

    def fire(watermark: int) -> None:
        fired: set[str] = set()
        while heap and heap[0][0] <= watermark:
            _, lid = heapq.heappop(heap)
            if lid in fired:
                continue
            fired.add(lid)
            state = run.states[lid]
            model = published.get(state.workspace_id) or priors.get(state.workspace_id)
            advanced, out = advance_time(state, watermark, policy, routing=routing, model=model)
            run.states[lid] = advanced
            absorb(list(out))
            due = next_deadline(advanced)
            if due is not None and due > watermark:
                heapq.heappush(heap, (due, lid))

    def counted(events: Iterable[Event | None]) -> Iterable[Event]:
        for event in events:
            run.inbound += 1
            if event is None:
                run.refused += 1
            else:
                yield event

    lead_log: Iterable[Event]
    source = counted(events)
    if partitions:
        inbound = arrival_order(source, lambda e: e.person_key, partitions, batch)
        lead_log = arrival_order(lead_events(inbound), lambda e: str(e.lead_id), partitions, batch)
    else:
        lead_log = lead_events(source)
    pending = sorted(cutoffs, reverse=True)
    for n, event in enumerate(lead_log):
        while pending and event.occurred_at > pending[-1]:
            take_cutoff(run, pending.pop(), policy)
        if not refresh_every or n % refresh_every == 0:
            published = dict(newest)
        # What fell due before this event's time fires first, as event time passes it.
        watermark = max(watermark, event.occurred_at - 1)
        fire(watermark)
        lead = str(event.lead_id)
        model = published.get(event.workspace_id)
        if model is None:  # no snapshot yet: the workspace is scored by its prior
            model = priors.get(event.workspace_id) or priors.setdefault(
                event.workspace_id, models.prior(event.workspace_id)
            )
        try:
            state, out = lead_step(run.states.get(lead), event, policy, model, routing=routing)
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
        # defers them behind the lead's own records, so with --partitions this is an upper
        # bound on premature negatives.
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


def gbm_scores(
    examples: list[Example], held: list[tuple[int, str, Scored]], retrain_days: float = 7.0
) -> list[float]:
    """A batch gradient-boosted baseline (scikit-learn), retrained every ``retrain_days``.

    At each cutoff it scores the same features the online model scored, with a
    HistGradientBoostingClassifier fitted on every example labelled before the cutoff's
    retraining period began: what a weekly batch job would have had.
    """
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.feature_extraction import DictVectorizer
    except ImportError:
        raise LeadflowError(
            "the batch baseline needs scikit-learn (pip install 'leadflow[dev]'); "
            "or pass --no-baseline"
        ) from None

    period = int(retrain_days * DAY_MS)
    out: list[float] = [0.5] * len(held)
    by_block: dict[int, list[int]] = defaultdict(list)
    for i, (at, _, _) in enumerate(held):
        by_block[at // period].append(i)
    for block, rows in sorted(by_block.items()):
        train = [ex for ex in examples if ex.labelled_at < block * period]
        labels = [ex.label for ex in train]
        if len(set(labels)) < 2:
            continue
        vec = DictVectorizer(sparse=False)
        x = vec.fit_transform([ex.features for ex in train])
        clf = HistGradientBoostingClassifier(random_state=0)
        clf.fit(x, labels)
        probs = clf.predict_proba(vec.transform([held[i][2].features for i in rows]))
        for i, p in zip(rows, probs, strict=True):
            out[i] = float(p[1])
    return out


def evaluate(
    run: Replay, truth: dict[str, LeadTruth], *, horizon_days: float = 30.0, baseline: bool = True
) -> dict[str, float | int | str | None]:
    """The figures of the module doc, from one :class:`Replay` and the simulator's truth.

    At every cutoff, each open lead's held score is compared with whether the lead becomes
    SQL within ``horizon_days``: the model, the rule score (fit + engagement), the batch
    baseline and the true propensity are ranked on the same (cutoff, lead) pairs.
    """
    horizon = int(horizon_days * DAY_MS)
    held = [
        (at, lead, scored)
        for at, lead, scored in run.held
        if lead in truth
        and scored.model is not None
        and (run.first_sql.get(lead) is None or run.first_sql[lead] > at)
    ]
    labels = [
        run.first_sql.get(lead) is not None and run.first_sql[lead] <= at + horizon
        for at, lead, _ in held
    ]
    model = [float(scored.model or 0.0) for _, _, scored in held]
    rule = [scored.rule for _, _, scored in held]
    best = [truth[lead].propensity for _, lead, _ in held]
    hard = [i for i, (_, _, scored) in enumerate(held) if "demo_requested" not in scored.features]
    gbm = gbm_scores(run.examples, held) if baseline else []
    ages = [(at - scored.at) / DAY_MS for at, _, scored in held]
    per_lead: dict[str, int] = defaultdict(int)
    for ex in run.examples:
        per_lead[ex.lead_id] += 1
    counts = list(per_lead.values())
    sizes = [len(encode_lead_state(s)) for s in run.states.values()]
    n = max(len(run.examples), 1)
    health = run.model.health()
    warnings = list(health.warnings)
    if run.inbound and run.refused / run.inbound > 0.5:
        warnings.append("inputs_refused")  # the model learns from what little got through

    def pick(values: list[float], idx: list[int]) -> list[float]:
        return [values[i] for i in idx]

    def pairs(values: list[float]) -> list[tuple[float, bool]]:
        return list(zip(values, labels, strict=True))

    hard_labels = pick([float(y) for y in labels], hard)
    return {
        "examples": len(run.examples),
        "positives": sum(ex.label for ex in run.examples),
        "leads_teaching": len(counts),
        "examples_per_lead_mean": round(statistics.fmean(counts), 2) if counts else 0,
        "examples_per_lead_max": max(counts, default=0),
        "prequential_auc": auc_exact(run.prequential),
        "window_auc": health.window_auc,
        "window_ece": health.window_ece,
        "health_warnings": ",".join(warnings) or "none",
        "cutoff_leads": len(held),
        "converted_in_horizon": sum(labels),
        "model_auc": _auc(model, labels),
        "gbm_auc": _auc(gbm, labels) if gbm else None,
        "rule_auc": _auc(rule, labels),
        "best_auc": _auc(best, labels),
        "model_ece": ece(pairs(model)),
        "gbm_ece": ece(pairs(gbm)) if gbm else None,
        "hard_leads": len(hard),
        "hard_model_auc": _auc(pick(model, hard), [bool(y) for y in hard_labels]),
        "hard_rule_auc": _auc(pick(rule, hard), [bool(y) for y in hard_labels]),
        "hard_best_auc": _auc(pick(best, hard), [bool(y) for y in hard_labels]),
        "score_age_days_median": round(statistics.median(ages), 1) if ages else None,
        "score_age_days_p90": round(_quantile_f(ages, 0.9), 1) if ages else None,
        "rescores": run.rescores,
        "refused_share": round(run.refused / run.inbound, 4) if run.inbound else 0.0,
        "learn_predict_us": round(run.learn_seconds / n * 1e6, 1),
        "score_us": round(run.predict_seconds() * 1e6, 1),
        "leads": len(sizes),
        "state_median_bytes": int(statistics.median(sizes)) if sizes else 0,
        "state_p90_bytes": _quantile(sizes, 0.9),
        "state_max_bytes": max(sizes, default=0),
        "dead_letters": run.dead_letters,
    }


def _quantile_f(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_eval(
    people: int,
    days: float,
    seed: int,
    kind: str = DEFAULT_KIND,
    policy: Policy | None = None,
    *,
    world: str = "northwind",
    partitions: int = 0,
    refresh_every: int = 0,
    warmup_days: float = 45.0,
    baseline: bool = True,
    clickhouse: tuple[Any, str] | None = None,
) -> dict[str, float | int | str | None]:
    """Simulate, replay through the processors with a ``kind`` model, and evaluate.

    With ``clickhouse`` (a client and a database name) the run's scores and transitions
    are also projected there and graded by the ``model_health`` view
    (:func:`clickhouse_health`).
    """
    policy = policy or load_default_policy()
    config = SimConfig(people=people, days=days, seed=seed, world=world)
    simulation = Simulation(config)
    events = (_mapped(m) for m in simulation.messages())
    models = ModelRegistry(lambda _ws: policy, kind=kind)
    # Cutoffs every 14 days from the warm-up on, leaving a horizon after the last one.
    first, last = config.start_ms + int(warmup_days * DAY_MS), config.end_ms - 30 * DAY_MS
    cutoffs = range(first, last + 1, 14 * DAY_MS)
    run = replay(
        events,
        policy,
        models,
        partitions=partitions,
        refresh_every=refresh_every,
        cutoffs=cutoffs,
    )
    figures = evaluate(run, simulation.ground_truth(), baseline=baseline)
    if clickhouse is not None:
        figures |= clickhouse_health(run, *clickhouse, policy)
    return figures


def clickhouse_health(
    run: Replay, client: Any, database: str, policy: Policy, window_days: int = 90
) -> dict[str, float | int | str | None]:
    """What ClickHouse's ``model_health`` view shows for the simulated workspace.

    The run's scores and transitions are projected into ``database`` (dropped first).
    """
    from leadflow.sinks import reports
    from leadflow.sinks.migrations import migrate
    from leadflow.sinks.projection import rows_for_all
    from leadflow.sinks.projector import insert_rows
    from leadflow.sinks.tables import check_identifier

    client.command(f"DROP DATABASE IF EXISTS {check_identifier(database, 'database')}")
    migrate(client, database)
    scores = [s for lead_scores in run.scores.values() for s in lead_scores]
    insert_rows(client, database, rows_for_all([*scores, *run.transitions]))
    report = reports.model_health(
        client,
        database,
        window_days=window_days,
        horizon_days=max(1, round(policy.labels.negative_horizon_days)),
        min_labels=policy.model.min_labels,
        conversion=policy.labels.conversion,
        workspace=WORKSPACE,
    )
    row = next(iter(report.as_dicts()), {})
    return {
        "ch_window_days": window_days,
        "ch_examples": row.get("examples", 0),
        "ch_positives": row.get("positives", 0),
        "ch_auc": row.get("auc"),
        "ch_ece": row.get("ece"),
        "ch_warnings": ",".join(row.get("warnings", [])) or "none",
    }


def labelled_history(
    people: int, days: float, seed: int, world: str = "northwind", policy: Policy | None = None
) -> list[LabelledLead]:
    """The leads of one simulated market as ``policy suggest-weights`` fits them.

    The simulation goes through the processors (rules only, no model) like a real
    workspace; every lead created at least ``labels.negative_horizon_days`` before the end
    is labelled by whether it ever became SQL (converted), with its profile and email domain
    as the lead state holds them.
    """
    policy = policy or load_default_policy()
    config = SimConfig(people=people, days=days, seed=seed, world=world)
    events = (_mapped(m) for m in Simulation(config).messages())
    run = replay(events, policy, ModelRegistry(lambda _ws: policy))
    last = config.end_ms - int(policy.labels.negative_horizon_days * DAY_MS)
    out = []
    for lead, state in sorted(run.states.items()):
        if state.stage in (None, Stage.VISITOR) or not state.history:
            continue
        if state.history[0].entered_at > last:
            continue  # too recent to know whether it converts
        out.append(LabelledLead(state.contact, state.email_domain, lead in run.first_sql))
    return out


def _mapped(message: dict[str, object]) -> Event | None:
    try:
        return message_to_event(message, WORKSPACE)
    except SendError:
        return None  # refused by the collector's mapping: counted, as the collector would


def results_table(title: str, results: dict[str, dict[str, float | int | str | None]]) -> Table:
    """One column per run, one row per measure."""
    table = Table("measure", *results, title=title)
    for name in next(iter(results.values())):
        table.add_row(name, *(_fmt(r[name]) for r in results.values()))
    return table


def _fmt(value: float | int | str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if isinstance(value, float) else str(value)
