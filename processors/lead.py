"""The lead aggregate: one lead's state folded from its events, and what it derives.

``lead_step(state, event, policy, model)`` applies one lead-keyed event and returns the
new state plus derived events, in this order: SLA breaches / negative labels that the
event's time made due, stage changes, the lead's score, MQL, owner assignment, SQL
hand-off, nurture actions, training examples. It never mutates its inputs (the model is
only read).

Idempotency: an event whose id was already applied changes nothing and derives nothing.
The lead remembers the last :data:`MAX_SEEN` distinct event ids (as 48-bit digests,
8 base64 chars each); a duplicate older than that window would be re-applied. Redelivery
after a crash re-sends only the uncommitted tail of a partition, far inside that window;
the largest burst one upstream step re-emits at once is the identity processor's replay
of a device buffer (``identity.MAX_BUFFERED`` events plus the identifying one), which the
window must cover; ClickHouse and downstream consumers dedupe by the deterministic derived
ids anyway. The window is the largest part of a lead's state (a digest is incompressible,
~6 bytes stored), so it is sized to that burst with margin, not larger.

Out-of-order guarantees (events of one lead may arrive late, e.g. replayed pre-identify
touches or a CRM lagging behind):

- first and last touch are the minimum and maximum by ``(occurred_at, event_id)``, so a
  late earlier visit becomes the first touch; engagement counts are order-free sums;
- engagement is computed from stored hits at the lead's watermark (max event time seen),
  so a late hit counts with exactly the decay it would have had in order;
- profile fields: the latest ``occurred_at`` wins per update, not the latest arrival;
- stage transitions and nurture counters follow processing order, which the worker makes
  event-time order within the allowed lateness (``processors/ordering.py``); a sales action
  that does not fit the current stage raises :class:`InvalidTransition` (to the dead-letter
  topic) and leaves the state unchanged.

Late events (the step time). A step runs at ``max(occurred_at, watermark)``: its event's own
time, or, for an event older than what the lead has already processed (a late arrival),
the lead's event time now. Everything the step stamps (transitions, owner assignments,
scores, the hand-off's ``became_sql_at`` and SLA due time) carries the step time, so the
state a transition is decided on (fit, engagement, first and last touch, owner) is the
state as of the transition's stamp: a late event is applied now, never inserted into the
past, and a hand-off's last touch is never after its ``became_sql_at``. The late event's
facts keep their own time (touch order, decay at the watermark, profile recency).

Episode labels are :mod:`~leadflow.processors.labels`' business, deadlines (SLA, label
horizon) :mod:`~leadflow.processors.deadlines`', the state and its caps
:mod:`~leadflow.processors.lead_state`'.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

from leadflow.processors.deadlines import advance_time
from leadflow.processors.derived import (
    BecameMQL,
    Contact,
    EngagementSummary,
    LeadScored,
    OwnerAssigned,
    Stage,
    StageChanged,
    StageStep,
    Touch,
    TrainingExample,
    derived_id,
)
from leadflow.processors.errors import InvalidEvent, InvalidTransition
from leadflow.processors.events import TOUCH_KINDS, Event, Kind
from leadflow.processors.evolve import evolve
from leadflow.processors.features import lead_features
from leadflow.processors.funnel import transition
from leadflow.processors.handoff import build_handoff
from leadflow.processors.labels import close_episode, open_window
from leadflow.processors.lead_state import (
    MAX_ALIASES,
    MAX_HISTORY,
    MAX_HITS,
    MAX_SEEN,
    NEGLIGIBLE,
    Derived,
    LeadState,
)
from leadflow.processors.model import ScoreModel
from leadflow.processors.nurture import nurture_step
from leadflow.processors.pii import PiiFacts
from leadflow.processors.policy import Policy
from leadflow.processors.qualification import merge_answers
from leadflow.processors.rescore import next_rescore
from leadflow.processors.routing import RoutingState, assign
from leadflow.processors.scoring import (
    EngagementHit,
    decayed,
    email_domain,
    engagement_hits,
    fit_score,
    policy_engagement,
    top_rules,
)
from leadflow.processors.segments import segments_of

HOUR_MS = 3_600_000

_PROFILE_FIELDS = (
    "email", "first_name", "last_name", "phone", "company", "title", "company_size",
    "industry", "country",
)  # fmt: skip
_KNOWN_KINDS = frozenset(
    {
        Kind.IDENTIFY, Kind.FORM_SUBMITTED, Kind.EMAIL_SENT, Kind.EMAIL_OPENED,
        Kind.EMAIL_CLICKED, Kind.EMAIL_BOUNCED, Kind.EMAIL_UNSUBSCRIBED, Kind.DEMO_REQUESTED,
        Kind.STAGE_CHANGED, Kind.DEAL_WON, Kind.DEAL_LOST,
    }
)  # fmt: skip
_EMAIL_KINDS = frozenset(
    {Kind.EMAIL_SENT, Kind.EMAIL_OPENED, Kind.EMAIL_CLICKED, Kind.EMAIL_BOUNCED,
     Kind.EMAIL_UNSUBSCRIBED}
)  # fmt: skip
# Kinds that update the profile. A group call carries only the account's firmographics
# (company, company_size, industry, country): for B2B that is where the account lives.
_PROFILE_KINDS = frozenset({Kind.IDENTIFY, Kind.FORM_SUBMITTED, Kind.GROUP})
_NURTURE_STAGES = frozenset({Stage.VISITOR, Stage.LEAD, Stage.MQL, Stage.RECYCLED})
_SQL_FROM = frozenset({Stage.LEAD, Stage.MQL, Stage.RECYCLED})


def _seen_key(event_id: str) -> str:
    # 48 bits as 8 base64url chars: per lead (<= MAX_SEEN ids) a false "duplicate" has
    # probability ~ MAX_SEEN**2 / 2**49, i.e. ~7e-12.
    digest = hashlib.blake2b(event_id.encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _channel(event: Event) -> str:
    # The collector groups channels into context.channel; these are fallbacks for events
    # produced elsewhere (CRM, ESP webhooks).
    if event.context.channel:
        return event.context.channel
    if event.kind in _EMAIL_KINDS:
        return "email"
    if event.kind is Kind.AD_CLICK:
        return "paid"
    return "direct"


def _touch(event: Event) -> Touch:
    campaign = event.context.utm_campaign or event.payload.get("campaign")
    return Touch(
        event_id=event.event_id,
        kind=event.kind.value,
        occurred_at=event.occurred_at,
        channel=_channel(event),
        campaign=str(campaign) if campaign else None,
    )


def _order(t: Touch) -> tuple[int, str]:
    return (t.occurred_at, t.event_id)


def _summary(s: EngagementSummary, event: Event) -> EngagementSummary:
    path = (event.context.path or event.context.url or "").lower()
    k = event.kind
    last = s.last_activity_at
    if k in TOUCH_KINDS or k is Kind.EMAIL_OPENED:
        last = event.occurred_at if last is None else max(last, event.occurred_at)
    return evolve(
        s,
        visits=s.visits + (k is Kind.VISIT),
        pricing_views=s.pricing_views + (k is Kind.VISIT and "/pricing" in path),
        content_downloads=s.content_downloads + (k is Kind.CONTENT_DOWNLOADED),
        emails_opened=s.emails_opened + (k is Kind.EMAIL_OPENED),
        emails_clicked=s.emails_clicked + (k is Kind.EMAIL_CLICKED),
        webinars_attended=s.webinars_attended + (k is Kind.WEBINAR_ATTENDED),
        demo_requested=s.demo_requested or k is Kind.DEMO_REQUESTED,
        last_activity_at=last,
    )


def _bounded_hits(
    hits: tuple[EngagementHit, ...], at_ms: int, half_life_days: float
) -> tuple[EngagementHit, ...]:
    kept = [h for h in hits if not h.decays or abs(decayed(h, at_ms, half_life_days)) >= NEGLIGIBLE]
    if len(kept) > MAX_HITS:
        # The oldest decaying hit contributes least; non-decaying (unsubscribe) hits stay.
        decaying = sorted((h for h in kept if h.decays), key=lambda h: h.occurred_at)
        for h in decaying[: len(kept) - MAX_HITS]:
            kept.remove(h)
    return tuple(kept)


def _apply_profile(
    state: LeadState, event: Event, policy: Policy, facts: PiiFacts | None
) -> LeadState:
    if event.kind not in _PROFILE_KINDS:
        return state
    newer = event.occurred_at >= state.profile_at
    current = dataclasses.asdict(state.contact)
    domain = state.email_domain
    for name in _PROFILE_FIELDS:
        value = event.payload.get(name)
        if value is None or value == "":
            continue
        if newer or current.get(name) is None:  # a late event only fills gaps
            current[name] = value
            if name == "email":  # a sealed email has no readable domain: the edge's facts do
                domain = facts.email_domain if facts is not None else email_domain(str(value))
    current["seniority"] = policy.seniority_of(current.get("title"))
    return evolve(
        state,
        contact=Contact(**current),
        profile_at=max(state.profile_at, event.occurred_at),
        email_domain=domain,
    )


class _Step:
    """Accumulates the new state and the derived events of one step (local, never shared)."""

    def __init__(self, state: LeadState, event: Event, policy: Policy) -> None:
        self.state = state
        self.snapshot = state  # the lead just before this event: what examples may use
        self.event = event
        self.policy = policy
        self.out: list[Derived] = []
        # The step time (module doc, "Late events"): the event's time, or the lead's
        # event time now for an event older than what the lead has seen.
        self.at = max(event.occurred_at, state.watermark)

    def move(self, to: Stage, reason: str) -> StageChanged:
        s, e = self.state, self.event
        # Never before the stage it leaves was entered: time-in-stage is never negative.
        at = max(self.at, s.history[-1].entered_at) if s.history else self.at
        change = transition(
            workspace_id=s.workspace_id,
            lead_id=s.lead_id,
            sequence=s.transitions + 1,
            current=s.stage,
            to=to,
            occurred_at=at,
            reason=reason,
            cause_event_id=e.event_id,
        )
        history = (*s.history, StageStep(to, at, reason))
        if len(history) > MAX_HISTORY:
            history = (history[0], *history[-(MAX_HISTORY - 1) :])
        leaving_mql = s.stage is Stage.MQL
        self.state = evolve(
            s,
            stage=to,
            history=history,
            transitions=s.transitions + 1,
            recycled_at=at if to is Stage.RECYCLED else s.recycled_at,
            sla_due_at=None if leaving_mql else s.sla_due_at,
        )
        self.out.append(change)
        if to in (Stage.RECYCLED, Stage.DISQUALIFIED):
            self.close_episode(label=False)
        return change

    def route(self, reason: str, routing: RoutingState, *, escalate: bool = False) -> None:
        s = self.state
        if s.owner_id is not None and not escalate:
            return
        a, _ = assign(s.contact, self.policy, routing, escalate=escalate)
        self.state = evolve(s, owner_id=a.owner_id, team=a.team)
        self.out.append(
            OwnerAssigned(
                assignment_id=derived_id(s.lead_id, "owner", reason, self.event.event_id),
                workspace_id=s.workspace_id,
                lead_id=s.lead_id,
                occurred_at=self.at,
                owner_id=a.owner_id,
                team=a.team,
                pool=a.pool,
                rule=a.rule,
                cursor_after=a.cursor_after,
                previous_owner_id=s.owner_id,
                reason=reason,
                cause_event_id=self.event.event_id,
            )
        )

    def to_sql(self, reason: str, routing: RoutingState) -> None:
        change = self.move(Stage.SQL, reason)
        self.state = evolve(self.state, sql_count=self.state.sql_count + 1)
        self.route("sql", routing)
        self.out.append(build_handoff(self.state, change, self.policy))
        if self.policy.labels.conversion == "sql":
            self.close_episode(label=True)

    def close_episode(self, *, label: bool) -> None:
        """Teach the episode's one example at this event (see ``labels.close_episode``)."""
        self.state, self.snapshot, examples = close_episode(
            self.state, self.snapshot, self.event, self.policy, label=label
        )
        self.out.extend(examples)


