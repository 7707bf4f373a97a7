"""Lead merges on the lead stage: the merged lead hands over, the survivor waits and absorbs.

The identity stage decides that two lead ids are one person (``processors/identity.py``,
"Merges") and sends a :class:`MergeRequest` to each lead on ``leadflow.events.by-lead``;
both copies sort right before the event that caused the merge (``processors/ordering``).
This module is every by-lead record's entry point (:func:`lead_record_step`):

- **merged side** (the request for ``absorbed_id``): the lead freezes, becomes a redirect
  to the survivor (``merged_into``) and sends its state to the survivor as a
  :class:`LeadTransfer`, a *direct* record (lead stage to lead stage, applied on arrival).
  Events later addressed to it are forwarded to the survivor (``Direct``), and so are
  deadlines' and transfers' consequences: the id is never used again.
- **survivor side** (the request for ``survivor_id``): the survivor waits for that
  transfer (``awaiting``). **Holding**: the worker's lead stage then releases nothing more
  from the partition until the transfer has arrived (routing cursors and deadlines are
  per partition, so the whole partition's sequence stays the canonical one). That cannot
  deadlock: both copies of a merge share their cause's key, partitions release in key
  order and the merged lead's copy sorts first, so a partition only ever waits for a
  request with the same or an earlier key. A transfer that comes first is kept
  (``early``) until the request is reached. Records that reach a waiting lead anyway
  (forwarded ones, or under a worker that does not hold) are parked in its state and run,
  in order, right after the transfer.
- **absorb**: a survivor that had processed nothing yet *adopts* the merged lead (its
  stage history, owner and scores continue under the survivor's id; ``adopted_history``).
  Otherwise the survivor keeps its own stage history and owner and takes the merged
  lead's facts: every touch (first touch the earlier, last the later, counts added,
  engagement hits joined), contact fields it lacks (its own win, as PostHog keeps the
  surviving person's properties), answers, the stricter consent. Then the survivor is
  re-scored and its thresholds re-checked at the merge, as one step stamped at the
  merge's time (``lead_step(rescore=True)`` with an alias event whose id is the merge id,
  so a repeated merge is a duplicate). :class:`LeadMerged` goes first.
- **announcing**: a merged id that never had history (an email declared at login, an
  alias of an id never seen) merges silently; its redirect publishes the
  :class:`LeadMerged` the first time it forwards something (reason ``redirect``).
- **refusals** (the survivor stops waiting, nothing merges): the merged id already
  redirects elsewhere (first merge wins: two identified users are never joined through
  a shared email), or the merge would close a cycle.

**Chains**: a survivor that merged away before its merge's request is released (a form
lead merged into an id an alias absorbed earlier) finds a redirect. With
``forward_requests`` (the reference and the worker) the request is forwarded in its place
like an event and the survivor's survivor waits for the transfer, forwarded along the same
redirects and kept until then; without it (a lead stage that applies forwards on arrival)
the transfer is absorbed when it arrives.

Forwarded records (to a redirect's survivor) are applied when the lead stage gives them:
the reference (``demo/inprocess.py``, "Forwards") and the worker (``streams/stages/lead.py``)
keep a forwarded record's release key and release it in its place behind a forward
frontier (``processors/frontier.py``; docs/architecture.md, "Identity merges").
:data:`MAX_HOPS` bounds forwarding.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field

from leadflow.processors.deadlines import advance_time
from leadflow.processors.derived import (
    LeadMerged,
    LeadTransfer,
    MergeRequest,
    OwnerAssigned,
    Touch,
    derived_id,
)
from leadflow.processors.errors import InvalidEvent, LeadflowError
from leadflow.processors.events import Event, Kind, lead_key
from leadflow.processors.evolve import evolve
from leadflow.processors.lead import _bounded_hits, _seen_key, lead_step
from leadflow.processors.lead_state import (
    MAX_ALIASES,
    MAX_SEEN,
    Derived,
    LeadState,
    Parked,
    decode_lead_state,
    encode_lead_state,
)
from leadflow.processors.model import ScoreModel
from leadflow.processors.pii import PiiFacts
from leadflow.processors.policy import Policy
from leadflow.processors.qualification import merge_answers
from leadflow.processors.routing import RoutingState
from leadflow.processors.segments import segments_of

MAX_HOPS = 8
MAX_DROPPING = 200  # re-sent event ids a merged lead remembers to drop
MAX_PARKED = 1_000  # records of one lead within one lead-stage hop; more is a stuck merge

LeadRecord = Event | MergeRequest | LeadTransfer


@dataclass(frozen=True, slots=True)
class Direct:
    """A record for another lead: send it to ``leadflow.events.by-lead`` keyed by ``key``.

    A transfer is applied on arrival; an event or request a redirect forwards keeps its
    release key and waits for the forward frontier (module doc). ``hops`` goes with a
    forwarded event (a transfer carries its own).
    """

    key: str
    record: Event | LeadTransfer | MergeRequest
    hops: int = 0


@dataclass(slots=True)
class LeadOutcome:
    """What one record did to its lead: the new state, derived events, direct records.

    ``failed``: parked events that broke an invariant when their lead resumed (the
    worker dead-letters them, as it would have on arrival, naming ``Parked.offset``; the
    lead goes on).
    """

    state: LeadState | None
    derived: list[Derived] = field(default_factory=list)
    direct: list[Direct] = field(default_factory=list)
    failed: list[tuple[Parked, LeadflowError]] = field(default_factory=list)


def lead_record_step(
    state: LeadState | None,
    record: LeadRecord,
    policy: Policy,
    model: ScoreModel | None,
    *,
    routing: RoutingState | None = None,
    facts: PiiFacts | None = None,
    hops: int = 0,
    forward_requests: bool = False,
    offset: int | None = None,
) -> LeadOutcome:
    """Apply one by-lead record (event, merge request or transfer) to its lead.

    Args:
        state: the lead's state (``None`` for a lead never seen).
        record: what came off ``leadflow.events.by-lead`` for this lead.
        policy: the workspace policy.
        model: the scoring model (only read), ``None`` for rules only.
        routing: round-robin cursors (apply every ``OwnerAssigned.cursor_after``).
        facts: the event's PII facts (see ``lead_step``).
        hops: how many redirects forwarded this event already.
        forward_requests: a lead stage that releases forwarded records in their place
            (the reference, ``demo/inprocess.py``, and the worker): a survivor's request
            that finds a redirect is forwarded like an event, and a forwarded transfer waits for it
            ("Chains"). A stage that applies forwards on arrival must not (a request
            applied on arrival could hold a partition behind one waiting for it).
        offset: where the caller read ``record``; an event parked here keeps it
            (``Parked.offset``) for its dead letter should it fail when the lead resumes.

    Raises:
        InvalidEvent: a record for another lead, a forwarding loop, a stuck merge.
        InvalidTransition: a sales action the stage machine does not allow.
    """
    if isinstance(record, MergeRequest):
        if record.lead_id == record.absorbed_id:
            return _hand_over(state, record)
        if record.lead_id == record.survivor_id:
            return _expect(state, record, policy, model, routing, hops, forward_requests)
        raise InvalidEvent(f"merge {record.merge_id} is for neither of its leads")
    if isinstance(record, LeadTransfer):
        return _on_transfer(state, record, policy, model, routing, forward_requests)
    return _on_event(state, record, policy, model, routing, facts, hops, offset)


def check_lead_record_key(key: bytes | None, record: LeadRecord) -> None:
    """Insist that a by-lead record is keyed by its lead (``lead_key``), as state is.

    Example:
        >>> e = Event("e1", Kind.VISIT, "ws", 1, 1, lead_id="L")
        >>> check_lead_record_key(b'["ws","L"]', e)
        >>> check_lead_record_key(b"L", e)
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidEvent: e1: keyed 'L', not by its lead '["ws","L"]'

    Raises:
        InvalidEvent: no lead, no key, or another lead's key.
    """
    ident = record.event_id if isinstance(record, Event) else record.merge_id
    if not record.lead_id:
        raise InvalidEvent(f"{ident}: no lead_id on events.by-lead")
    expected = lead_key(record.workspace_id, record.lead_id)
    if key != expected.encode():
        got = "no key" if key is None else repr(key.decode(errors="replace"))
        raise InvalidEvent(f"{ident}: keyed {got}, not by its lead {expected!r}")


def lead_advance(
    state: LeadState,
    watermark: int,
    policy: Policy,
    *,
    routing: RoutingState | None = None,
    model: ScoreModel | None = None,
) -> LeadOutcome:
    """``advance_time`` for a lead that may be a redirect or waiting for a merge.

    A redirect has no deadlines; a waiting lead defers them to when it resumes (they fire
    at the same watermark then, after the records parked before them).
    """
    if state.merged_into is not None:
        return LeadOutcome(state)
    if state.awaiting:
        tick = watermark if state.parked_tick is None else max(state.parked_tick, watermark)
        return LeadOutcome(evolve(state, parked_tick=tick))
    new, out = advance_time(state, watermark, policy, routing=routing, model=model)
    return LeadOutcome(new, list(out))


def _on_event(
    state: LeadState | None,
    event: Event,
    policy: Policy,
    model: ScoreModel | None,
    routing: RoutingState | None,
    facts: PiiFacts | None,
    hops: int,
    offset: int | None = None,
) -> LeadOutcome:
    if state is not None and event.event_id in state.dropping:
        # The identity stage sent this record to the survivor too, in its place in the
        # order (identity.py, "In-flight records"): forwarding it would apply it twice.
        rest = tuple(i for i in state.dropping if i != event.event_id)
        return LeadOutcome(evolve(state, dropping=rest))
    if state is not None and state.merged_into is not None:
        if hops >= MAX_HOPS:
            raise InvalidEvent(
                f"event {event.event_id} forwarded {hops} times from {event.lead_id}: a merge cycle"
            )
        target = state.merged_into
        forwarded = evolve(event, lead_id=target)
        direct = [Direct(lead_key(event.workspace_id, target), forwarded, hops + 1)]
        if state.announced:
            return LeadOutcome(state, direct=direct)
        # The id merged before it had any history (an email declared at login, an alias of
        # an id never seen), so nobody announced it; now it matters: announce it once.
        notice = LeadMerged(
            merge_id=derived_id("redirect", event.workspace_id, state.lead_id, target),
            workspace_id=event.workspace_id,
            lead_id=target,
            merged_lead_id=state.lead_id,
            occurred_at=event.occurred_at,
            reason="redirect",
            cause_event_id=event.event_id,
            adopted_history=False,
            merged_lead_ids=(state.lead_id,),
        )
        return LeadOutcome(evolve(state, announced=True), [notice], direct)
    if state is not None and state.awaiting:
        if len(state.parked) >= MAX_PARKED:
            raise InvalidEvent(
                f"lead {state.lead_id} waited for merge {state.awaiting[0]} through "
                f"{MAX_PARKED} records"
            )
        return LeadOutcome(evolve(state, parked=(*state.parked, Parked(event, facts, offset))))
    new, out = lead_step(state, event, policy, model, routing=routing, facts=facts)
    return LeadOutcome(new, out)


def _hand_over(state: LeadState | None, request: MergeRequest) -> LeadOutcome:
    """The merged side: freeze, redirect, send the state (or a refusal) to the survivor."""
    base = state or LeadState(lead_id=request.absorbed_id, workspace_id=request.workspace_id)
    survivor = request.survivor_id
    refused: str | None = None
    if base.merged_into is not None and base.merged_into != survivor:
        refused = f"already merged into {base.merged_into}"
    elif survivor in base.aliases or any(w == _awaiting(survivor) for w in base.awaiting):
        refused = "a merge cycle"
    transfer = LeadTransfer(
        merge_id=request.merge_id,
        workspace_id=request.workspace_id,
        lead_id=survivor,
        absorbed_id=request.absorbed_id,
        occurred_at=request.occurred_at,
        reason=request.reason,
        cause_event_id=request.cause_event_id,
        state="" if refused else _content(base),
        refused=refused,
        resent=request.resent if refused else (),
    )
    to_survivor = lead_key(request.workspace_id, survivor)
    direct = [Direct(to_survivor, transfer)]
    if request.resent and refused is None:
        # The identity stage sent these records to the survivor in their place in the
        # order: this lead must not forward them (a refusal lets the survivor drop them).
        base = _drop(base, request.resent)
        if base.merged_into is not None:
            return LeadOutcome(base, direct=direct)
    if refused is not None or base.merged_into is not None:
        return LeadOutcome(state, direct=direct)  # a refusal or a repeated request
    # What this lead held while waiting goes on to the survivor, in order: its parked
    # events and the transfers that came before their request (they would be lost here).
    for parked in base.parked:
        direct.append(Direct(to_survivor, evolve(parked.event, lead_id=survivor), 1))
    for early in base.early:
        direct.append(Direct(to_survivor, evolve(early, lead_id=survivor, hops=1)))
    frozen = evolve(
        base,
        merged_into=survivor,
        awaiting=(),
        parked=(),
        parked_tick=None,
        early=(),
        announced=bool(transfer.state),  # the survivor announces a merge with history
    )
    return LeadOutcome(frozen, direct=direct)


def _drop(state: LeadState, ids: tuple[str, ...]) -> LeadState:
    dropping = tuple(dict.fromkeys((*state.dropping, *ids)))[-MAX_DROPPING:]
    return evolve(state, dropping=dropping)


def _awaiting(absorbed_id: str) -> str:
    return f"from:{absorbed_id}"


def _expect(
    state: LeadState | None,
    request: MergeRequest,
    policy: Policy,
    model: ScoreModel | None,
    routing: RoutingState | None,
    hops: int = 0,
    forward_requests: bool = False,
) -> LeadOutcome:
    """The survivor side: wait for the transfer (or absorb one that came first)."""
    base = state or LeadState(lead_id=request.survivor_id, workspace_id=request.workspace_id)
    target = base.merged_into
    if forward_requests and target is not None and target != request.absorbed_id:
        # Chains: this lead merged away before its merge's request came; its survivor takes
        # the merge in its place, and the transfer, forwarded there too, waits for it.
        if hops >= MAX_HOPS:
            raise InvalidEvent(f"merge {request.merge_id} forwarded {hops} times")
        onward = evolve(request, lead_id=target, survivor_id=target)
        return LeadOutcome(
            state, direct=[Direct(lead_key(request.workspace_id, target), onward, hops + 1)]
        )
    if base.merged_into is not None or _seen_key(request.merge_id) in base.seen:
        return LeadOutcome(state)  # merged away itself (the transfer follows it), or done
    early = next((t for t in base.early if t.merge_id == request.merge_id), None)
    if early is not None:
        rest = tuple(t for t in base.early if t is not early)
        return _absorb(evolve(base, early=rest), early, policy, model, routing)
    waiting = (*base.awaiting, request.merge_id, _awaiting(request.absorbed_id))
    return LeadOutcome(evolve(base, awaiting=waiting))


def _on_transfer(
    state: LeadState | None,
    transfer: LeadTransfer,
    policy: Policy,
    model: ScoreModel | None,
    routing: RoutingState | None,
    forward_requests: bool = False,
) -> LeadOutcome:
    base = state or LeadState(lead_id=transfer.lead_id, workspace_id=transfer.workspace_id)
    if base.merged_into is not None:
        if transfer.hops >= MAX_HOPS:
            raise InvalidEvent(f"transfer {transfer.merge_id} forwarded {transfer.hops} times")
        onward = evolve(transfer, lead_id=base.merged_into, hops=transfer.hops + 1)
        return LeadOutcome(
            state, direct=[Direct(lead_key(transfer.workspace_id, base.merged_into), onward)]
        )
    if _seen_key(transfer.merge_id) in base.seen:
        return LeadOutcome(state)  # applied already (a repeated request's answer)
    if transfer.merge_id in base.awaiting:
        at = base.awaiting.index(transfer.merge_id)
        rest = base.awaiting[:at] + base.awaiting[at + 2 :]
        return _absorb(evolve(base, awaiting=rest), transfer, policy, model, routing)
    if transfer.hops == 0 or (forward_requests and transfer.absorbed_id != base.lead_id):
        # The survivor's copy of the request has not been released here yet: keep it
        # (forwarded along the same redirects when requests are forwarded, "Chains", unless
        # the chain leads back to the merged lead itself: a cycle, refused, nothing waits).
        return LeadOutcome(evolve(base, early=(*base.early, transfer)))
    # Forwarded through a redirect: nobody waits for it here; merge it now (late rule).
    return _absorb(base, transfer, policy, model, routing)


def _absorb(
    base: LeadState,
    transfer: LeadTransfer,
    policy: Policy,
    model: ScoreModel | None,
    routing: RoutingState | None,
) -> LeadOutcome:
    """Merge the transferred state into ``base``, then run what was parked if done waiting."""
    if transfer.refused is not None and transfer.resent:
        base = _drop(base, transfer.resent)  # the refusing lead forwards its own copies
    out = LeadOutcome(base)
    if transfer.refused is None and not transfer.state:
        # The merged id was never seen: nothing to merge or announce (its redirect announces
        # itself if it is ever used); the survivor remembers the alias and the merge.
        aliases = tuple(dict.fromkeys((*base.aliases, transfer.absorbed_id)))[-MAX_ALIASES:]
        seen = (*base.seen, _seen_key(transfer.merge_id))[-MAX_SEEN:]
        out = LeadOutcome(evolve(base, aliases=aliases, seen=seen))
    elif transfer.refused is None:
        merged = decode_lead_state(base64.b64decode(transfer.state))
        adopted = base.transitions == 0 and not base.seen
        combined = _adopt(base, merged) if adopted else _combine(base, merged, policy)
        cause = Event(
            event_id=transfer.merge_id,
            kind=Kind.ALIAS,
            workspace_id=base.workspace_id,
            occurred_at=transfer.occurred_at,
            received_at=transfer.occurred_at,
            lead_id=base.lead_id,
            payload={"previous_id": transfer.absorbed_id},
        )
        new, derived = lead_step(combined, cause, policy, model, routing=routing, rescore=True)
        notice = LeadMerged(
            merge_id=transfer.merge_id,
            workspace_id=base.workspace_id,
            lead_id=base.lead_id,
            merged_lead_id=transfer.absorbed_id,
            occurred_at=max(transfer.occurred_at, combined.watermark),
            reason=transfer.reason,
            cause_event_id=transfer.cause_event_id,
            adopted_history=adopted,
            merged_lead_ids=(transfer.absorbed_id, *merged.aliases),
        )
        out = LeadOutcome(new, [notice, *derived])
    if out.state is not None and not out.state.awaiting:
        _resume(out, policy, model, _moved(routing or RoutingState(), out.derived))
    return out


def _resume(
    out: LeadOutcome, policy: Policy, model: ScoreModel | None, cursors: RoutingState
) -> None:
    """Run the records parked while waiting, in their order, then the deferred deadline."""
    state = out.state
    assert state is not None
    parked, tick = state.parked, state.parked_tick
    state = evolve(state, parked=(), parked_tick=None)
    for item in parked:
        try:
            step = _on_event(state, item.event, policy, model, cursors, item.facts, 0)
        except LeadflowError as exc:
            out.failed.append((item, exc))  # as on arrival: dead letter, lead goes on
            continue
        state = step.state or state
        out.derived.extend(step.derived)
        out.direct.extend(step.direct)
        cursors = _moved(cursors, step.derived)
    if tick is not None:
        state, due = advance_time(state, tick, policy, routing=cursors, model=model)
        out.derived.extend(due)
    out.state = state


def _moved(routing: RoutingState, derived: list[Derived]) -> RoutingState:
    """The cursors after the owner assignments of one step (what the worker stores)."""
    cursors = dict(routing.cursors)
    for obj in derived:
        if isinstance(obj, OwnerAssigned):
            cursors[obj.pool] = obj.cursor_after
    return RoutingState(cursors=cursors)


def _content(state: LeadState) -> str:
    """What a merged lead hands over: its facts and history, without merge bookkeeping."""
    if state.transitions == 0 and not state.seen:
        return ""
    plain = evolve(state, awaiting=(), parked=(), parked_tick=None, early=(), dropping=())
    return base64.b64encode(encode_lead_state(plain)).decode()


def _adopt(base: LeadState, merged: LeadState) -> LeadState:
    """A survivor that had nothing takes the merged lead over, under its own id."""
    return evolve(
        merged,
        lead_id=base.lead_id,
        merged_into=None,
        awaiting=base.awaiting,
        parked=base.parked,
        parked_tick=base.parked_tick,
        early=base.early,
        dropping=base.dropping,
    )


def _earlier(a: Touch | None, b: Touch | None) -> Touch | None:
    if a is None or b is None:
        return a or b
    return min(a, b, key=lambda t: (t.occurred_at, t.event_id))


def _later(a: Touch | None, b: Touch | None) -> Touch | None:
    if a is None or b is None:
        return a or b
    return max(a, b, key=lambda t: (t.occurred_at, t.event_id))


def _combine(s: LeadState, m: LeadState, policy: Policy) -> LeadState:
    """The survivor ``s`` with the merged lead ``m``'s facts (its own history stays)."""
    mine = dataclasses.asdict(s.contact)
    contact = evolve(
        s.contact,
        **{k: v for k, v in dataclasses.asdict(m.contact).items() if mine.get(k) is None},
    )
    a, b = s.summary, m.summary
    last = [x for x in (a.last_activity_at, b.last_activity_at) if x is not None]
    summary = evolve(
        a,
        visits=a.visits + b.visits,
        pricing_views=a.pricing_views + b.pricing_views,
        content_downloads=a.content_downloads + b.content_downloads,
        emails_opened=a.emails_opened + b.emails_opened,
        emails_clicked=a.emails_clicked + b.emails_clicked,
        webinars_attended=a.webinars_attended + b.webinars_attended,
        demo_requested=a.demo_requested or b.demo_requested,
        last_activity_at=max(last) if last else None,
    )
    watermark = max(s.watermark, m.watermark)
    hits = tuple(sorted((*s.hits, *m.hits), key=lambda h: (h.occurred_at, h.rule)))
    aliases = tuple(dict.fromkeys((*s.aliases, m.lead_id, *m.aliases)))[-MAX_ALIASES:]
    seen = tuple(dict.fromkeys((*m.seen, *s.seen)))[-MAX_SEEN:]
    nurture = {k: max(s.nurture.get(k, 0), m.nurture.get(k, 0)) for k in {*s.nurture, *m.nurture}}
    domain = s.email_domain if s.contact.email is not None else m.email_domain
    marketing = False if False in (s.marketing, m.marketing) else s.marketing or m.marketing
    return evolve(
        s,
        contact=contact,
        profile_at=max(s.profile_at, m.profile_at),
        tracking=s.tracking and m.tracking,
        marketing=marketing,
        hits=_bounded_hits(hits, watermark, policy.scoring.half_life_days),
        first_touch=_earlier(s.first_touch, m.first_touch),
        last_touch=_later(s.last_touch, m.last_touch),
        summary=summary,
        answers=merge_answers(m.answers, s.answers),
        segments=segments_of(contact, policy, domain=domain),
        nurture=dict(sorted(nurture.items())),
        aliases=aliases,
        watermark=watermark,
        seen=seen,
        email_domain=domain,
    )