def _to_opportunity(step: _Step, routing: RoutingState) -> None:
    # Sales is authoritative: an opportunity opened (or won) for a lead our rules never
    # qualified passes through SQL, with its hand-off, so no SQL transition goes unseen.
    if step.state.stage in _SQL_FROM:
        step.to_sql("sales_accepted", routing)
    if step.state.stage is Stage.SQL:
        step.move(Stage.OPPORTUNITY, "opportunity_opened")


def _stage_action(step: _Step, routing: RoutingState) -> None:
    """Apply a sales decision.

    Sales decisions are authoritative, so they apply from any stage where the machine
    has a path: ``accept_mql`` from lead/mql/recycled (-> SQL), ``reject_mql`` to recycled,
    ``open_opportunity`` through SQL if needed. A decision that is already reflected (an
    accept for a lead that is SQL or beyond, a reject or recycle of a recycled lead, a
    disqualify of a disqualified one) is a no-op.
    Anything else (e.g. accepting a disqualified lead) raises ``InvalidTransition``.
    """
    e = step.event
    action = e.payload.get("action")
    reason = str(e.payload.get("reason") or action)
    stage = step.state.stage
    beyond_sql = (Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER)
    if action == "accept_mql":
        if stage in _SQL_FROM:
            step.to_sql("sales_accepted", routing)
        elif stage not in beyond_sql:
            raise InvalidTransition(f"lead {e.lead_id}: accept_mql while {stage}")
    elif action == "reject_mql":
        if stage not in (Stage.RECYCLED, Stage.DISQUALIFIED):
            step.move(Stage.RECYCLED, reason)
    elif action == "open_opportunity":
        if stage not in (Stage.OPPORTUNITY,):
            _to_opportunity(step, routing)
            if step.state.stage is not Stage.OPPORTUNITY:
                raise InvalidTransition(f"lead {e.lead_id}: open_opportunity while {stage}")
    elif action == "recycle":
        if stage is not Stage.RECYCLED:
            step.move(Stage.RECYCLED, reason)
    elif action == "disqualify":
        if stage is not Stage.DISQUALIFIED:
            step.move(Stage.DISQUALIFIED, reason)
    else:
        raise InvalidEvent(f"event {e.event_id}: unknown stage_changed action {action!r}")


def _deal(step: _Step, routing: RoutingState) -> None:
    e = step.event
    stage = step.state.stage
    if e.kind is Kind.DEAL_WON:
        if stage is Stage.CUSTOMER:
            return  # another deal of a customer (expansion): nothing to transition
        _to_opportunity(step, routing)
        if step.state.stage is not Stage.OPPORTUNITY:
            raise InvalidTransition(f"lead {e.lead_id}: deal_won while {stage}")
        step.move(Stage.CUSTOMER, "deal_won")
        if step.policy.labels.conversion == "won":
            step.close_episode(label=True)
    elif stage not in (Stage.RECYCLED, Stage.DISQUALIFIED):
        step.move(Stage.RECYCLED, f"deal_lost: {e.payload.get('reason') or 'unknown'}")


def _score(step: _Step, model: ScoreModel | None) -> None:
    s, e, p = step.state, step.event, step.policy
    fit, fit_hits = fit_score(s.contact, p, domain=s.email_domain)
    eng, eng_hits = policy_engagement(s.hits, s.watermark, p)
    s = evolve(
        s,
        fit=fit,
        fit_hits=fit_hits,
        engagement=round(eng, 4),
        engagement_hits=top_rules(eng_hits, p.scoring.top_rules),
    )
    features = lead_features(s, s.watermark, p)
    # The model's fields and the next re-score (``rescheduled``, once after the window) in
    # one copy: the label window neither reads nor changes them.
    scored: dict[str, Any] = {"rescore_due_at": next_rescore(s, e.occurred_at)}
    if model is not None:
        scored.update(
            model_score=round(model.predict(features), 4),
            model_version=model.version,
            top_features=model.top_features(features),
        )
    s = evolve(s, **scored)
    # The window's snapshot is the lead at its watermark (the features above), also when
    # this event is a late one: a replayed pre-identify touch must not open a window in the
    # past whose horizon has already run out.
    s = open_window(s, features, s.watermark, p)
    step.state = s
    step.out.append(
        LeadScored(
            score_id=derived_id(s.lead_id, "score", e.event_id),
            workspace_id=s.workspace_id,
            lead_id=s.lead_id,
            occurred_at=step.at,
            fit_score=round(fit, 2),
            engagement_score=round(eng, 2),
            model_score=s.model_score,
            model_version=s.model_version,
            top_rules=top_rules((*fit_hits, *eng_hits), p.scoring.top_rules),
            cause_event_id=e.event_id,
            stage=s.stage or Stage.VISITOR,
            segments=s.segments,
        )
    )


def lead_step(
    state: LeadState | None,
    event: Event,
    policy: Policy,
    model: ScoreModel | None,
    *,
    routing: RoutingState | None = None,
    facts: PiiFacts | None = None,
    rescore: bool = False,
) -> tuple[LeadState, list[Derived]]:
    """Apply one lead-keyed event; return the new state and the derived events.

    Args:
        state: the lead's state, ``None`` for a lead never seen.
        event: an inbound event carrying ``lead_id`` (from the identity step).
        policy: the workspace policy.
        model: the current model (only read), or ``None`` to skip model scoring.
        routing: round-robin cursors; apply ``OwnerAssigned.cursor_after`` back to them.
        facts: what the caller derived from the event's opened PII while ``event`` keeps
            it sealed (``processors.pii.keep_sealed``); ``None`` when the event's PII is
            plaintext (encryption off), from which the step derives the same facts.
        rescore: score (and re-check the thresholds) even if the event adds no points:
            the facts changed otherwise (a merge, ``processors/merges.py``).

    Returns:
        The new state and the derived events (see the module doc for their order).

    Raises:
        InvalidEvent: no lead_id, a foreign workspace, or an unknown sales action.
        InvalidTransition: a sales action the stage machine does not allow.
    """
    if not event.lead_id:
        raise InvalidEvent(f"event {event.event_id} has no lead_id; run it through identity")
    if state is None:
        state = LeadState(lead_id=event.lead_id, workspace_id=event.workspace_id)
    if event.lead_id != state.lead_id or event.workspace_id != state.workspace_id:
        raise InvalidEvent(f"event {event.event_id} is not for lead {state.lead_id}")
    if state.merged_into is not None:
        raise InvalidEvent(
            f"lead {state.lead_id} merged into {state.merged_into}: "
            "its records go through processors.merges"
        )
    key = _seen_key(event.event_id)
    if key in state.seen:
        return state, []
    routing = routing or RoutingState()

    # Re-scores for decay are left to the deadline path (advance_time with a model): this
    # event scores the lead anyway when it changes anything.
    state, due = advance_time(state, event.occurred_at, policy, routing=routing, rescore=False)
    step = _Step(state, event, policy)
    step.out.extend(due)
    s = step.state
    k = event.kind

    # --- facts -------------------------------------------------------------------------
    # Gathered and applied in one ``replace``: a lead state has ~50 fields, and a copy per
    # fact (six per event) was 6 % of the worker's CPU in one process (bench.stages profile).
    watermark = max(s.watermark, event.occurred_at)
    s = _apply_profile(s, event, policy, facts)
    changed: dict[str, Any] = {"watermark": watermark}
    contact, domain, answers_now = s.contact, s.email_domain, s.answers
    if k is Kind.CONSENT_CHANGED:
        changed["tracking"] = bool(event.payload.get("tracking", True))
        changed["marketing"] = event.payload.get("marketing", s.marketing)
    elif k is Kind.ERASURE_REQUESTED:
        contact = Contact(
            seniority=contact.seniority,
            company_size=contact.company_size,
            industry=contact.industry,
            country=contact.country,
        )
        answers_now, domain = {}, None
        changed.update(contact=contact, answers=answers_now, email_domain=domain)
    elif k is Kind.ALIAS:
        prev = str(event.payload.get("previous_id") or "")
        if prev and prev not in s.aliases and prev != s.lead_id:
            changed["aliases"] = (*s.aliases, prev)[-MAX_ALIASES:]
    answers = event.payload.get("answers")
    if isinstance(answers, dict) and answers:
        changed["answers"] = merge_answers(answers_now, answers)
    if k in TOUCH_KINDS:
        t = _touch(event)
        first = s.first_touch if s.first_touch and _order(s.first_touch) <= _order(t) else t
        last = s.last_touch if s.last_touch and _order(s.last_touch) >= _order(t) else t
        changed.update(first_touch=first, last_touch=last)
    changed["summary"] = _summary(s.summary, event)
    new_hits = engagement_hits(event, policy)
    if new_hits:
        hits = _bounded_hits((*s.hits, *new_hits), watermark, policy.scoring.half_life_days)
        changed["hits"] = hits
    changed["segments"] = segments_of(contact, policy, domain=domain)
    s = evolve(s, **changed)
    step.state = s

    # --- lifecycle ---------------------------------------------------------------------
    known = s.contact.email is not None or k in _KNOWN_KINDS
    if s.stage is None:
        step.move(Stage.LEAD if known else Stage.VISITOR, "first_seen")
    elif s.stage is Stage.VISITOR and known:
        step.move(Stage.LEAD, "identified")
    if k is Kind.STAGE_CHANGED:
        _stage_action(step, routing)
    elif k in (Kind.DEAL_WON, Kind.DEAL_LOST):
        _deal(step, routing)

    scored = rescore or bool(new_hits) or k in _PROFILE_KINDS or k is Kind.ERASURE_REQUESTED
    if scored:
        _score(step, model)
    s = step.state

    signal = next(
        (
            sig
            for sig in policy.strong_signals
            if sig.kind is k
            and s.fit >= sig.min_fit
            and (sig.min_engagement is None or s.engagement >= sig.min_engagement)
        ),
        None,
    )
    if s.stage in _SQL_FROM and signal is not None:
        step.to_sql(signal.name, routing)
    elif (
        s.stage in (Stage.LEAD, Stage.RECYCLED)
        and s.fit >= policy.scoring.fit_threshold
        and s.engagement >= policy.scoring.engagement_threshold
        # A recycled lead must re-engage: old points alone do not requalify it.
        and (
            s.stage is Stage.LEAD or (bool(new_hits) and event.occurred_at >= (s.recycled_at or 0))
        )
    ):
        change = step.move(Stage.MQL, "thresholds_met")
        due_at = change.occurred_at + int(policy.sla_hours * HOUR_MS)
        step.state = evolve(
            step.state,
            mql_at=change.occurred_at,
            mql_transition_id=change.transition_id,
            sla_due_at=due_at,
            sla_breached=False,
        )
        step.route("mql", routing)
        s = step.state
        step.out.append(
            BecameMQL(
                transition_id=change.transition_id,
                workspace_id=s.workspace_id,
                lead_id=s.lead_id,
                occurred_at=change.occurred_at,
                fit_score=round(s.fit, 2),
                engagement_score=round(s.engagement, 2),
                owner_id=s.owner_id,
                sla_due_at=due_at,
                segments=s.segments,
            )
        )

    s = step.state
    ending: dict[str, Any] = {"seen": (*s.seen, key)[-MAX_SEEN:]}
    if s.stage in _NURTURE_STAGES and s.marketing is not False:
        counters, actions = nurture_step(s.nurture, event, policy, s.lead_id)
        ending["nurture"] = counters
        step.out.extend(actions)
    step.state = evolve(s, **ending)
    return step.state, _ordered(step.out)


def _reengaged(s: LeadState, event: Event, new_hits: tuple[EngagementHit, ...]) -> bool:
    return bool(new_hits) and event.occurred_at >= (s.recycled_at or 0)


def _ordered(out: list[Derived]) -> list[Derived]:
    # SLA/negative labels first (they were due before this event), then in step order,
    # except that training examples go last so consumers see the stage change first.
    examples = [d for d in out if isinstance(d, TrainingExample)]
    rest = [d for d in out if not isinstance(d, TrainingExample)]
    return rest + examples
